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
import logging
import weakref
from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool

from plugin import BindConfig, SQLAlchemyAsyncConfig, SQLAlchemyPlugin, TransactionPolicy
from plugin.middleware import GIVE_WAY_TURNS, give_way
from tests.databases import KINDS, require_prepared_transactions
from tests.plugin import asgi
from tests.plugin.models import Account, AuditEntry, logs_metadata, make_plugin
from tests.plugin.models import Base as ModelsBase
from tests.plugin.orders import Base, Order

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

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

SETTLE_TURNS = {"read": 0, "write": 1}
"""Turns of the event loop from a connection's checkin to the response start, besides giving way: a read
commits in the request's task, a write in a task of its own (the shield), which wakes the request one
turn later. A count may be one off either way: within a turn, the counting task runs before or after an
event."""


def app_with_pool(kind: str, new_db: Callable[[str], Database], pool_size: int = 5) -> tuple[Litestar, Database]:
    """An app whose default bind has a pool of ``pool_size`` connections and no overflow."""
    db = new_db(kind)
    binds = {
        "default": BindConfig(url=db.url(), engine_options={"pool_size": pool_size, "max_overflow": 0}),
        "logs": new_db(kind).url(),
    }
    config = SQLAlchemyAsyncConfig(binds=binds, base=(ModelsBase, logs_metadata), create_all=True)
    handlers = [count, add, add_and_commit, unused]
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


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("request_kind", REQUESTS)
async def test_a_request_waiting_for_the_connection_gets_it_before_the_response_starts(
    kind: str, request_kind: str, new_db: Callable[[str], Database]
) -> None:
    app, db = app_with_pool(kind, new_db, pool_size=1)
    method, path = REQUESTS[request_kind]
    timeline = Timeline()
    async with app.lifespan():
        with timeline.counting():
            first, second = await asyncio.gather(
                asgi.http(app, method, path.format("ada"), on_send=timeline.on_send("first")),
                asgi.http(app, method, path.format("bob"), on_send=timeline.on_send("second")),
            )
    assert (first.status, second.status) == ((200, 200) if method == "GET" else (201, 201))
    # One connection: the second request waited for it, and took it before the first one's response started.
    assert timeline.names() == [
        "checkout",
        "checkin",
        "checkout",
        "first starts its response",
        "checkin",
        "second starts its response",
    ]
    turns = timeline.turns_between("checkin", "first starts its response")
    assert turns >= SETTLE_TURNS[request_kind] + GIVE_WAY_TURNS - 1  # committed, then gave way
    if request_kind == "write":
        assert sorted(db.fetch("select name from accounts")) == [("ada",), ("bob",)]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_write_flushes_in_the_requests_task_and_commits_in_a_task_of_its_own(
    kind: str, new_db: Callable[[str], Database]
) -> None:
    # The flush takes its connection from the pool right away, as a hand-written `await session.commit()`
    # does; only the COMMIT, which a cancellation must not cut short, runs behind the shield.
    app, db = app_with_pool(kind, new_db)
    seen: dict[str, asyncio.Task[Any] | None] = {}
    requests: list[asyncio.Task[Any]] = []

    def note(what: str) -> Callable[..., None]:
        def noted(*_: object) -> None:
            seen.setdefault(what, asyncio.current_task())

        return noted

    listeners = [(Pool, "checkout", note("checkout")), (Engine, "commit", note("commit"))]
    async with app.lifespan():
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
    assert seen["checkout"] is requests[0]
    assert seen["commit"] is not None
    assert seen["commit"] is not requests[0]


async def test_a_write_the_handler_committed_does_not_give_way(new_db: Callable[[str], Database]) -> None:
    app, db = app_with_pool("sqlite", new_db)
    timeline = Timeline()
    async with app.lifespan():
        with timeline.counting():
            exchange = await asgi.http(app, "POST", "/add-and-commit/ada", on_send=timeline.on_send("it"))
    assert exchange.status == 201
    assert db.fetch("select name from accounts") == [("ada",)]
    assert timeline.names() == ["checkout", "checkin", "it starts its response"]
    assert timeline.turns_between("checkin", "it starts its response") <= 1  # nothing awaited in between


async def test_a_session_never_used_does_not_give_way(new_db: Callable[[str], Database]) -> None:
    app, _ = app_with_pool("sqlite", new_db)
    timeline = Timeline()
    async with app.lifespan():
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

    async with app.lifespan():
        event.listen(Pool, "checkin", cancel_while_giving_way, once=True)
        tasks.append(asyncio.create_task(asgi.http(app, "GET", "/count", on_send=sent.append)))
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
    assert sent == []  # the client never got its response
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []  # nothing was written


