"""The transaction middleware lets go of a connection's objects when the connection is done, and gives way
to the event loop between a request's settle and its response.

uvicorn arms its keep-alive timer from inside the ``send`` of a response's last message, and the timer keeps
the context it was armed in (the middleware's context variable included) until the event loop drops it,
long after the request. Whatever the middleware's per-connection object still holds then stays alive that
long: under uvicorn that held every request's objects, and the garbage collector ran a full collection
(40-80 ms) every few thousand requests (docs/benchmarks.md).

Giving way lets a request waiting for the connection just given back take it before the response starts,
as leaving ``async with session`` does in SQLAlchemy (plugin.middleware.give_way).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import weakref
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from litestar import Litestar, Request, Response, WebSocket, get, post, websocket
from litestar.background_tasks import BackgroundTask
from litestar.config.compression import CompressionConfig
from litestar.di import NamedDependency
from litestar.exceptions import LitestarException
from litestar.params import FromPath
from litestar.response import Stream
from sqlalchemy import Engine, event, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool

from plugin import BindConfig, SQLAlchemyAsyncConfig, SQLAlchemyPlugin, TransactionPolicy
from plugin.middleware import GIVE_WAY_TURNS, InFlight
from tests.databases import KINDS, require_prepared_transactions
from tests.plugin import asgi
from tests.plugin.helpers import cancelled_while_giving_way
from tests.plugin.models import Account, logs_metadata, make_plugin
from tests.plugin.models import Base as ModelsBase
from tests.plugin.orders import Base, Order

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    from litestar.types import ASGIApp, Receive, Scope, Send

    from tests.databases import Database

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


# -- giving way between the settle and the response ------------------------------------------------------


@get("/count")
async def count(db_session: NamedDependency[AsyncSession]) -> int:
    return int((await db_session.execute(select(func.count()).select_from(Account))).scalar_one())


@post("/add/{name:str}")
async def add(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(Account(name=name))


@post("/add-and-commit/{name:str}")
async def add_and_commit(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(Account(name=name))
    await db_session.commit()  # the connection goes back here; the settle finds nothing to commit


REQUESTS = {"read": ("GET", "/count"), "write": ("POST", "/add/{}")}


HELD: dict[str, asyncio.Event] = {}


@get("/held")
async def held(db_session: NamedDependency[AsyncSession]) -> None:
    """A request in flight until the test sets ``HELD["until"]`` (its session never used)."""
    HELD["entered"].set()
    await HELD["until"].wait()


@websocket("/listening")
async def listening(socket: WebSocket[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> None:
    """A websocket open until its client closes it, its session used once (a notifications socket)."""
    await socket.accept()
    await socket.send_json(int((await db_session.execute(select(func.count()).select_from(Account))).scalar_one()))
    HELD["socket open"].set()
    await socket.receive_text()


@contextlib.asynccontextmanager
async def a_websocket_open(app: Litestar) -> AsyncIterator[None]:
    """A websocket to ``/listening`` open for the block, its first message received."""
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    HELD["socket open"] = asyncio.Event()
    socket = asyncio.create_task(asgi.websocket(app, "/listening", incoming))
    await HELD["socket open"].wait()
    try:
        yield
    finally:
        await incoming.put({"type": "websocket.disconnect", "code": 1000})
        sent = await socket
        assert [m["type"] for m in sent][:2] == ["websocket.accept", "websocket.send"]


@contextlib.asynccontextmanager
async def another_request_in_flight(app: Litestar) -> AsyncIterator[None]:
    """A request to ``/held`` in flight for the block: a request gives way only while another one is."""
    HELD.update(entered=asyncio.Event(), until=asyncio.Event())
    other = asyncio.create_task(asgi.http(app, "GET", "/held"))
    await HELD["entered"].wait()
    try:
        yield
    finally:
        HELD["until"].set()
        assert (await other).status == 200
        HELD.clear()


def app_with_pool(kind: str, new_db: Callable[[str], Database], pool_size: int = 5) -> tuple[Litestar, Database]:
    """An app whose default bind has a pool of ``pool_size`` connections and no overflow."""
    db = new_db(kind)
    binds = {
        "default": BindConfig(url=db.url(), engine_options={"pool_size": pool_size, "max_overflow": 0}),
        "logs": new_db(kind).url(),
    }
    config = SQLAlchemyAsyncConfig(binds=binds, base=(ModelsBase, logs_metadata), create_all=True)
    handlers = [count, add, add_and_commit, unused, held, listening]
    return Litestar(route_handlers=handlers, plugins=[SQLAlchemyPlugin(config=config)], logging_config=None), db


class Timeline:
    """Pool checkouts and checkins and responses starting, in the order they happened, each with the number
    of turns the event loop had taken by then (counted by a task that yields on every turn)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.turns = 0

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.turns += 1

    def note(self, what: str) -> None:
        self.events.append((what, self.turns))

    def on_send(self, who: str) -> Callable[[dict[str, Any]], None]:
        def noted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.note(f"{who} starts its response")

        return noted

    def names(self) -> list[str]:
        return [what for what, _ in self.events]

    def turns_between(self, first: str, then: str) -> int:
        """Turns from the first ``first`` event to the first ``then`` event."""
        turns = dict(reversed(self.events))  # the first of each
        return turns[then] - turns[first]

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Count turns, and note every pool checkout and checkin, while in the block."""

        def checkout(*_: object) -> None:
            self.note("checkout")

        def checkin(*_: object) -> None:
            self.note("checkin")

        ticker = asyncio.get_running_loop().create_task(self.tick())
        event.listen(Pool, "checkout", checkout)
        event.listen(Pool, "checkin", checkin)
        try:
            yield
        finally:
            event.remove(Pool, "checkout", checkout)
            event.remove(Pool, "checkin", checkin)
            ticker.cancel()


@pytest.mark.parametrize("others", ["another request in flight", "none"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("request_kind", REQUESTS)
async def test_a_request_waiting_for_the_connection_gets_it_before_the_response_starts(
    kind: str, request_kind: str, others: str, new_db: Callable[[str], Database]
) -> None:
    app, db = app_with_pool(kind, new_db, pool_size=1)
    method, path = REQUESTS[request_kind]
    timeline = Timeline()
    async with app.lifespan(), contextlib.AsyncExitStack() as stack:
        if others != "none":
            await stack.enter_async_context(another_request_in_flight(app))  # it takes no connection
        with timeline.counting():
            first, second = await asyncio.gather(
                asgi.http(app, method, path.format("ada"), on_send=timeline.on_send("first")),
                asgi.http(app, method, path.format("bob"), on_send=timeline.on_send("second")),
            )
    assert (first.status, second.status) == ((200, 200) if method == "GET" else (201, 201))
    # One connection: the request that took it first gave it to the other, waiting, before its own response
    # started.
    events = timeline.names()
    started = [what for what in events if what.endswith(" starts its response")]
    assert [what if what in ("checkout", "checkin") else "starts" for what in events] == [
        "checkout",
        "checkin",
        "checkout",
        "starts",
        "checkin",
        "starts",
    ]
    if request_kind == "read" or others != "none":
        # First come, first served: the first request flushes (or reads) in its own task, before the second.
        assert started == ["first starts its response", "second starts its response"]
    else:
        # A limit of the settle (README): the first write is alone in flight when it settles, so it flushes in
        # the settle's task, a turn later, and the second, arriving in that turn, takes the only connection
        # first. With any idle connection in the pool, neither waits.
        assert started == ["second starts its response", "first starts its response"]
    # A read commits in the request's task, a write in a task of its own (the shield), which wakes the
    # request one turn later; then it gives way GIVE_WAY_TURNS turns. A count may be one off either way:
    # within a turn, the counting task runs before or after an event.
    turns = timeline.turns_between("checkin", started[0])
    expected = GIVE_WAY_TURNS + (1 if request_kind == "write" else 0)
    assert expected - 1 <= turns <= expected + 1
    if request_kind == "write":
        assert sorted(db.fetch("select name from accounts")) == [("ada",), ("bob",)]


@pytest.mark.parametrize("others", ["another request in flight", "alone"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_write_flushes_in_the_requests_task_while_others_are_in_flight_and_commits_in_a_task_of_its_own(
    kind: str, others: str, new_db: Callable[[str], Database]
) -> None:
    # While other requests are in flight, the flush takes its connection from the pool right away, as a
    # hand-written `await session.commit()` does; only the COMMIT, which a cancellation must not cut short,
    # runs behind the shield. A request alone in flight has no one to queue behind: it flushes and commits
    # in the settle's task (one greenlet instead of two).
    app, db = app_with_pool(kind, new_db)
    seen: dict[str, asyncio.Task[Any] | None] = {}
    requests: list[asyncio.Task[Any]] = []

    def note(what: str) -> Callable[..., None]:
        def noted(*_: object) -> None:
            seen.setdefault(what, asyncio.current_task())

        return noted

    listeners = [(Pool, "checkout", note("checkout")), (Engine, "commit", note("commit"))]
    async with app.lifespan(), contextlib.AsyncExitStack() as stack:
        if others != "alone":
            await stack.enter_async_context(another_request_in_flight(app))  # reads nothing from the pool
        for target, name, listener in listeners:
            event.listen(target, name, listener)
        try:
            requests.append(asyncio.create_task(asgi.http(app, "POST", "/add/ada")))
            exchange = await requests[0]
        finally:
            for target, name, listener in listeners:
                event.remove(target, name, listener)
    assert exchange.status == 201
    assert db.fetch("select name from accounts") == [("ada",)]
    assert seen["commit"] is not None
    assert seen["commit"] is not requests[0]
    if others == "alone":
        assert seen["checkout"] is seen["commit"]
    else:
        assert seen["checkout"] is requests[0]


async def test_a_write_the_handler_committed_does_not_give_way(new_db: Callable[[str], Database]) -> None:
    app, db = app_with_pool("sqlite", new_db)
    timeline = Timeline()
    async with app.lifespan(), another_request_in_flight(app):  # which would make it give way, if it did
        with timeline.counting():
            exchange = await asgi.http(app, "POST", "/add-and-commit/ada", on_send=timeline.on_send("it"))
    assert exchange.status == 201
    assert db.fetch("select name from accounts") == [("ada",)]
    assert timeline.names() == ["checkout", "checkin", "it starts its response"]
    assert timeline.turns_between("checkin", "it starts its response") <= 1  # nothing awaited in between


@pytest.mark.parametrize("beside", ["nothing", "an open websocket"])
@pytest.mark.parametrize("request_kind", REQUESTS)
async def test_a_request_alone_in_flight_does_not_give_way(
    request_kind: str, beside: str, new_db: Callable[[str], Database]
) -> None:
    # Nothing else is there to take the turns: the response starts right after the commit. An open websocket
    # waits on its client, not for a turn: with one open, a request is still alone in flight.
    app, _ = app_with_pool("sqlite", new_db)
    method, path = REQUESTS[request_kind]
    timeline = Timeline()
    async with app.lifespan(), a_websocket_open(app) if beside != "nothing" else contextlib.nullcontext():
        with timeline.counting():
            exchange = await asgi.http(app, method, path.format("ada"), on_send=timeline.on_send("it"))
    assert exchange.status == (200 if method == "GET" else 201)
    assert timeline.names() == ["checkout", "checkin", "it starts its response"]
    # a write commits in a task of its own, which wakes the request a turn later
    assert timeline.turns_between("checkin", "it starts its response") <= (1 if method == "GET" else 2)


async def test_a_session_never_used_does_not_give_way(new_db: Callable[[str], Database]) -> None:
    app, _ = app_with_pool("sqlite", new_db)
    timeline = Timeline()
    async with app.lifespan(), another_request_in_flight(app):  # which would make it give way, if it did
        with timeline.counting():
            timeline.note("sent")
            exchange = await asgi.http(app, "GET", "/unused", on_send=timeline.on_send("it"))
    assert exchange.status == 200
    assert timeline.names() == ["sent", "it starts its response"]  # no connection taken
    assert timeline.turns_between("sent", "it starts its response") <= 1


@pytest.mark.parametrize("kind", KINDS)
async def test_a_read_cancelled_while_giving_way_gets_no_response_and_no_warning(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = app_with_pool(kind, new_db)
    caplog.set_level(logging.WARNING, logger="plugin")
    sent: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[Any]] = []

    def cancel_while_giving_way(*_: object) -> None:
        loop.call_soon(loop.call_soon, tasks[0].cancel)  # checked in: committed; two turns on it is giving way

    async with app.lifespan(), another_request_in_flight(app):
        event.listen(Pool, "checkin", cancel_while_giving_way, once=True)
        tasks.append(asyncio.create_task(asgi.http(app, "GET", "/count", on_send=sent.append)))
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
    assert sent == []  # the client never got its response
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []  # nothing was written


@pytest.mark.parametrize("kind", KINDS)
async def test_a_write_cancelled_while_giving_way_gets_no_response_and_the_warning_says_it_committed(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, db = app_with_pool(kind, new_db)
    caplog.set_level(logging.WARNING, logger="plugin")
    sent: list[dict[str, Any]] = []

    monkeypatch.setattr("plugin.middleware.give_way", cancelled_while_giving_way)
    async with app.lifespan():
        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(asgi.http(app, "POST", "/add/ada", on_send=sent.append))
    assert sent == []  # the client never got its response
    assert db.fetch("select name from accounts") == [("ada",)]  # but the write is committed, and the log says so
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "the task was cancelled while its response was starting, after its transaction committed: 'default'"
    ]


@get("/count-in-a-thread", sync_to_thread=True)
def count_in_a_thread(db_session: NamedDependency[Session]) -> int:
    return int(db_session.execute(select(func.count()).select_from(Account)).scalar_one())


MANUAL = TransactionPolicy(mode="manual")
"""Never commits: what the handler left open is rolled back."""

WHO_GIVES_WAY = {
    # case: (database, config options, in a sandbox, method and path, calls of give_way)
    "read": ("sqlite", {}, False, ("GET", "/count"), 1),
    "write": ("sqlite", {}, False, ("POST", "/add/ada"), 1),
    "write in a sandbox": ("sqlite", {}, True, ("POST", "/add/ada"), 1),
    "read in a sandbox": ("sqlite", {}, True, ("GET", "/count"), 1),
    "two-phase read": ("postgresql", {"two_phase": True}, False, ("GET", "/count"), 1),
    "two-phase write": ("postgresql", {"two_phase": True}, False, ("POST", "/add/ada"), 1),
    "sync read (settled in a worker thread)": ("sqlite", {"sync": True}, False, ("GET", "/count-in-a-thread"), 0),
    "a write rolled back": ("sqlite", {"transaction": MANUAL}, False, ("POST", "/add/ada"), 0),
}


@pytest.mark.parametrize("case", WHO_GIVES_WAY)
async def test_a_commit_of_async_sessions_gives_way(
    case: str, new_db: Callable[[str], Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    kind, options, sandboxed, (method, path), expected = WHO_GIVES_WAY[case]
    db = new_db(kind)
    if options.get("two_phase"):
        require_prepared_transactions(db)
    plugin = make_plugin({"default": db, "logs": new_db(kind)}, **options)
    app = Litestar(route_handlers=[count, add, count_in_a_thread], plugins=[plugin], logging_config=None)
    calls: list[None] = []

    async def counted(in_flight: InFlight) -> None:
        calls.append(None)

    monkeypatch.setattr("plugin.middleware.give_way", counted)
    async with app.lifespan(), plugin.sandbox() if sandboxed else contextlib.nullcontext():
        exchange = await asgi.http(app, method, path)
    assert exchange.status == (200 if method == "GET" else 201)
    assert len(calls) == expected


# -- a failed commit stops the handler's response -------------------------------------------------------


def _record(request: Request[Any, Any, Any], what: str) -> None:
    request.app.state.ran.append(what)


async def _after_response(request: Request[Any, Any, Any]) -> None:
    _record(request, "after_response")


def _welcome(request: Request[Any, Any, Any], name: str) -> BackgroundTask:
    return BackgroundTask(_record, request, f"welcome {name}")


@post("/sign-up/{name:str}", after_response=_after_response)
async def sign_up(
    name: FromPath[str], request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> Response[str]:
    db_session.add(Account(name=name))
    return Response(f"hello {name}", status_code=201, background=_welcome(request, name))


@post("/sign-up-streamed/{name:str}", after_response=_after_response)
async def sign_up_streamed(
    name: FromPath[str], request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> Stream:
    db_session.add(Account(name=name))

    async def body() -> AsyncIterator[bytes]:
        _record(request, "body")
        yield f"hello {name}".encode()

    return Stream(body(), status_code=201, background=_welcome(request, name))


class Passing:
    """Handler middleware (inside the transaction middleware): records what passes through it, re-raises."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            cause = type(exc.__cause__).__name__
            scope["litestar_app"].state.ran.append(f"middleware saw {type(exc).__name__} from {cause}")
            raise


