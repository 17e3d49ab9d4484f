"""A raw ASGI harness: drive an app in the test's own event loop, with full control of receive/send.

The Litestar test clients run the app on a portal thread; these helpers run it in the test task, so a
test can cancel a request mid-handler, disconnect a client, break the connection while the body
streams, and then look at the engines' pools in the same loop.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from litestar import Litestar


def _scope(kind: str, method: str | None, path: str) -> dict[str, Any]:
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        **({"method": method} if method else {}),  # websocket scopes have none
        "scheme": "http" if kind == "http" else "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }


@dataclass
class Exchange:
    """What one HTTP exchange sent, as the client would have seen it."""

    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.messages if m["type"] == "http.response.start"), None)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")

    def json(self) -> Any:
        return json.loads(self.body)


async def http(
    app: Litestar,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    on_send: Callable[[dict[str, Any]], None] | None = None,
    disconnect: asyncio.Event | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> Exchange:
    """Run one HTTP request through ``app``.

    ``on_send`` sees every message first and may raise (a broken connection). After ``disconnect`` is
    set, ``receive`` reports ``http.disconnect`` (a client that went away); like a real server, it also
    does once the response is complete. ``headers`` are added to the request's.
    """
    exchange = Exchange()
    request_sent = False
    gone = disconnect or asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if on_send is not None:
            on_send(message)
        exchange.messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            gone.set()

    scope = _scope("http", method, path)
    scope["headers"] = [*scope["headers"], *headers]
    await app(scope, receive, send)  # type: ignore[arg-type]
    return exchange


async def websocket(app: Litestar, path: str, incoming: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one websocket connection: ``websocket.connect`` first, then whatever the test puts in ``incoming``
    (put ``{"type": "websocket.disconnect", "code": 1000}`` for a client that closes). Returns what was sent.
    """
    sent: list[dict[str, Any]] = []
    connected = False

    async def receive() -> dict[str, Any]:
        nonlocal connected
        if not connected:
            connected = True
            return {"type": "websocket.connect"}
        return await incoming.get()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(_scope("websocket", None, path), receive, send)  # type: ignore[arg-type]
    return sent