async def cancelled_while_giving_way() -> None:
    """``give_way`` with the request's task cancelled as it begins (what a timeout landing there does)."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await give_way()


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


OUTSIDE: dict[str, AsyncEngine] = {}
"""The engine outside the binds that ``/outside`` writes through (the test sets it)."""


@post("/outside/{also_a_bind:str}")
async def write_outside(db_session: NamedDependency[AsyncSession], also_a_bind: FromPath[str]) -> None:
    if also_a_bind == "yes":
        db_session.add(Account(name="ada"))
    await db_session.execute(
        text("insert into things (name) values ('ada')"), bind_arguments={"bind": OUTSIDE["engine"].sync_engine}
    )


def app_writing_outside(
    kind: str, new_db: Callable[[str], Database], handler: Any = write_outside
) -> tuple[Litestar, Database, Database]:
    """An app serving ``handler`` on two binds, its default bind's database, and the database of the
    engine outside the binds (with its table ``things``)."""
    db, other = new_db(kind), new_db(kind)
    other.execute("create table things (name varchar(20))")
    binds = {"default": db.url(), "logs": new_db(kind).url()}
    config = SQLAlchemyAsyncConfig(binds=binds, base=(ModelsBase, logs_metadata), create_all=True)
    app = Litestar(route_handlers=[handler], plugins=[SQLAlchemyPlugin(config=config)], logging_config=None)
    return app, db, other


@pytest.mark.parametrize("committed", ["'(an engine outside the binds)'", "'default', '(an engine outside the binds)'"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_write_outside_the_binds_cancelled_while_giving_way_is_named_in_the_warning(
    kind: str,
    committed: str,
    new_db: Callable[[str], Database],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, db, other = app_writing_outside(kind, new_db)
    caplog.set_level(logging.WARNING, logger="plugin")

    monkeypatch.setattr("plugin.middleware.give_way", cancelled_while_giving_way)
    OUTSIDE["engine"] = create_async_engine(other.url())
    also_a_bind = "yes" if "default" in committed else "no"
    try:
        async with app.lifespan():
            with pytest.raises(asyncio.CancelledError):
                await asyncio.create_task(asgi.http(app, "POST", f"/outside/{also_a_bind}"))
    finally:
        await OUTSIDE.pop("engine").dispose()
    assert other.fetch("select name from things") == [("ada",)]  # committed by the session's own commit
    assert db.fetch("select name from accounts") == ([("ada",)] if also_a_bind == "yes" else [])
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"the task was cancelled while its response was starting, after its transaction committed: {committed}"
    ]


@get("/read-a-replica-then-write")  # a safe method reads from replicas (until it writes): a GET that writes
async def read_a_replica_then_write(db_session: NamedDependency[AsyncSession]) -> None:
    await db_session.execute(select(Account))  # the replica's connection: not a bind's, and nothing written
    db_session.add(Account(name="ada"))


@pytest.mark.parametrize("kind", KINDS)
async def test_a_read_from_a_replica_is_not_named_as_a_write_outside_the_binds(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = new_db(kind)
    binds = {"default": BindConfig(url=db.url(), replicas=[db.url()]), "logs": new_db(kind).url()}
    config = SQLAlchemyAsyncConfig(binds=binds, base=(ModelsBase, logs_metadata), create_all=True)
    app = Litestar(
        route_handlers=[read_a_replica_then_write], plugins=[SQLAlchemyPlugin(config=config)], logging_config=None
    )
    caplog.set_level(logging.WARNING, logger="plugin")
    monkeypatch.setattr("plugin.middleware.give_way", cancelled_while_giving_way)
    async with app.lifespan():
        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(asgi.http(app, "GET", "/read-a-replica-then-write"))
    assert db.fetch("select name from accounts") == [("ada",)]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "the task was cancelled while its response was starting, after its transaction committed: 'default'"
    ]


@get("/read-a-replica-then-log")  # a GET reads from replicas until it writes
async def read_a_replica_then_log(db_session: NamedDependency[AsyncSession]) -> None:
    await db_session.execute(select(Account))
    db_session.add(AuditEntry(message="seen"))


@pytest.mark.parametrize("kind", KINDS)
async def test_a_replica_s_commit_failing_after_the_bind_committed_says_the_bind_committed(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    db, logs = new_db(kind), new_db(kind)
    binds = {"default": BindConfig(url=db.url(), replicas=[db.url()]), "logs": logs.url()}
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds=binds, base=ModelsBase, create_all=True))
    app = Litestar(route_handlers=[read_a_replica_then_log], plugins=[plugin], logging_config=None)
    caplog.set_level(logging.ERROR, logger="plugin")
    async with app.lifespan():
        replica = plugin.engines.replicas("default")[0].sync_engine  # type: ignore[union-attr]

        def refuse_the_replica_s_commit(connection: Any) -> None:
            if connection.engine is replica:
                raise RuntimeError("COMMIT refused")

        event.listen(Engine, "commit", refuse_the_replica_s_commit)
        try:
            status = (await asgi.http(app, "GET", "/read-a-replica-then-log")).status
        finally:
            event.remove(Engine, "commit", refuse_the_replica_s_commit)
    assert status == 500
    assert logs.fetch("select message from audit_entries") == [("seen",)]  # the bind committed first
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "commit (after every bind committed) failed: RuntimeError: COMMIT refused; committed: 'logs'; "
        "rolled back: (none)"
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_bind_beside_an_engine_outside_the_binds_commits_first_and_its_failure_commits_neither(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    app, db, other = app_writing_outside(kind, new_db)
    caplog.set_level(logging.ERROR, logger="plugin")
    default_database = db.url().database

    def refuse_the_binds_commit(connection: Any) -> None:
        if connection.engine.url.database == default_database:
            raise RuntimeError("COMMIT refused")

    OUTSIDE["engine"] = create_async_engine(other.url())
    try:
        async with app.lifespan():  # its create_all commits before the listener refuses anything
            event.listen(Engine, "commit", refuse_the_binds_commit)
            try:
                # The sessions' own commit() takes its connections in no set order: a few requests try several.
                statuses = [(await asgi.http(app, "POST", "/outside/yes")).status for _ in range(5)]
            finally:
                event.remove(Engine, "commit", refuse_the_binds_commit)
    finally:
        await OUTSIDE.pop("engine").dispose()
    assert statuses == [500] * 5
    assert other.fetch("select name from things") == []  # the outside engine was rolled back, not committed
    assert db.fetch("select name from accounts") == []
    errors = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "COMMIT refused" in r.getMessage()
    ]
    assert len(errors) == 5
    assert all(
        "commit failed on bind 'default'" in e
        and e.endswith("committed: (none); rolled back: 'default', '(an engine outside the binds)'")
        for e in errors
    ), errors


@pytest.mark.parametrize("kind", KINDS)
async def test_an_engine_outside_the_binds_failing_after_the_bind_committed_is_answered_500_and_logged_as_it_was(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    app, db, other = app_writing_outside(kind, new_db)
    caplog.set_level(logging.ERROR, logger="plugin")
    outside_database = other.url().database

    def refuse_the_outside_commit(connection: Any) -> None:
        if connection.engine.url.database == outside_database:
            raise RuntimeError("COMMIT refused")

    OUTSIDE["engine"] = create_async_engine(other.url())
    try:
        async with app.lifespan():
            event.listen(Engine, "commit", refuse_the_outside_commit)
            try:
                status = (await asgi.http(app, "POST", "/outside/yes")).status
            finally:
                event.remove(Engine, "commit", refuse_the_outside_commit)
    finally:
        await OUTSIDE.pop("engine").dispose()
    assert status == 500  # never a 2xx: half of the write was lost
    assert db.fetch("select name from accounts") == [("ada",)]  # the bind committed first, and the log says so
    assert other.fetch("select name from things") == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "commit (after every bind committed) failed: RuntimeError: COMMIT refused; committed: 'default'; "
        "rolled back: '(an engine outside the binds)'"
    ]


@post("/outside-twice/{also_a_bind:str}")
async def write_outside_twice(
    db_session: NamedDependency[AsyncSession],
    logs_db_session: NamedDependency[AsyncSession],
    also_a_bind: FromPath[str],
) -> None:
    """Each of the request's two sessions writes through an engine outside the binds of its own."""
    if also_a_bind == "yes":
        db_session.add(Account(name="ada"))
    for session, key in ((db_session, "engine"), (logs_db_session, "second")):
        insert_a_thing = text("insert into things (name) values ('ada')")
        await session.execute(insert_a_thing, bind_arguments={"bind": OUTSIDE[key].sync_engine})


