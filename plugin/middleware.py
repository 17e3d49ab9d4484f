"""Per-request transactions: commit before the response starts, close in every path.

The middleware gives each HTTP or websocket connection a :class:`RequestSessions`, reachable through a
context variable for the length of the connection; the session providers put the sessions they hand out
there. (A context variable rather than the scope: a provider that asks Litestar for ``scope`` costs more
than everything else the plugin does for a request that never uses its session.) Nothing else happens
unless a session was actually used.

HTTP: when ``http.response.start`` arrives, the status in it is final (every ``after_request`` hook and
exception handler has run), so the policy decides there, and the commit happens before the message is
passed on. If the commit fails, the original response is dropped and the error goes through the route's
exception handlers instead, so the client never sees a 2xx for a lost write; the handler's response stops
there (:class:`ResponseReplaced`): neither its body, nor its ``background`` task, nor the route's
``after_response`` hook run, as when the handler itself raises. Between a commit of async
sessions and the response, a request gives way to the event loop while another request is in flight
(:func:`give_way`). Sessions are closed in the ``finally`` of the middleware, after the body was sent: a
streaming body may still use them, and a cancelled or disconnected request is cleaned up too. Websockets
commit when the handler returns normally and roll back when it raised.
"""

from __future__ import annotations

import asyncio
import logging
import types
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.exceptions.responses import create_exception_response

from plugin._litestar import keep_out_of_response_cache
from plugin.exceptions import CommitConflictError, quote_keys
from plugin.sessions import is_started, mark_settled
from plugin.transactions import SUCCESS_STATUS, close_all, close_idle, settle_all, settles_on_the_loop

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator

    from litestar import Request, Response
    from litestar.types import ASGIApp, ExceptionHandlersMap, HTTPResponseStartEvent, Message, Receive, Scope, Send
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from plugin.transactions import TransactionPolicy

__all__ = (
    "GIVE_WAY_TURNS",
    "InFlight",
    "RequestSessions",
    "ResponseReplaced",
    "TransactionMiddleware",
    "current_request_sessions",
    "give_way",
    "mark_raised",
)

logger = logging.getLogger("plugin.transactions")

_current: ContextVar[RequestSessions | None] = ContextVar("sqlalchemy_plugin_request_sessions", default=None)


class RequestSessions:
    """The sessions one connection was given, whether its handler raised, and its settling ``send``.

    One object per connection: calling it is the ``send`` the route gets. It is a plain method returning
    the next ``send``'s awaitable rather than a coroutine of its own, so a message that needs nothing from
    the plugin costs one call, not one more coroutine. (With the session factory's un-copied options, a
    declared but unused session went from 0.87x to 0.91x a plain yield dependency per CPU second;
    docs/benchmarks.md, handler a.)
    """

    __slots__ = ("in_flight", "policy", "raised", "receive", "replaced", "scope", "send", "sessions")

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, policy: TransactionPolicy, in_flight: InFlight
    ) -> None:
        self.sessions: list[AsyncSession | Session] = []
        self.raised = False
        self.replaced = False
        """Set when a failed commit replaced the response: sending the original one raises from then on."""
        self.scope = scope
        self.receive = receive
        self.send = send
        self.policy = policy
        self.in_flight = in_flight

    def release(self) -> None:
        """Let go of the connection's objects once it is done with.

        A copy of the request's context can outlive it, and this object with it: uvicorn arms its
        keep-alive timer from inside the ``send`` of the last message, and the timer keeps the context it
        was armed in until the loop drops the cancelled timer, long after. Holding the connection's
        ``send`` (and with it uvicorn's whole request cycle) kept every request's objects alive that long:
        about 40 allocations a request the garbage collector counts and never sees freed one by one, so a
        young collection every dozen requests and a full one, 40-80 ms, every few thousand
        (docs/benchmarks.md).
        """
        self.sessions.clear()
        del self.scope, self.receive, self.send

    def __call__(self, message: Message) -> Awaitable[None]:
        if self.replaced:
            raise ResponseReplaced
        sessions = self.sessions
        if sessions and message["type"] == "http.response.start":
            for session in sessions:
                if is_started(session):
                    return self._settle_then_send(message)
            for session in sessions:  # declared, never used: nothing to settle, but later use must raise
                mark_settled(session)
        return self.send(message)

    async def _settle_then_send(self, message: HTTPResponseStartEvent) -> None:
        commit = not self.raised and self.policy.should_commit(message["status"])
        yielding = commit and settles_on_the_loop(self.sessions)  # asked now: the settle ends the transactions
        committed, error = await settle_all(self.sessions, commit, alone=self.in_flight.requests < 2)
        if error is not None:
            self.replaced = True
            keep_out_of_response_cache(self.scope)  # the dropped response must not be served to the next client
            await send_exception_response(self.scope, self.receive, self.send, error)
            raise ResponseReplaced
        try:
            if yielding:
                await give_way(self.in_flight)
            await self.send(message)
        except asyncio.CancelledError:
            if committed:  # the client may never see the response of a write that is committed: say so
                logger.warning(
                    "the task was cancelled while its response was starting, after its transaction committed: %s",
                    quote_keys(committed),
                )
            raise