GZIP = {"compression_config": CompressionConfig(backend="gzip", minimum_size=1)}
SHAPES = {
    "plain": ({}, "/sign-up/{}"),
    "streamed": ({}, "/sign-up-streamed/{}"),
    "gzip": (GZIP, "/sign-up/{}"),
    # gzip holds the start back until the first chunk: the failed commit is raised inside the stream's task group
    "streamed-gzip": (GZIP, "/sign-up-streamed/{}"),
}


FAILED_COMMIT_CASES = [pytest.param(k.values[0], "plain", marks=k.marks, id=f"{k.id}-plain") for k in KINDS] + [
    pytest.param("sqlite", shape, id=f"sqlite-{shape}") for shape in SHAPES if shape != "plain"
]


@pytest.mark.parametrize(("kind", "shape"), FAILED_COMMIT_CASES)
async def test_a_failed_commit_stops_the_handlers_response_its_background_task_and_after_response(
    kind: str, shape: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    app_options, path = SHAPES[shape]
    db = new_db(kind)
    plugin = make_plugin({"default": db, "logs": new_db("sqlite")})
    app = Litestar(route_handlers=[sign_up, sign_up_streamed], plugins=[plugin], **app_options)
    app.state.ran = []
    async with app.lifespan():
        headers = [(b"accept-encoding", b"gzip")]  # without it, gzip leaves the response alone
        first = await asgi.http(app, "POST", path.format("ada"), headers=headers)
        assert (first.status, app.state.ran) == (
            201,
            ["body", "welcome ada", "after_response"][("streamed" not in shape) :],
        )
        app.state.ran.clear()
        caplog.clear()
        again = await asgi.http(app, "POST", path.format("ada"), headers=headers)  # the commit fails: name taken
    starts = [m["status"] for m in again.messages if m["type"] == "http.response.start"]
    assert (starts, json.loads(again.body)["status_code"]) == ([409], 409)  # the error, and nothing of "hello ada"
    # no body (behind gzip its first chunk is made, not sent), no welcome for a sign-up rolled back, no after_response
    assert app.state.ran == (["body"] if shape == "streamed-gzip" else [])
    assert db.fetch("select name from accounts") == [("ada",)]
    assert not [r for r in caplog.records if "after response started" in r.getMessage()]


async def test_handler_middleware_sees_the_replaced_response_stop(new_db: Callable[[str], Database]) -> None:
    plugin = make_plugin({"default": new_db("sqlite"), "logs": new_db("sqlite")})
    handler = post("/sign-up-watched/{name:str}", middleware=[Passing], after_response=_after_response)(sign_up.fn)
    app = Litestar(route_handlers=[handler], plugins=[plugin])
    app.state.ran = []
    async with app.lifespan():
        assert (await asgi.http(app, "POST", "/sign-up-watched/ada")).status == 201
        app.state.ran.clear()
        assert (await asgi.http(app, "POST", "/sign-up-watched/ada")).status == 409
    # Litestar's exception handling between it and the response wraps what is raised after the response started
    assert app.state.ran == ["middleware saw LitestarException from ResponseReplaced"]


class FaultyHeartbeat:
    """Handler middleware with a side task in an anyio task group, whose cleanup has a bug of its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def beat() -> None:
            try:
                await anyio.sleep_forever()
            finally:
                raise RuntimeError("the heartbeat's own bug")

        async with anyio.create_task_group() as group:
            group.start_soon(beat)
            try:
                await self.app(scope, receive, send)
            finally:
                group.cancel_scope.cancel()


async def test_an_error_of_its_own_beside_the_stopped_response_still_reaches_the_server(
    new_db: Callable[[str], Database],
) -> None:
    plugin = make_plugin({"default": new_db("sqlite"), "logs": new_db("sqlite")})
    handler = post("/sign-up-beating/{name:str}", middleware=[FaultyHeartbeat])(sign_up.fn)
    app = Litestar(route_handlers=[handler], plugins=[plugin], logging_config=None)
    app.state.ran = []
    async with app.lifespan():
        for name in ("ada", "ada"):  # the second commit fails: the middleware's bug must not vanish with it
            with pytest.raises(LitestarException) as raised:  # "Exception caught after response started"
                await asgi.http(app, "POST", f"/sign-up-beating/{name}")
            assert "RuntimeError: the heartbeat's own bug" in _leaves(raised.value)


def _leaves(exc: BaseException) -> list[str]:
    """The errors behind ``exc`` (its causes, and the members of exception groups among them)."""
    if isinstance(group := getattr(exc, "exceptions", None), tuple):
        return [leaf for inner in group for leaf in _leaves(inner)]
    if exc.__cause__ is not None:
        return _leaves(exc.__cause__)
    return [f"{type(exc).__name__}: {exc}"]
