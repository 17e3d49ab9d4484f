"""The transaction middleware lets go of a connection's objects when the connection is done.

uvicorn arms its keep-alive timer from inside the ``send`` of a response's last message, and the timer keeps
the context it was armed in (the middleware's context variable included) until the event loop drops it,
long after the request. Whatever the middleware's per-connection object still holds then stays alive that
long: under uvicorn that held every request's objects, and the garbage collector ran a full collection
(40-80 ms) every few thousand requests (docs/benchmarks.md).
"""

from __future__ import annotations

import contextvars
import weakref
from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, get
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from plugin import SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from tests.plugin.orders import Base, Order

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


@get("/unused")
async def unused(db_session: NamedDependency[AsyncSession]) -> None:
    return None


@get("/read")
async def read(db_session: NamedDependency[AsyncSession]) -> int:
    return len((await db_session.scalars(Order.__table__.select())).all())


class ServerConnection:
    """What a server keeps for one request (uvicorn's request cycle): the ``receive`` and ``send`` it hands
    the app. Its ``send`` captures the context of the last message, as arming uvicorn's timer does."""

    def __init__(self, armed: list[contextvars.Context]) -> None:
        self.armed = armed
        self.status: int | None = None

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.armed.append(contextvars.copy_context())


@pytest.mark.parametrize("path", ["/unused", "/read"])
async def test_a_context_captured_while_the_response_is_sent_does_not_keep_the_request_alive(
    path: str, tmp_path: Path
) -> None:
    binds = {key: f"sqlite+aiosqlite:///{tmp_path}/{key}.db" for key in ("default", "logs")}
    config = SQLAlchemyAsyncConfig(binds=binds, base=Base, create_all=True)
    app = Litestar(route_handlers=[unused, read], plugins=[SQLAlchemyPlugin(config=config)], logging_config=None)
    armed: list[contextvars.Context] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": [],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": {},
    }  # fmt: skip
    async with app.lifespan():
        connection = ServerConnection(armed)
        await app(scope, connection.receive, connection.send)  # type: ignore[arg-type]
        assert connection.status == 200
        gone = weakref.ref(connection)
        del connection

        assert len(armed) == 1  # the captured context is still alive ...
        assert gone() is None  # ... and holds nothing of the request's connection: freed at once, no collection