GIVE_WAY_TURNS = 3
"""Turns of the event loop a request lets pass between its settle and its response (:func:`give_way`)."""


class InFlight:
    """How many HTTP requests that can use a session an app is serving now (open websockets are not counted):
    what decides whether a request gives way (:func:`give_way`). One per app, shared by every route's
    transaction middleware."""

    __slots__ = ("requests",)

    def __init__(self) -> None:
        self.requests = 0


async def give_way(in_flight: InFlight) -> None:
    """Let the event loop run :data:`GIVE_WAY_TURNS` times while another request is ``in_flight``: what a
    request does between a commit of async sessions and its response. Alone in flight, nothing is waiting
    for the turns.

    Its connections are back in their pools by then. Leaving ``async with session`` after ``await
    session.commit()`` in SQLAlchemy 2.1 gives way the same three turns (the close runs in a task of its
    own, awaited through a shield); without this, the request would go on to its response before anything
    else ran. Under an asyncio server with fewer pooled connections than requests in flight, giving way
    keeps requests from moving in step: without it, about eight started within 2 ms and ended together,
    the garbage collector's young collections ran every dozen requests, and a full one (60-90 ms) every
    few thousand was the p99. Measured under uvicorn (pools of 5 + 5, docs/benchmarks.md):

    - primary-key reads at concurrency 16 ran 194-245 young and 1-2 full collections per 3 s without it,
      38-42 and none with it; in one run against the same plugin without it, their p99 was 0.46x at 16
      and 0.58x at 64, their throughput 0.92x at 16 and 0.98x at 64. One or two turns left most of the
      collections;
    - inserts gain only together with the flush in the request's own task
      (:func:`~plugin.transactions.settle_all`): 69-84 young collections at 16 with both, 226-245 with the
      flush alone, 158-172 with giving way alone. A write's settle runs in a task of its own, which wakes
      the request a turn after it ended; giving way two turns after it instead of three (three in all, as
      for a read) cost requests writing to two binds at 64 their p99: 1.27x and 1.29x the hand-written
      dependency's in two runs, against 0.98x and 0.98x with three.

    On an idle loop each turn is a full poll of the selector: the three cost a primary-key read served one at
    a time about 65,000 of its 1.7 million instructions (callgrind), which is why a request alone in flight
    does not give way. A sync session settles in a worker thread and its pool does not queue tasks: a
    request with one does not give way either.
    """
    if in_flight.requests > 1:
        await _turns(GIVE_WAY_TURNS)


@types.coroutine
def _turns(n: int) -> Generator[None, None, None]:
    """``n`` turns of the event loop: a bare ``yield`` is what ``asyncio.sleep(0)`` does, here ``n`` of them in
    one frame. ``give_way`` and this cost a read 50 bytecodes under concurrency; with three ``sleep(0)`` calls
    it was 121 (``bench.opcodes --concurrency 16``)."""
    for _ in range(n):
        yield


