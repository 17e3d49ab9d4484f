"""Ways a handler can misuse its session, and what the plugin promises then.

- one session used by several tasks at once (sibling dependencies, ``asyncio.gather``): the operations take
  turns, the request commits, and every connection goes back to the pool;
- a write after the request's transaction was settled (a background task, an ``after_response`` hook, a
  streaming body): it raises instead of vanishing;
- objects loaded by the handler stay readable after the commit (a streaming body reads them);
- asking ``get_bind()`` for a dialect does not make a bind count as used;
- a rollback that fails after a 4xx: the client still gets the 4xx.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from litestar import Litestar, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency, Provide
from litestar.events import listener
from litestar.params import FromPath
from litestar.response import Stream
from litestar.testing import AsyncTestClient
from sqlalchemy import Integer, create_engine, event, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import DDL

from plugin import LifecycleError, SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from tests.databases import KINDS
from tests.plugin import asgi
from tests.plugin.models import Account, AuditEntry, Base, logs_metadata, make_plugin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from sqlalchemy.sql.base import Executable

    from tests.databases import Database

pytestmark = pytest.mark.anyio


def caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    if exc is None:
        return False
    if isinstance(exc, kind):
        return True
    return caused_by(exc.__cause__, kind) or any(caused_by(e, kind) for e in getattr(exc, "exceptions", ()))


async def raised_by(request: Awaitable[Any]) -> BaseException:
    """The exception a request ended with (after its response started, Litestar wraps it)."""
    try:
        await request
    except Exception as exc:
        return exc
    pytest.fail("the request ended without an error")


def checked_out(plugin: SQLAlchemyPlugin[Any]) -> dict[str, int]:
    return {key: plugin.engines.sync_engine(key).pool.checkedout() for key in plugin.router.keys}


def names(db: Database) -> list[str]:
    return [name for (name,) in db.fetch("select name from accounts order by name")]


def messages(db: Database) -> list[str]:
    return [message for (message,) in db.fetch("select message from audit_entries order by id")]


# -- several tasks on one session ---------------------------------------------------------------------


@post("/gather/{name:str}")
async def gather(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(Account(name=name))
    await asyncio.gather(*(db_session.execute(select(Account.id)) for _ in range(4)))
    db_session.add(AuditEntry(message=name))
    await asyncio.gather(db_session.flush(), db_session.execute(select(AuditEntry.id)))


async def current_user(db_session: NamedDependency[AsyncSession]) -> int:
    return int(await db_session.scalar(select(text("1"))) or 0)


async def current_tenant(db_session: NamedDependency[AsyncSession]) -> int:
    return int(await db_session.scalar(select(text("2"))) or 0)


@get("/whoami", dependencies={"user": Provide(current_user), "tenant": Provide(current_tenant)})
async def whoami(user: NamedDependency[int], tenant: NamedDependency[int]) -> int:
    return user + tenant  # Litestar resolved the two providers in two tasks at once


@post("/ok/{name:str}")
async def ok(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add_all([Account(name=name), AuditEntry(message=name)])


@pytest.mark.parametrize("kind", KINDS)
async def test_one_session_on_several_tasks_takes_turns_and_leaks_nothing(
    kind: str, new_db: Callable[[str], Database]
) -> None:
    db, logs = new_db(kind), new_db(kind)
    plugin = make_plugin({"default": db, "logs": logs})
    app = Litestar(route_handlers=[gather, whoami, ok], plugins=[plugin], logging_config=None)
    async with app.lifespan():
        exchanges = await asyncio.gather(*(asgi.http(app, "POST", f"/gather/g{n:02}") for n in range(20)))
        assert {exchange.status for exchange in exchanges} == {201}
        siblings = await asgi.http(app, "GET", "/whoami")
        assert (siblings.status, siblings.json()) == (200, 3)
        assert checked_out(plugin) == {"default": 0, "logs": 0}
        if kind == "postgresql":
            idle = db.fetch(
                f"select count(*) from pg_stat_activity where datname = '{db.name}' and state = 'idle in transaction'"
            )
            assert idle == [(0,)]
        assert (await asgi.http(app, "POST", "/ok/later")).status == 201  # every later write still works
    assert names(db) == [*(f"g{n:02}" for n in range(20)), "later"]
    assert len(messages(logs)) == 21


@post("/same-row-twice")
async def same_row_twice(
    db_session: NamedDependency[AsyncSession], logs_db_session: NamedDependency[AsyncSession]
) -> None:
    db_session.add(AuditEntry(id=1, message="routed"))
    logs_db_session.add(AuditEntry(id=1, message="pinned"))  # the second INSERT waits on the first's lock


@post("/same-row-twice-sync", sync_to_thread=True)
def same_row_twice_sync(db_session: NamedDependency[Session], logs_db_session: NamedDependency[Session]) -> None:
    db_session.add(AuditEntry(id=1, message="routed"))
    logs_db_session.add(AuditEntry(id=1, message="pinned"))  # the second INSERT waits on the first's lock


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("sync", "by_scope"), [(False, False), (False, True), (True, False), (True, True)],
    ids=["async-task", "async-scope", "sync-task", "sync-scope"],
)  # fmt: skip
async def test_a_request_cancelled_while_its_own_sessions_block_each_other_ends(
    new_db: Callable[[str], Database], sync: bool, by_scope: bool
) -> None:
    # Sync: the flush's worker thread cannot be interrupted, so the cancelled request must not wait for it
    # while the flush waits on a lock that only closing the request's other session releases. The
    # cancellation comes from Task.cancel() or from an anyio cancel scope (a timeout built on
    # anyio.fail_after), which anyio keeps from worker-thread waits unless they may be abandoned.
    db, logs = new_db("postgresql"), new_db("postgresql")
    plugin = make_plugin({"default": db, "logs": logs}, sync=sync)
    handler = same_row_twice_sync if sync else same_row_twice
    app = Litestar(route_handlers=[handler], plugins=[plugin], logging_config=None)
    waiting = f"select count(*) from pg_stat_activity where datname = '{logs.name}' and wait_event_type = 'Lock'"
    scope = anyio.CancelScope()

    async def request() -> None:
        with scope:
            await asgi.http(app, "POST", "/same-row-twice-sync" if sync else "/same-row-twice")

    async with app.lifespan():
        task = asyncio.create_task(request())
        try:
            for _ in range(100):
                if logs.fetch(waiting) == [(1,)]:
                    break
                await asyncio.sleep(0.1)
            assert logs.fetch(waiting) == [(1,)]
            if by_scope:
                scope.cancel()
            else:
                task.cancel()  # a timeout middleware: nothing is committed yet, so giving up is safe
            done, _ = await asyncio.wait({task}, timeout=10)
            assert done, "the cancelled request is still waiting on its own lock"
            assert scope.cancelled_caught == by_scope  # a scope sees its own cancellation
            # Closing the request's other session released the lock, so the flush ended and its session was
            # closed too: nothing is left waiting or checked out, with no help from the server.
            for _ in range(100):
                if checked_out(plugin) == {"default": 0, "logs": 0} and logs.fetch(waiting) == [(0,)]:
                    break
                await asyncio.sleep(0.1)
            assert (checked_out(plugin), logs.fetch(waiting)) == ({"default": 0, "logs": 0}, [(0,)])
        finally:
            logs.execute(
                f"select pg_terminate_backend(pid) from pg_stat_activity where datname = '{logs.name}' "
                "and pid <> pg_backend_pid()"
            )
            await asyncio.wait({task}, timeout=10)
        for _ in range(50):
            if checked_out(plugin) == {"default": 0, "logs": 0}:
                break
            await asyncio.sleep(0.1)
        assert checked_out(plugin) == {"default": 0, "logs": 0}
    assert logs.fetch("select id from audit_entries") == []


class Later:
    """A sync handler's thread that the test lets go on after its request was cancelled."""

    def __init__(self) -> None:
        self.started, self.go_on, self.finished = threading.Event(), threading.Event(), threading.Event()
        self.outcome: list[str] = []

    def reset(self) -> None:
        for step in (self.started, self.go_on, self.finished):
            step.clear()
        self.outcome.clear()


