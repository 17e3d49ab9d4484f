"""No path leaks a connection: after every request, each pool reports zero checked-out connections.

These tests drive the app through raw ASGI in the test's own event loop (see ``tests/plugin/asgi.py``)
so they can cancel a request mid-handler, disconnect the client, break the connection while a body
streams, and close websockets from either side.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, Request, WebSocket, get, post, websocket
from litestar.di import NamedDependency
from litestar.exceptions import LitestarException
from litestar.params import FromPath
from litestar.response import Stream
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.databases import KINDS
from tests.plugin import asgi
from tests.plugin.models import Account, AuditEntry, make_plugin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from plugin import SQLAlchemyPlugin
    from tests.databases import Database

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("kind", KINDS[:2])]


class ClientGone(Exception):
    pass


@post("/hang/{name:str}")
async def hang(name: FromPath[str], request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add_all([Account(name=name), AuditEntry(message=name)])
    await db_session.flush()  # both binds now hold a checked-out connection
    request.app.state.entered.set()
    await asyncio.sleep(3600)


@post("/until-disconnect/{name:str}")
async def until_disconnect(
    name: FromPath[str], request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> None:
    db_session.add(Account(name=name))
    await db_session.flush()
    while (await request.receive())["type"] != "http.disconnect":
        pass
    raise ClientGone


@post("/ok/{name:str}")
async def ok(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add_all([Account(name=name), AuditEntry(message=name)])


@post("/fails/{name:str}")
async def fails(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add_all([Account(name=name), AuditEntry(message=name)])
    await db_session.flush()
    raise RuntimeError("handler failed")


@get("/stream")
async def stream(db_session: NamedDependency[AsyncSession]) -> Stream:
    async def rows() -> AsyncIterator[bytes]:
        for n in range(3):  # the body itself runs queries, after the response has started
            count = await db_session.scalar(select(func.count()).select_from(Account))
            yield f"{n}:{count}\n".encode()

    return Stream(rows())


@websocket("/ws/{name:str}")
async def ws(name: FromPath[str], socket: WebSocket[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> None:
    await socket.accept()
    db_session.add(Account(name=name))
    await db_session.flush()
    await socket.send_text("saved")
    if await socket.receive_text() == "close":  # a client that closes raises WebSocketDisconnect here instead
        await socket.close()


HANDLERS = [hang, until_disconnect, ok, fails, stream, ws]


def caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is behind ``exc``: Litestar wraps errors after the response started, and a streaming
    body's errors come out of an anyio task group."""
    if exc is None:
        return False
    if isinstance(exc, kind):
        return True
    return caused_by(exc.__cause__, kind) or any(caused_by(e, kind) for e in getattr(exc, "exceptions", ()))


def checked_out(plugin: SQLAlchemyPlugin[Any]) -> dict[str, int]:
    return {key: plugin.engines.sync_engine(key).pool.checkedout() for key in plugin.router.keys}


def names(db: Database) -> list[str]:
    return [name for (name,) in db.fetch("select name from accounts order by name")]


@pytest.fixture
def setup(kind: str, new_db: Callable[[str], Database]) -> tuple[Litestar, SQLAlchemyPlugin[Any], Database]:
    db = new_db(kind)
    plugin = make_plugin({"default": db, "logs": new_db(kind)})
    return Litestar(route_handlers=HANDLERS, plugins=[plugin]), plugin, db


async def test_cancelled_before_the_response_starts(setup: tuple[Litestar, SQLAlchemyPlugin[Any], Database]) -> None:
    app, plugin, db = setup
    async with app.lifespan():
        app.state.entered = asyncio.Event()
        sent: list[dict[str, Any]] = []
        task = asyncio.create_task(asgi.http(app, "POST", "/hang/cancelled", on_send=sent.append))
        await app.state.entered.wait()
        assert checked_out(plugin) == {"default": 1, "logs": 1}
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        assert sent == []  # no response ever started
        assert checked_out(plugin) == {"default": 0, "logs": 0}
    assert names(db) == []