@pytest.mark.parametrize("also_a_bind", ["yes", "no"])
@pytest.mark.parametrize("kind", KINDS)
async def test_writes_outside_the_binds_that_fare_differently_are_each_named_as_they_fared(
    kind: str, also_a_bind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    app, db, other = app_writing_outside(kind, new_db, write_outside_twice)
    second = new_db(kind)
    second.execute("create table things (name varchar(20))")
    caplog.set_level(logging.ERROR, logger="plugin")
    outside_databases = {other.url().database, second.url().database}
    commits: list[object] = []

    def refuse_the_second_outside_commit(connection: Any) -> None:
        if connection.engine.url.database in outside_databases:
            commits.append(connection)
            if len(commits) == 2:  # whichever session commits second: the first one's write stays committed
                raise RuntimeError("COMMIT refused")

    OUTSIDE.update(engine=create_async_engine(other.url()), second=create_async_engine(second.url()))
    try:
        async with app.lifespan():
            event.listen(Engine, "commit", refuse_the_second_outside_commit)
            try:
                status = (await asgi.http(app, "POST", f"/outside-twice/{also_a_bind}")).status
            finally:
                event.remove(Engine, "commit", refuse_the_second_outside_commit)
    finally:
        for key in ("engine", "second"):
            await OUTSIDE.pop(key).dispose()
    assert status == 500
    assert db.fetch("select name from accounts") == ([("ada",)] if also_a_bind == "yes" else [])
    assert sorted(other.fetch("select name from things") + second.fetch("select name from things")) == [("ada",)]
    stage, committed = (
        ("commit (after every bind committed)", "'default', ") if also_a_bind == "yes" else ("commit", "")
    )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"{stage} failed: RuntimeError: COMMIT refused; committed: {committed}'(an engine outside the binds)'; "
        "rolled back: '(an engine outside the binds)'"
    ]


