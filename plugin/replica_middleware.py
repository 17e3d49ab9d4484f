"""The transaction middleware of apps with replicas: the same, plus each request's replica routing.

Used instead of :class:`~plugin.middleware.TransactionMiddleware` only when some bind has replicas (decided
when the app is built), on the same routes. For each HTTP request it makes a
:class:`~plugin.replicas.ReplicaRouting`, shared by every session the request is given: reads may go to
replicas when the method is safe (GET, HEAD, OPTIONS), binds named in a valid sticky cookie stay on the
primary, and when the response starts (after the commit), a request that wrote on a bind with
``sticky_seconds`` gets the cookie (:mod:`plugin.sticky`). Websockets use the primary for everything.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from litestar.enums import ScopeType

from plugin.middleware import TransactionMiddleware
from plugin.replica_sessions import request_routing

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from plugin.middleware import InFlight
    from plugin.policy import TransactionPolicy
    from plugin.replicas import Replicas
    from plugin.sticky import StickyCookie

__all__ = ("SAFE_METHODS", "ReplicaMiddleware")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Requests with these methods read from replicas (until they write)."""


class ReplicaMiddleware(TransactionMiddleware):
    """:class:`~plugin.middleware.TransactionMiddleware` plus the request's replica routing (module docs)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        policy: TransactionPolicy,
        in_flight: InFlight,
        replicas: Replicas,
        cookie: StickyCookie | None,
    ) -> None:
        super().__init__(app, policy=policy, in_flight=in_flight)
        self.replicas = replicas
        self.cookie = cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        http = scope["type"] == ScopeType.HTTP
        cookie, sticky_binds = self.cookie, self.replicas.sticky
        still: dict[str, float] = {}
        if cookie is not None and http:
            now = time.time()
            still = {key: until for key, until in cookie.read(scope["headers"], now).items() if key in sticky_binds}
        read = http and scope.get("method") in SAFE_METHODS
        routing = self.replicas.routing(read=read, pinned=set(still))
        token = request_routing.set(routing)
        try:
            if cookie is None or not http:
                await super().__call__(scope, receive, send)
                return

            async def send_with_cookie(message: Message) -> None:
                if message["type"] == "http.response.start" and (wrote := routing.wrote & sticky_binds.keys()):
                    now = time.time()
                    until = {**still, **{key: now + sticky_binds[key] for key in wrote}}
                    header = cookie.header(until, now, secure=scope.get("scheme") == "https")
                    message = {**message, "headers": [*message.get("headers", ()), header]}
                await send(message)

            await super().__call__(scope, receive, send_with_cookie)
        finally:
            request_routing.reset(token)