async def test_client_disconnects_mid_request(setup: tuple[Litestar, SQLAlchemyPlugin[Any], Database]) -> None:
    app, plugin, db = setup
    async with app.lifespan():
        gone = asyncio.Event()
        gone.set()  # the client is already gone when the handler looks
        exchange = await asgi.http(app, "POST", "/until-disconnect/abandoned", disconnect=gone)
        assert exchange.status == 500
        assert checked_out(plugin) == {"default": 0, "logs": 0}
    assert names(db) == []


async def test_connection_breaks_when_the_response_starts(
    setup: tuple[Litestar, SQLAlchemyPlugin[Any], Database],
) -> None:
    app, plugin, db = setup

    def broken_pipe(message: dict[str, Any]) -> None:
        raise ConnectionResetError("client went away")

    async with app.lifespan():
        with pytest.raises(LitestarException) as raised:  # "Exception caught after response started"
            await asgi.http(app, "POST", "/ok/committed-then-lost", on_send=broken_pipe)
        assert caused_by(raised.value, ConnectionResetError)
        assert checked_out(plugin) == {"default": 0, "logs": 0}
    # The commit precedes http.response.start by design, so this write is kept although the client saw nothing.
    assert names(db) == ["committed-then-lost"]


async def test_commit_failure_and_handler_error(setup: tuple[Litestar, SQLAlchemyPlugin[Any], Database]) -> None:
    app, plugin, db = setup
    async with app.lifespan():
        assert (await asgi.http(app, "POST", "/ok/ada")).status == 201
        assert (await asgi.http(app, "POST", "/ok/ada")).status == 409
        assert checked_out(plugin) == {"default": 0, "logs": 0}
        assert (await asgi.http(app, "POST", "/fails/bob")).status == 500
        assert checked_out(plugin) == {"default": 0, "logs": 0}
    assert names(db) == ["ada"]


async def test_streaming_body_that_uses_the_session(setup: tuple[Litestar, SQLAlchemyPlugin[Any], Database]) -> None:
    app, plugin, _ = setup
    async with app.lifespan():
        await asgi.http(app, "POST", "/ok/ada")
        exchange = await asgi.http(app, "GET", "/stream")
        assert (exchange.status, exchange.body) == (200, b"0:1\n1:1\n2:1\n")
        assert checked_out(plugin) == {"default": 0, "logs": 0}

        chunks = 0

        def breaks_after_first_chunk(message: dict[str, Any]) -> None:
            nonlocal chunks
            if message["type"] == "http.response.body" and message.get("body"):
                chunks += 1
                if chunks == 2:
                    raise ConnectionResetError("client went away mid-stream")

        with pytest.raises(LitestarException) as raised:
            await asgi.http(app, "GET", "/stream", on_send=breaks_after_first_chunk)
        assert caused_by(raised.value, ConnectionResetError)
        assert checked_out(plugin) == {"default": 0, "logs": 0}


async def test_websocket_closed_by_the_client(setup: tuple[Litestar, SQLAlchemyPlugin[Any], Database]) -> None:
    app, plugin, db = setup
    async with app.lifespan():
        incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await incoming.put({"type": "websocket.disconnect", "code": 1001})
        sent = await asgi.websocket(app, "/ws/client-closed", incoming)
        assert {"type": "websocket.send", "text": "saved"} in [{k: m.get(k) for k in ("type", "text")} for m in sent]
        assert checked_out(plugin) == {"default": 0, "logs": 0}
    assert names(db) == []  # the handler ended with WebSocketDisconnect: rolled back


async def test_websocket_closed_by_the_server(setup: tuple[Litestar, SQLAlchemyPlugin[Any], Database]) -> None:
    app, plugin, db = setup
    async with app.lifespan():
        incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await incoming.put({"type": "websocket.receive", "text": "close"})
        sent = await asgi.websocket(app, "/ws/server-closed", incoming)
        assert sent[-1]["type"] == "websocket.close"
        assert checked_out(plugin) == {"default": 0, "logs": 0}
    assert names(db) == ["server-closed"]  # the handler returned normally: committed