LATER = Later()


@post("/late/{how:str}", sync_to_thread=True)
def use_late(how: FromPath[str], logs_db_session: NamedDependency[Session]) -> None:
    if how.startswith("touched"):
        logs_db_session.in_transaction()  # set up, but holding no connection
    LATER.started.set()
    LATER.go_on.wait(10)  # the request is cancelled meanwhile: this thread is between two operations
    try:
        if how.endswith("commit"):
            logs_db_session.add(AuditEntry(id=1, message=how))
            logs_db_session.commit()
        else:
            logs_db_session.connection().execute(text("select 1"))
        LATER.outcome.append("no error")
    except Exception as exc:
        LATER.outcome.append(type(exc).__name__)
    finally:
        LATER.finished.set()


@pytest.mark.postgresql
@pytest.mark.parametrize("how", ["unused-commit", "unused-connection", "touched-commit", "touched-connection"])
async def test_a_sync_handler_going_on_after_its_request_was_cancelled_is_refused(
    new_db: Callable[[str], Database], how: str
) -> None:
    db, logs = new_db("postgresql"), new_db("postgresql")
    plugin = make_plugin({"default": db, "logs": logs}, sync=True)
    app = Litestar(route_handlers=[use_late], plugins=[plugin], logging_config=None)
    LATER.reset()
    async with app.lifespan():
        task = asyncio.create_task(asgi.http(app, "POST", f"/late/{how}"))
        while not LATER.started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        LATER.go_on.set()
        while not LATER.finished.is_set():
            await asyncio.sleep(0.01)
        assert checked_out(plugin) == {"default": 0, "logs": 0}
    assert LATER.outcome == ["LifecycleError"]
    assert logs.fetch("select id from audit_entries") == []