class ResponseReplaced(Exception):
    """Raised into the handler's response by its ``send`` once a failed commit replaced it with the error
    response: it stops that response where it is, before its body, its ``background`` task and the route's
    ``after_response`` hook (a "welcome" email for a write that was rolled back). The middleware catches it;
    handler middleware sees it pass inside Litestar's "Exception caught after response started"."""


def _replaced_by_the_plugin(exc: BaseException | None) -> bool:
    """Whether ``exc`` is :class:`ResponseReplaced`, or an error it caused on its way out (Litestar's
    "Exception caught after response started"; the exception group of a streamed body's task group, when
    compression held the start back until the first chunk). A group is only when every error in it is:
    another error beside it is re-raised with it."""
    while exc is not None:
        if isinstance(exc, ResponseReplaced):
            return True
        if isinstance(group := getattr(exc, "exceptions", None), tuple):  # an exception group (3.10: a backport)
            return bool(group) and all(_replaced_by_the_plugin(inner) for inner in group)
        exc = exc.__cause__
    return False


current_request_sessions: Callable[[], RequestSessions | None] = _current.get
"""The sessions of the connection being handled, or None outside the middleware (the context variable's
own ``get``: the session providers call it on every request)."""


async def mark_raised(exc: BaseException, scope: Scope) -> None:
    """``after_exception`` hook: a handler (or a later step) raised, so the request must roll back."""
    if (request_sessions := _current.get()) is not None:
        request_sessions.raised = True


def conflict_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Exception handler: an ``IntegrityError`` raised by a handler is a 409, like a failed commit."""
    return create_exception_response(request, CommitConflictError(f"integrity error in a handler: {exc}"))


def _exception_handler(handlers: ExceptionHandlersMap, exc: Exception) -> Any:
    """Litestar's own lookup order: status code (for HTTP exceptions), then the exception's MRO."""
    if isinstance(exc, HTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    return next((handlers[cls] for cls in type(exc).__mro__ if cls in handlers), None)


async def send_exception_response(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """Send the response the app's exception handling gives ``exc`` for this route."""
    app = scope["litestar_app"]
    for hook in app.after_exception:
        await hook(exc, scope)
    route_handler = scope.get("route_handler")
    handlers = route_handler.resolve_exception_handlers() if route_handler else app.exception_handlers
    request = app.request_class(scope=scope, receive=receive, send=send)
    handler = _exception_handler(handlers, exc)
    response = handler(request, exc) if handler else create_exception_response(request, exc)
    encoders = route_handler.resolve_type_encoders() if route_handler else app.type_encoders
    await response.to_asgi_response(app=None, request=request, type_encoders=encoders)(scope, receive, send)


class TransactionMiddleware:
    """ASGI middleware that settles and closes each connection's sessions (see the module docs)."""

    def __init__(self, app: ASGIApp, *, policy: TransactionPolicy, in_flight: InFlight) -> None:
        self.app = app
        self.policy = policy
        self.in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Litestar builds app middleware into each route's stack: only http and websocket scopes come here.
        in_flight = self.in_flight
        request_sessions = RequestSessions(scope, receive, send, self.policy, in_flight)
        token = _current.set(request_sessions)
        sessions = request_sessions.sessions
        websocket = scope["type"] == ScopeType.WEBSOCKET
        if not websocket:  # an open websocket waits on its client, not for a turn: every request would give way
            in_flight.requests += 1
        try:
            if websocket:
                await self.app(scope, receive, send)
                if sessions:
                    commit = not request_sessions.raised and self.policy.should_commit(SUCCESS_STATUS)
                    # A failed commit is logged by settle(); a closed socket has no response to turn into an error.
                    await settle_all(sessions, commit)
                return
            try:
                await self.app(scope, receive, request_sessions)
            except Exception as exc:
                if not (request_sessions.replaced and _replaced_by_the_plugin(exc)):
                    raise
        finally:
            if not websocket:
                in_flight.requests -= 1
            _current.reset(token)
            try:
                if sessions and (holding := close_idle(sessions)):
                    await close_all(holding)
            finally:
                request_sessions.release()