@post("/outside-on-two-engines")
async def write_outside_on_two_engines(db_session: NamedDependency[AsyncSession]) -> None:
    """One session writes to the default bind and through two engines outside the binds, in this order."""
    db_session.add(Account(name="ada"))
    for key in ("engine", "second"):
        insert_a_thing = text("insert into things (name) values ('ada')")
        await db_session.execute(insert_a_thing, bind_arguments={"bind": OUTSIDE[key].sync_engine})


@pytest.mark.parametrize("kind", KINDS)
async def test_one_session_s_writes_through_two_engines_outside_the_binds_are_each_named_as_they_fared(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    app, db, other = app_writing_outside(kind, new_db, write_outside_on_two_engines)
    second = new_db(kind)
    second.execute("create table things (name varchar(20))")
    caplog.set_level(logging.ERROR, logger="plugin")
    second_database = second.url().database

    def refuse_the_second_engine_s_commit(connection: Any) -> None:
        if connection.engine.url.database == second_database:
            raise RuntimeError("COMMIT refused")

    OUTSIDE.update(engine=create_async_engine(other.url()), second=create_async_engine(second.url()))
    try:
        async with app.lifespan():
            event.listen(Engine, "commit", refuse_the_second_engine_s_commit)
            try:
                status = (await asgi.http(app, "POST", "/outside-on-two-engines")).status
            finally:
                event.remove(Engine, "commit", refuse_the_second_engine_s_commit)
    finally:
        for key in ("engine", "second"):
            await OUTSIDE.pop(key).dispose()
    assert status == 500
    assert db.fetch("select name from accounts") == [("ada",)]
    assert other.fetch("select name from things") == [("ada",)]  # committed before the second engine failed
    assert second.fetch("select name from things") == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "commit (after every bind committed) failed: RuntimeError: COMMIT refused; committed: 'default', "
        "'(an engine outside the binds)'; rolled back: '(an engine outside the binds)'"
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_an_after_commit_listener_failing_once_everything_committed_says_everything_committed(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    app, db, other = app_writing_outside(kind, new_db)
    caplog.set_level(logging.ERROR, logger="plugin")

    def fail(session: Session) -> None:
        raise RuntimeError("after_commit failed")

    OUTSIDE["engine"] = create_async_engine(other.url())
    try:
        async with app.lifespan():
            event.listen(Session, "after_commit", fail)
            try:
                status = (await asgi.http(app, "POST", "/outside/yes")).status
            finally:
                event.remove(Session, "after_commit", fail)
    finally:
        await OUTSIDE.pop("engine").dispose()
    assert status == 500
    assert db.fetch("select name from accounts") == [("ada",)]
    assert other.fetch("select name from things") == [("ada",)]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "commit (after every bind committed) failed: RuntimeError: after_commit failed; committed: 'default', "
        "'(an engine outside the binds)'; rolled back: (none)"
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

    async def counted() -> None:
        calls.append(None)

    monkeypatch.setattr("plugin.middleware.give_way", counted)
    async with app.lifespan(), plugin.sandbox() if sandboxed else contextlib.nullcontext():
        exchange = await asgi.http(app, method, path)
    assert exchange.status == (200 if method == "GET" else 201)
    assert len(calls) == expected