# -- writes after the transaction was settled ---------------------------------------------------------


@post("/background/{name:str}")
async def background(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> Response[None]:
    db_session.add(Account(name=name))

    async def audit_later() -> None:
        db_session.add(AuditEntry(message=f"{name} (background)"))
        await db_session.flush()

    return Response(None, status_code=201, background=BackgroundTask(audit_later))


LATE_WRITES: dict[str, Callable[[], Executable]] = {
    "text": lambda: text("insert into audit_entries (message) values ('after response')"),
    # A leading comment, then a WITH clause: still a write, read as the sandbox reads SQL.
    "disguised": lambda: text(
        "/* audit */ with m as (select 'hidden' as message) insert into audit_entries (message) select message from m"
    ),
    # text().columns() types a text statement's rows (a TextualSelect, is_select whatever its SQL is).
    "typed": lambda: text("insert into audit_entries (message) values ('typed') returning id").columns(id=Integer),
    # select().from_statement() runs whatever it wraps.
    "from-statement": lambda: select(AuditEntry).from_statement(
        text("insert into audit_entries (message) values ('from a statement') returning id, message")
    ),
    "ddl": lambda: DDL("create table late_table (a integer)"),
}
"""Writes an ``after_response`` hook tries after the settle, by the path's ``how``."""


async def write_late(request: Request[Any, Any, Any]) -> None:
    session: AsyncSession = request.state.session
    await session.execute(LATE_WRITES[request.path_params["how"]]())


async def audit_after_response(request: Request[Any, Any, Any]) -> None:
    session: AsyncSession = request.state.session
    await session.execute(LATE_WRITES["text"]())


@post("/late/{how:str}/{name:str}", after_response=write_late)
async def late(
    name: FromPath[str], request: Request[Any, Any, Any], logs_db_session: NamedDependency[AsyncSession]
) -> None:
    request.state.session = logs_db_session
    logs_db_session.add(AuditEntry(message=name))


@get("/streamed-write")
async def streamed_write(db_session: NamedDependency[AsyncSession]) -> Stream:
    async def body() -> AsyncIterator[bytes]:
        yield b"writing\n"
        db_session.add(AuditEntry(message="from the body"))
        await db_session.commit()
        yield b"done\n"

    return Stream(body())


@pytest.mark.parametrize("kind", KINDS[:2])
async def test_writes_after_the_transaction_was_settled_raise_instead_of_vanishing(
    kind: str, new_db: Callable[[str], Database]
) -> None:
    db, logs = new_db(kind), new_db(kind)
    plugin = make_plugin({"default": db, "logs": logs})
    handlers = [background, late, streamed_write]
    app = Litestar(route_handlers=handlers, plugins=[plugin], logging_config=None)
    async with app.lifespan():
        paths = (
            "/background/ada",
            "/late/text/bob",
            "/late/disguised/cy",
            "/late/typed/di",
            "/late/from-statement/ed",
            "/late/ddl/flo",
        )
        for path in paths:
            sent: list[dict[str, Any]] = []
            error = await raised_by(asgi.http(app, "POST", path, on_send=sent.append))
            assert caused_by(error, LifecycleError), path
            assert next(m["status"] for m in sent if m["type"] == "http.response.start") == 201
        error = await raised_by(asgi.http(app, "GET", "/streamed-write"))
        assert caused_by(error, LifecycleError)
        assert checked_out(plugin) == {"default": 0, "logs": 0}
    assert names(db) == ["ada"]
    assert messages(logs) == ["bob", "cy", "di", "ed", "flo"]  # what the handlers wrote, committed with their requests
    while not isinstance(error, LifecycleError):
        error = error.__cause__ or error.exceptions[0]  # type: ignore[attr-defined]
    assert str(error) == (
        "a flush after this session's transaction was settled (its request's response had started, or its "
        "plugin.transaction() block had ended): it would never be committed. Do background work in a "
        "transaction of its own: `async with plugin.transaction() as session:` (`with` in sync apps)"
    )


@post("/untouched-then-background/{name:str}")
async def untouched_then_background(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> Response[None]:
    async def write_later() -> None:  # the session's first use of all
        db_session.add(Account(name=name))
        await db_session.flush()

    return Response(None, status_code=201, background=BackgroundTask(write_later))


@post("/untouched-then-after-response/{name:str}", after_response=audit_after_response)
async def untouched_then_after_response(
    name: FromPath[str], request: Request[Any, Any, Any], logs_db_session: NamedDependency[AsyncSession]
) -> None:
    request.state.session = logs_db_session


@get("/untouched-then-streamed-write")
async def untouched_then_streamed_write(db_session: NamedDependency[AsyncSession]) -> Stream:
    async def body() -> AsyncIterator[bytes]:
        yield b"writing\n"
        await db_session.execute(text("insert into accounts (name) values ('from the body')"))
        yield b"done\n"

    return Stream(body())


@pytest.mark.parametrize("kind", KINDS[:2])
async def test_a_session_first_used_after_the_response_started_cannot_write_either(
    kind: str, new_db: Callable[[str], Database]
) -> None:
    # A declared session the handler never touched is settled without a commit when the response starts
    # (nothing to settle): its first use afterwards must be refused like any other late write.
    db, logs = new_db(kind), new_db(kind)
    plugin = make_plugin({"default": db, "logs": logs})
    handlers = [untouched_then_background, untouched_then_after_response, untouched_then_streamed_write]
    app = Litestar(route_handlers=handlers, plugins=[plugin], logging_config=None)
    async with app.lifespan():
        for method, path in (
            ("POST", "/untouched-then-background/ada"),
            ("POST", "/untouched-then-after-response/bob"),
            ("GET", "/untouched-then-streamed-write"),
        ):
            sent: list[dict[str, Any]] = []
            error = await raised_by(asgi.http(app, method, path, on_send=sent.append))
            assert caused_by(error, LifecycleError), path
            assert next(m["status"] for m in sent if m["type"] == "http.response.start") in (200, 201)
        assert checked_out(plugin) == {"default": 0, "logs": 0}
    assert names(db) == []
    assert messages(logs) == []


# -- objects stay readable after the commit -----------------------------------------------------------


@get("/accounts/{name:str}/stream")
async def stream_account(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> Stream:
    account = (await db_session.scalars(select(Account).where(Account.name == name))).one()

    async def body() -> AsyncIterator[bytes]:
        yield b"name="
        yield account.name.encode()  # after the commit: the attribute must not need a new query

    return Stream(body())


@pytest.mark.parametrize("kind", KINDS)
async def test_a_streaming_body_reads_objects_the_handler_loaded(kind: str, new_db: Callable[[str], Database]) -> None:
    db = new_db(kind)
    db.execute("create table accounts (id integer primary key, name varchar(40) unique)")
    db.execute("insert into accounts (id, name) values (1, 'ada')")
    plugin = make_plugin({"default": db, "logs": new_db(kind)}, create_all=False)
    app = Litestar(route_handlers=[stream_account], plugins=[plugin], logging_config=None)
    async with AsyncTestClient(app) as client:
        response = await client.get("/accounts/ada/stream")
    assert (response.status_code, response.text) == (200, "name=ada")


# -- get_bind() without a connection ------------------------------------------------------------------


@post("/dialect-then-write/{name:str}")
async def dialect_then_write(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> dict[str, str]:
    # What advanced-alchemy's repositories do in their constructor: ask for the bind, take no connection.
    dialect = db_session.get_bind(AuditEntry).dialect.name
    db_session.add(Account(name=name))
    return {"logs dialect": dialect}


@pytest.mark.parametrize("kind", KINDS)
async def test_asking_get_bind_for_a_dialect_does_not_make_a_down_bind_count(
    kind: str, new_db: Callable[[str], Database]
) -> None:
    db = new_db(kind)
    Account.__table__.create(create_engine(db.url(sync=True), poolclass=NullPool))
    # The logs bind points at a port where nothing listens: any connection to it would fail.
    binds = {"default": db.url(), "logs": "postgresql+asyncpg://nobody@127.0.0.1:9/down"}
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds=binds, base=(Base, logs_metadata)))
    app = Litestar(route_handlers=[dialect_then_write], plugins=[plugin], logging_config=None)
    async with AsyncTestClient(app) as client:
        response = await client.post("/dialect-then-write/ada")
    assert (response.status_code, response.json()) == (201, {"logs dialect": "postgresql"})
    assert names(db) == ["ada"]


# -- a rollback that fails ----------------------------------------------------------------------------


@post("/rejected/{name:str}")
async def rejected(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> Response[dict[str, str]]:
    db_session.add(Account(name=name))
    await db_session.flush()
    return Response({"error": "rejected"}, status_code=422)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_failing_rollback_after_a_4xx_still_answers_the_4xx(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    db = new_db(kind)
    plugin = make_plugin({"default": db, "logs": new_db(kind)})
    app = Litestar(route_handlers=[rejected, ok], plugins=[plugin], logging_config=None)
    caplog.set_level(logging.WARNING, logger="plugin")
    async with app.lifespan():
        engine = plugin.engines.sync_engine("default")

        def broken_rollback(_connection: Any) -> None:
            event.remove(engine, "rollback", broken_rollback)
            raise ConnectionResetError("the server went away during ROLLBACK")

        event.listen(engine, "rollback", broken_rollback)
        exchange = await asgi.http(app, "POST", "/rejected/ada")
        assert (exchange.status, exchange.json()) == (422, {"error": "rejected"})
        assert checked_out(plugin) == {"default": 0, "logs": 0}
        assert (await asgi.http(app, "POST", "/ok/bob")).status == 201
    assert names(db) == ["bob"]
    assert "rolling back a session failed; invalidating its connections" in [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_statement_sent_to_an_engine_of_the_apps_own_is_not_refused(
    kind: str, new_db: Callable[[str], Database]
) -> None:
    db, other = new_db(kind), new_db(kind)
    engine = create_async_engine(other.url(), poolclass=NullPool)  # not one of the plugin's binds

    @post("/elsewhere/{name:str}")
    async def elsewhere(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> dict[str, int]:
        db_session.add(Account(name=name))
        seven = await db_session.scalar(text("select 7"), bind_arguments={"bind": engine.sync_engine})
        return {"seven": int(seven or 0)}

    plugin = make_plugin({"default": db, "logs": new_db(kind)})
    app = Litestar(route_handlers=[elsewhere], plugins=[plugin], logging_config=None)
    async with app.lifespan():
        exchange = await asgi.http(app, "POST", "/elsewhere/ada")
        assert (exchange.status, exchange.json()) == (201, {"seven": 7})
        assert checked_out(plugin) == {"default": 0, "logs": 0}
    await engine.dispose()
    assert names(db) == ["ada"]


# -- use after the request ended ----------------------------------------------------------------------


@listener("signed_up")
async def count_accounts_later(session: AsyncSession, outcome: list[str]) -> None:
    await asyncio.sleep(0.2)  # the request has ended meanwhile: its sessions were closed
    try:
        outcome.append(str(await session.scalar(select(func.count()).select_from(Account))))
    except LifecycleError as exc:
        outcome.append(str(exc))


@post("/sign-up/{name:str}")
async def sign_up(
    name: FromPath[str], request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> None:
    db_session.add(Account(name=name))
    request.app.emit("signed_up", session=db_session, outcome=request.app.state.outcome)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_session_used_after_its_request_ended_raises_instead_of_holding_a_connection(
    kind: str, new_db: Callable[[str], Database]
) -> None:
    db = new_db(kind)
    plugin = make_plugin({"default": db, "logs": new_db(kind)})
    app = Litestar(route_handlers=[sign_up], listeners=[count_accounts_later], plugins=[plugin], logging_config=None)
    app.state.outcome = outcome = []
    async with app.lifespan():
        assert (await asgi.http(app, "POST", "/sign-up/ada")).status == 201
        await asyncio.sleep(0.5)
        assert checked_out(plugin) == {"default": 0, "logs": 0}
    assert outcome == [
        "session.scalar() after this request (or unit of work) ended: its sessions were closed, and a "
        "connection taken now would never be given back. Do later work in a transaction of its own: "
        "`async with plugin.transaction() as session:` (`with` in sync apps)"
    ]
    assert names(db) == ["ada"]
