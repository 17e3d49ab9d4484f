"""What a failed or cut-short commit says about connections that are not a bind's: engines outside the
binds (``bind_arguments={"bind": engine}``) and read replicas (plugin/commit.py).

Such a connection commits after every bind has, by itself, so the ERROR line, ``CommitError`` and the
WARNING about a lost response name each write as it fared: committed, rolled back or unknown, never
``committed: (none)`` of a committed write. SQLite, PostgreSQL and MariaDB; a lost COMMIT is in
test_commit_faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy import Engine, String, event, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, object_session
from sqlalchemy.orm.attributes import flag_dirty

from plugin import BindConfig, SQLAlchemyAsyncConfig, SQLAlchemyPlugin, SQLAlchemySyncConfig
from tests.databases import KINDS
from tests.plugin import asgi
from tests.plugin.helpers import cancelled_while_giving_way
from tests.plugin.models import Account, AuditEntry, logs_metadata
from tests.plugin.models import Base as ModelsBase

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from sqlalchemy.engine import Connection

    from tests.databases import Database

pytestmark = pytest.mark.anyio

OUTSIDE: dict[str, AsyncEngine] = {}
"""The engines outside the binds the handlers write through, by name (set by :func:`serving`)."""


async def insert_a_thing(session: AsyncSession, engine: str = "engine") -> None:
    """One row into ``things`` through the engine outside the binds named ``engine``."""
    insert = text("insert into things (name) values ('ada')")
    await session.execute(insert, bind_arguments={"bind": OUTSIDE[engine].sync_engine})


@post("/outside/{also_a_bind:str}")
async def write_outside(db_session: NamedDependency[AsyncSession], also_a_bind: FromPath[str]) -> None:
    if also_a_bind == "yes":
        db_session.add(Account(name="ada"))
    await insert_a_thing(db_session)


@post("/outside-twice/{also_a_bind:str}")
async def write_outside_twice(
    db_session: NamedDependency[AsyncSession],
    logs_db_session: NamedDependency[AsyncSession],
    also_a_bind: FromPath[str],
) -> None:
    """Each of the request's two sessions writes through an engine outside the binds of its own."""
    if also_a_bind == "yes":
        db_session.add(Account(name="ada"))
    await insert_a_thing(db_session, "engine")
    await insert_a_thing(logs_db_session, "second")


@post("/outside-on-two-engines")
async def write_outside_on_two_engines(db_session: NamedDependency[AsyncSession]) -> None:
    """One session writes to the default bind and through two engines outside the binds, in this order."""
    db_session.add(Account(name="ada"))
    await insert_a_thing(db_session, "engine")
    await insert_a_thing(db_session, "second")


@get("/read-a-replica-then-write")  # a safe method reads from replicas (until it writes): a GET that writes
async def read_a_replica_then_write(db_session: NamedDependency[AsyncSession]) -> None:
    await db_session.execute(select(Account))  # the replica's connection: not a bind's, and nothing written
    db_session.add(Account(name="ada"))


@get("/read-a-replica-then-log")
async def read_a_replica_then_log(db_session: NamedDependency[AsyncSession]) -> None:
    await db_session.execute(select(Account))
    db_session.add(AuditEntry(message="seen"))


HANDLERS = [write_outside, write_outside_twice, write_outside_on_two_engines]


def app_on_two_binds(
    kind: str, new_db: Callable[[str], Database], handlers: list[Any] = HANDLERS, *, replica: bool = False
) -> tuple[Litestar, SQLAlchemyPlugin[Any], Database, Database]:
    """An app on two binds (``default``, with itself as its replica when asked, and ``logs``), and their
    databases."""
    db, logs = new_db(kind), new_db(kind)
    binds = {"default": BindConfig(url=db.url(), replicas=[db.url()] if replica else []), "logs": logs.url()}
    plugin = SQLAlchemyPlugin(
        config=SQLAlchemyAsyncConfig(binds=binds, base=(ModelsBase, logs_metadata), create_all=True)
    )
    return Litestar(route_handlers=handlers, plugins=[plugin], logging_config=None), plugin, db, logs


def things(kind: str, new_db: Callable[[str], Database]) -> Database:
    """A database for an engine outside the binds, with its table ``things``."""
    database = new_db(kind)
    database.execute("create table things (name varchar(20))")
    return database


@contextlib.asynccontextmanager
async def serving(app: Litestar, **outside: Database) -> AsyncIterator[None]:
    """The app started, with an engine outside its binds on each database of ``outside`` (``OUTSIDE``)."""
    OUTSIDE.update({name: create_async_engine(database.url()) for name, database in outside.items()})
    try:
        async with app.lifespan():
            yield
    finally:
        for name in outside:
            await OUTSIDE.pop(name).dispose()


@contextlib.contextmanager
def listening(target: Any, identifier: str, listener: Callable[..., None]) -> Iterator[None]:
    """``listener`` listens to ``identifier`` events of ``target`` meanwhile."""
    event.listen(target, identifier, listener)
    try:
        yield
    finally:
        event.remove(target, identifier, listener)


def refusing_commits(refuse: Callable[[Connection], bool]) -> contextlib.AbstractContextManager[None]:
    """Every COMMIT of a connection ``refuse`` picks raises ``RuntimeError("COMMIT refused")`` meanwhile."""

    def listener(connection: Connection) -> None:
        if refuse(connection):
            raise RuntimeError("COMMIT refused")

    return listening(Engine, "commit", listener)


def failing_after_commit(session: Session) -> None:
    raise RuntimeError("after_commit failed")


def on(database: Database) -> Callable[[Connection], bool]:
    """Picks the connections to ``database``."""
    name = database.url().database
    return lambda connection: connection.engine.url.database == name


def logged(caplog: pytest.LogCaptureFixture, level: int = logging.ERROR) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


@pytest.mark.parametrize("committed", ["'(an engine outside the binds)'", "'default', '(an engine outside the binds)'"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_write_outside_the_binds_cancelled_while_giving_way_is_named_in_the_warning(
    kind: str,
    committed: str,
    new_db: Callable[[str], Database],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, _, db, _ = app_on_two_binds(kind, new_db)
    other = things(kind, new_db)
    caplog.set_level(logging.WARNING, logger="plugin")
    monkeypatch.setattr("plugin.middleware.give_way", cancelled_while_giving_way)
    also_a_bind = "yes" if "default" in committed else "no"
    async with serving(app, engine=other):
        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(asgi.http(app, "POST", f"/outside/{also_a_bind}"))
    assert other.fetch("select name from things") == [("ada",)]
    assert db.fetch("select name from accounts") == ([("ada",)] if also_a_bind == "yes" else [])
    assert logged(caplog, logging.WARNING) == [
        f"the task was cancelled while its response was starting, after its transaction committed: {committed}"
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_read_from_a_replica_is_not_named_as_a_write_outside_the_binds(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _, db, _ = app_on_two_binds(kind, new_db, [read_a_replica_then_write], replica=True)
    caplog.set_level(logging.WARNING, logger="plugin")
    monkeypatch.setattr("plugin.middleware.give_way", cancelled_while_giving_way)
    async with serving(app):
        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(asgi.http(app, "GET", "/read-a-replica-then-write"))
    assert db.fetch("select name from accounts") == [("ada",)]
    assert logged(caplog, logging.WARNING) == [
        "the task was cancelled while its response was starting, after its transaction committed: 'default'"
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_replica_s_commit_failing_after_the_bind_committed_says_the_bind_committed(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    app, plugin, _, logs = app_on_two_binds(kind, new_db, [read_a_replica_then_log], replica=True)
    caplog.set_level(logging.ERROR, logger="plugin")
    async with serving(app):
        replica = plugin.engines.replicas("default")[0].sync_engine  # type: ignore[union-attr]
        with refusing_commits(lambda connection: connection.engine is replica):
            status = (await asgi.http(app, "GET", "/read-a-replica-then-log")).status
    assert status == 500
    assert logs.fetch("select message from audit_entries") == [("seen",)]  # the bind committed first
    assert logged(caplog) == [
        "commit (after every bind committed) failed: RuntimeError: COMMIT refused; committed: 'logs'; "
        "rolled back: (none)"
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_bind_beside_an_engine_outside_the_binds_commits_first_and_its_failure_commits_neither(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    app, _, db, _ = app_on_two_binds(kind, new_db)
    other = things(kind, new_db)
    caplog.set_level(logging.ERROR, logger="plugin")
    async with serving(app, engine=other):  # its create_all commits before anything is refused
        with refusing_commits(on(db)):
            # The sessions' own commit() takes its connections in no set order: a few requests try several.
            statuses = [(await asgi.http(app, "POST", "/outside/yes")).status for _ in range(5)]
    assert statuses == [500] * 5
    assert other.fetch("select name from things") == []  # the outside engine was rolled back, not committed
    assert db.fetch("select name from accounts") == []
    errors = [e for e in logged(caplog) if "COMMIT refused" in e]
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
    app, _, db, _ = app_on_two_binds(kind, new_db)
    other = things(kind, new_db)
    caplog.set_level(logging.ERROR, logger="plugin")
    async with serving(app, engine=other):
        with refusing_commits(on(other)):
            status = (await asgi.http(app, "POST", "/outside/yes")).status
    assert status == 500  # never a 2xx: half of the write was lost
    assert db.fetch("select name from accounts") == [("ada",)]  # the bind committed first, and the log says so
    assert other.fetch("select name from things") == []
    assert logged(caplog) == [
        "commit (after every bind committed) failed: RuntimeError: COMMIT refused; committed: 'default'; "
        "rolled back: '(an engine outside the binds)'"
    ]


@pytest.mark.parametrize("also_a_bind", ["yes", "no"])
@pytest.mark.parametrize("kind", KINDS)
async def test_writes_outside_the_binds_that_fare_differently_are_each_named_as_they_fared(
    kind: str, also_a_bind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    app, _, db, _ = app_on_two_binds(kind, new_db)
    other, second = things(kind, new_db), things(kind, new_db)
    caplog.set_level(logging.ERROR, logger="plugin")
    outside = {other.url().database, second.url().database}
    commits: list[object] = []

    def the_second_outside_commit(connection: Connection) -> bool:
        if connection.engine.url.database in outside:
            commits.append(connection)
        return len(commits) == 2  # whichever session commits second: the first one's write stays committed

    async with serving(app, engine=other, second=second):
        with refusing_commits(the_second_outside_commit):
            status = (await asgi.http(app, "POST", f"/outside-twice/{also_a_bind}")).status
    assert status == 500
    assert db.fetch("select name from accounts") == ([("ada",)] if also_a_bind == "yes" else [])
    assert sorted(other.fetch("select name from things") + second.fetch("select name from things")) == [("ada",)]
    stage, committed = (
        ("commit (after every bind committed)", "'default', ") if also_a_bind == "yes" else ("commit", "")
    )
    assert logged(caplog) == [
        f"{stage} failed: RuntimeError: COMMIT refused; committed: {committed}'(an engine outside the binds)'; "
        "rolled back: '(an engine outside the binds)'"
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_one_session_s_writes_through_two_engines_outside_the_binds_are_each_named_as_they_fared(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    app, _, db, _ = app_on_two_binds(kind, new_db)
    other, second = things(kind, new_db), things(kind, new_db)
    caplog.set_level(logging.ERROR, logger="plugin")
    async with serving(app, engine=other, second=second):
        with refusing_commits(on(second)):
            status = (await asgi.http(app, "POST", "/outside-on-two-engines")).status
    assert status == 500
    assert db.fetch("select name from accounts") == [("ada",)]
    assert other.fetch("select name from things") == [("ada",)]  # committed before the second engine failed
    assert second.fetch("select name from things") == []
    assert logged(caplog) == [
        "commit (after every bind committed) failed: RuntimeError: COMMIT refused; committed: 'default', "
        "'(an engine outside the binds)'; rolled back: '(an engine outside the binds)'"
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_an_after_commit_listener_failing_once_everything_committed_says_everything_committed(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    app, _, db, _ = app_on_two_binds(kind, new_db)
    other = things(kind, new_db)
    caplog.set_level(logging.ERROR, logger="plugin")

    async with serving(app, engine=other):
        with listening(Session, "after_commit", failing_after_commit):
            status = (await asgi.http(app, "POST", "/outside/yes")).status
    assert status == 500
    assert db.fetch("select name from accounts") == [("ada",)]
    assert other.fetch("select name from things") == [("ada",)]
    assert logged(caplog) == [
        "commit (after every bind committed) failed: RuntimeError: after_commit failed; committed: 'default', "
        "'(an engine outside the binds)'; rolled back: (none)"
    ]


@post("/account")
async def add_account(db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(Account(name="ada"))


@pytest.mark.parametrize("kind", KINDS)
async def test_an_after_commit_listener_failing_on_a_single_bind_says_the_bind_committed(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    app, _, db, _ = app_on_two_binds(kind, new_db, [add_account])
    caplog.set_level(logging.ERROR, logger="plugin")

    async with serving(app):
        with listening(Session, "after_commit", failing_after_commit):
            status = (await asgi.http(app, "POST", "/account")).status
    assert status == 500
    assert db.fetch("select name from accounts") == [("ada",)]
    assert logged(caplog) == [
        "commit failed: RuntimeError: after_commit failed; committed: 'default'; rolled back: (none)"
    ]


JOINED: dict[str, Connection] = {}
"""A connection outside the binds in its caller's transaction, which ``/joined`` writes through."""


@post("/joined")
async def write_through_a_joined_connection(db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(Account(name="ada"))
    await db_session.execute(text("insert into things (name) values ('ada')"), bind_arguments={"bind": JOINED["c"]})


@pytest.mark.parametrize("kind", KINDS)
async def test_a_connection_outside_the_binds_in_its_caller_s_transaction_is_left_to_the_caller(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    """SQLAlchemy joins a connection that is in a transaction (here with a savepoint of its own, as in a
    savepoint open there): the session's commit releases its savepoint; the caller's transaction decides."""
    app, _, db, _ = app_on_two_binds(kind, new_db, [write_through_a_joined_connection])
    other = things(kind, new_db)
    caplog.set_level(logging.ERROR, logger="plugin")
    engine = create_async_engine(other.url())
    try:
        async with serving(app), engine.connect() as connection:
            caller = await connection.begin()
            await connection.begin_nested()
            JOINED["c"] = connection.sync_connection  # type: ignore[assignment]
            assert (await asgi.http(app, "POST", "/joined")).status == 201
            assert other.fetch("select name from things") == []  # not committed: the caller's transaction is open
            await caller.commit()
    finally:
        JOINED.clear()
        await engine.dispose()
    assert db.fetch("select name from accounts") == [("ada",)]
    assert other.fetch("select name from things") == [("ada",)]
    assert logged(caplog) == []


CALLER: dict[str, AsyncConnection] = {}
"""A connection of the ``logs`` bind's own engine, in its caller's transaction: ``/in-the-caller-s-transaction``
writes through it (``bind_arguments={"bind": ...}``), and on the ``default`` bind too when asked."""


@post("/in-the-caller-s-transaction/{also_default:str}")
async def write_in_the_caller_s_transaction(
    also_default: FromPath[str], db_session: NamedDependency[AsyncSession]
) -> None:
    if also_default == "yes":
        db_session.add(Account(name="ada"))
    statement = text("insert into audit_entries (message) values ('the caller decides')")
    await db_session.execute(statement, bind_arguments={"bind": CALLER["c"].sync_connection})


def _async(engine: object) -> AsyncEngine:
    assert isinstance(engine, AsyncEngine)
    return engine


@pytest.mark.parametrize("also_default", ["yes", "no"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_bind_s_connection_in_its_caller_s_transaction_is_neither_committed_nor_named(
    kind: str,
    also_default: str,
    new_db: Callable[[str], Database],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQLAlchemy joins a connection passed as ``bind`` that is in a transaction without committing it (the
    caller's). Beside a connection of another bind the plugin used to commit it in bind order, and alone it
    was reported committed: here the request is cancelled while giving way, whose WARNING names what committed."""
    app, plugin, db, logs = app_on_two_binds(kind, new_db, [write_in_the_caller_s_transaction])
    caplog.set_level(logging.WARNING, logger="plugin")
    monkeypatch.setattr("plugin.middleware.give_way", cancelled_while_giving_way)
    try:
        async with serving(app), _async(plugin.engines.engine("logs")).connect() as connection:
            caller = await connection.begin()
            CALLER["c"] = connection
            with pytest.raises(asyncio.CancelledError):
                await asyncio.create_task(asgi.http(app, "POST", f"/in-the-caller-s-transaction/{also_default}"))
            assert caller.is_active  # still the caller's to decide
            await caller.rollback()
    finally:
        CALLER.clear()
    assert logs.fetch("select message from audit_entries") == []
    assert db.fetch("select name from accounts") == ([("ada",)] if also_default == "yes" else [])
    warned = "after its transaction committed: 'default'"
    assert [m.split(", ")[-1] for m in logged(caplog, logging.WARNING)] == ([warned] if also_default == "yes" else [])


LISTENER_DUPLICATES = {
    # the bind the before_commit listener's row fails on: (that row, the binds rolled back)
    "default": (lambda: Account(name="ada"), "'default'"),
    "logs": (lambda: AuditEntry(id=1, message="account added"), "'default', 'logs'"),
}


@pytest.mark.parametrize("failing", LISTENER_DUPLICATES)
@pytest.mark.parametrize("kind", KINDS)
async def test_a_flush_failing_inside_the_session_s_commit_says_nothing_committed_and_names_its_bind(
    kind: str, failing: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    """The request wrote on ``default`` only; a before_commit listener's row fails its flush inside commit(),
    which rolls everything back first: on the request's bind, or on another one."""
    app, _, db, logs = app_on_two_binds(kind, new_db, [add_account])
    caplog.set_level(logging.ERROR, logger="plugin")
    duplicate, rolled_back = LISTENER_DUPLICATES[failing]

    def add_a_duplicate(session: Session) -> None:
        session.add(duplicate())

    async with serving(app):
        logs.execute("insert into audit_entries (id, message) values (1, 'taken')")
        with listening(Session, "before_commit", add_a_duplicate):
            status = (await asgi.http(app, "POST", "/account")).status
    assert status == 409
    assert db.fetch("select name from accounts") == []
    [message] = logged(caplog)
    assert message.startswith(f"commit failed on bind {failing!r}: IntegrityError")
    assert message.endswith(f"; committed: (none); rolled back: {rolled_back}")


@post("/account-and-audit")
async def add_account_and_audit(db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add_all([Account(name="ada"), AuditEntry(id=1, message="account added")])


@pytest.mark.parametrize("kind", KINDS)
async def test_a_flush_of_two_binds_names_the_bind_it_failed_on(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    app, _, db, logs = app_on_two_binds(kind, new_db, [add_account_and_audit])
    caplog.set_level(logging.ERROR, logger="plugin")
    async with serving(app):
        logs.execute("insert into audit_entries (id, message) values (1, 'taken')")
        status = (await asgi.http(app, "POST", "/account-and-audit")).status
    assert status == 409
    assert db.fetch("select name from accounts") == []
    [message] = logged(caplog)
    assert message.startswith("flush failed on bind 'logs': IntegrityError")
    assert message.endswith("; committed: (none); rolled back: 'default', 'logs'")


class SharedBase(DeclarativeBase):
    pass


class Member(SharedBase):
    __tablename__ = "members"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)


@post("/member")
async def add_member(db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(Member(name="ada"))


async def test_two_apps_sharing_an_engine_each_name_their_own_bind(
    new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    shared = create_async_engine(new_db("sqlite").url())
    caplog.set_level(logging.ERROR, logger="plugin")
    configs = {
        key: SQLAlchemyAsyncConfig(binds={key: shared}, default_bind=key, base=SharedBase, create_all=True)
        for key in ("default", "main")
    }
    apps = {
        key: Litestar(route_handlers=[add_member], plugins=[SQLAlchemyPlugin(config=config)], logging_config=None)
        for key, config in configs.items()
    }
    async with apps["default"].lifespan(), apps["main"].lifespan():
        assert (await asgi.http(apps["default"], "POST", "/member")).status == 201
        assert (await asgi.http(apps["default"], "POST", "/member")).status == 409
        assert (await asgi.http(apps["main"], "POST", "/member")).status == 409
    await shared.dispose()
    first, second = logged(caplog)
    assert first.startswith("flush failed on bind 'default': IntegrityError")
    assert first.endswith("; committed: (none); rolled back: 'default'")
    assert second.startswith("flush failed on bind 'main': IntegrityError")
    assert second.endswith("; committed: (none); rolled back: 'main'")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_database_error_a_failure_was_raised_from_does_not_name_its_bind(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    """A before_commit listener's own check fails on ``logs`` through a connection of its own, and the listener
    raises an error of its own from it: no bind's statement failed, so the ERROR names no bind (not ``logs``)."""
    app, plugin, db, _ = app_on_two_binds(kind, new_db, [add_account])
    caplog.set_level(logging.ERROR, logger="plugin")

    def check_the_audit_log(session: Session) -> None:
        try:
            with plugin.engines.sync_engine("logs").connect() as connection:
                connection.execute(text("select * from no_such_table"))
        except DBAPIError as exc:
            raise ValueError("the audit log is unavailable") from exc

    async with serving(app):
        with listening(Session, "before_commit", check_the_audit_log):
            status = (await asgi.http(app, "POST", "/account")).status
    assert status == 500
    assert db.fetch("select name from accounts") == []
    assert logged(caplog) == [
        "commit failed: ValueError: the audit log is unavailable; committed: (none); rolled back: 'default'"
    ]


# -- what before_commit listeners write is part of the unit of work's commit -------------------------


def audit_the_commit(session: Session) -> None:
    """A before_commit listener that writes on the ``logs`` bind whatever the request wrote."""
    session.add(AuditEntry(id=7, message="committed"))


@pytest.mark.parametrize("kind", KINDS)
async def test_a_bind_a_before_commit_listener_wrote_to_commits_in_bind_order_and_is_reported(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request wrote on ``default`` only; its listener's row goes to ``logs``. Both commit, in bind order,
    and the WARNING about the lost response names both."""
    app, _, db, logs = app_on_two_binds(kind, new_db, [add_account])
    caplog.set_level(logging.WARNING, logger="plugin")
    monkeypatch.setattr("plugin.middleware.give_way", cancelled_while_giving_way)
    order: list[str | None] = []
    async with serving(app):
        with (
            listening(Session, "before_commit", audit_the_commit),
            listening(Engine, "commit", lambda connection: order.append(connection.engine.url.database)),
            pytest.raises(asyncio.CancelledError),
        ):
            await asyncio.create_task(asgi.http(app, "POST", "/account"))
    assert db.fetch("select name from accounts") == [("ada",)]
    assert logs.fetch("select message from audit_entries") == [("committed",)]
    # default first (then each connection's fresh, empty transaction the session's own commit() ends)
    assert list(dict.fromkeys(order)) == [db.url().database, logs.url().database]
    assert logged(caplog, logging.WARNING) == [
        "the task was cancelled while its response was starting, after its transaction committed: 'default', 'logs'"
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_bind_a_before_commit_listener_wrote_to_is_not_committed_when_the_first_bind_fails(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    """The default bind commits first: when its COMMIT fails, the listener's row on ``logs`` is rolled back
    with it, and the ERROR says so (SQLAlchemy's own commit() commits its connections in no fixed order)."""
    app, _, db, logs = app_on_two_binds(kind, new_db, [add_account])
    caplog.set_level(logging.ERROR, logger="plugin")
    async with serving(app):
        with listening(Session, "before_commit", audit_the_commit), refusing_commits(on(db)):
            status = (await asgi.http(app, "POST", "/account")).status
    assert status == 500
    assert db.fetch("select name from accounts") == []
    assert logs.fetch("select message from audit_entries") == []
    assert logged(caplog) == [
        "commit failed on bind 'default': RuntimeError: COMMIT refused; committed: (none); "
        "rolled back: 'default', 'logs'"
    ]


@post("/account-and-audit-2")
async def add_account_and_a_second_audit(db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add_all([Account(name="ada"), AuditEntry(id=2, message="account added")])


@pytest.mark.parametrize("kind", KINDS)
async def test_a_before_commit_listener_s_failing_row_leaves_a_two_bind_request_uncommitted(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    """The request wrote on both binds; its listener's row fails on ``logs``. It is part of the request's
    transaction, so nothing commits (it used to run in a transaction of its own, after both binds had
    committed the request's rows)."""
    app, _, db, logs = app_on_two_binds(kind, new_db, [add_account_and_a_second_audit])
    caplog.set_level(logging.ERROR, logger="plugin")
    async with serving(app):
        logs.execute("insert into audit_entries (id, message) values (7, 'taken')")
        with listening(Session, "before_commit", audit_the_commit):
            status = (await asgi.http(app, "POST", "/account-and-audit-2")).status
    assert status == 409
    assert db.fetch("select name from accounts") == []
    assert logs.fetch("select id, message from audit_entries") == [(7, "taken")]
    [message] = logged(caplog)
    assert message.startswith("commit failed on bind 'logs': IntegrityError")
    assert message.endswith("; committed: (none); rolled back: 'default', 'logs'")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_before_commit_listener_vetoes_a_two_bind_request(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that raises stops the commit before any bind commits (it used to run after both had); no bind
    failed, so none is blamed for it."""
    app, _, db, logs = app_on_two_binds(kind, new_db, [add_account_and_a_second_audit])
    caplog.set_level(logging.ERROR, logger="plugin")

    def veto(session: Session) -> None:
        raise RuntimeError("vetoed")

    async with serving(app):
        with listening(Session, "before_commit", veto):
            status = (await asgi.http(app, "POST", "/account-and-audit-2")).status
    assert status == 500
    assert db.fetch("select name from accounts") == []
    assert logs.fetch("select id from audit_entries") == []
    assert logged(caplog) == ["commit failed: RuntimeError: vetoed; committed: (none); rolled back: 'default', 'logs'"]


@pytest.mark.parametrize("how", ["rollback", "close", "commit"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_before_commit_listener_that_ends_the_transaction_fails_the_commit(
    kind: str, how: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    """SQLAlchemy refuses commit(), rollback() and close() inside commit(); the settle runs the listeners
    before it under the same guard: the client gets a 500, and nothing passes for what it is not (a commit
    that rolled back, a rollback of rows a listener's commit() wrote)."""
    app, _, db, _ = app_on_two_binds(kind, new_db, [add_account])
    caplog.set_level(logging.ERROR, logger="plugin")
    calls: list[Session] = []

    def end_it(session: Session) -> None:
        calls.append(session)
        getattr(session, how)()

    async with serving(app):
        with listening(Session, "before_commit", end_it):
            status = (await asgi.http(app, "POST", "/account")).status
    assert status == 500
    assert len(calls) == 1
    assert db.fetch("select name from accounts") == []
    [message] = logged(caplog)
    assert message.startswith(
        f"commit failed: IllegalStateChangeError: Method '{how}()' can't be called here; "
        "method 'before_commit()' is already in progress"
    )
    assert message.endswith("; committed: (none); rolled back: 'default'")


@get("/accounts")
async def count_accounts(db_session: NamedDependency[AsyncSession]) -> int:
    return len((await db_session.scalars(select(Account))).all())


@pytest.mark.parametrize("kind", KINDS)
async def test_a_request_that_only_read_but_whose_listener_wrote_is_settled_and_reported_as_a_write(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read commits without the shield and reports no write; a listener's row makes it a write: shielded,
    and named in the WARNING about the lost response."""
    app, _, _, logs = app_on_two_binds(kind, new_db, [count_accounts])
    caplog.set_level(logging.WARNING, logger="plugin")
    monkeypatch.setattr("plugin.middleware.give_way", cancelled_while_giving_way)
    async with serving(app):
        with listening(Session, "before_commit", audit_the_commit), pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(asgi.http(app, "GET", "/accounts"))
    assert logs.fetch("select message from audit_entries") == [("committed",)]
    assert logged(caplog, logging.WARNING) == [  # the read's bind committed too, in bind order
        "the task was cancelled while its response was starting, after its transaction committed: 'default', 'logs'"
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_listener_s_write_in_a_request_that_only_read_commits_whole_when_cancelled_mid_commit(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    """The listener writes on both binds; the request is cancelled as the first bind commits. The shield
    keeps the settle going, so both binds commit, and the WARNING says so."""
    app, _, db, logs = app_on_two_binds(kind, new_db, [count_accounts])
    caplog.set_level(logging.WARNING, logger="plugin")
    armed = [True]

    def write_on_both(session: Session) -> None:
        session.add_all([Account(name="listener"), AuditEntry(id=7, message="committed")])

    def cancel_at_the_first_commit(connection: Connection) -> None:
        if armed and connection.engine.url.database == db.url().database:
            armed.clear()
            request.cancel()

    async with serving(app):
        with (
            listening(Session, "before_commit", write_on_both),
            listening(Engine, "commit", cancel_at_the_first_commit),
        ):
            request = asyncio.create_task(asgi.http(app, "GET", "/accounts"))
            with pytest.raises(asyncio.CancelledError):
                await request
    assert db.fetch("select name from accounts") == [("listener",)]
    assert logs.fetch("select message from audit_entries") == [("committed",)]
    assert logged(caplog, logging.WARNING) == [
        "the task was cancelled while its transaction was being settled; settled anyway: committed: 'default', 'logs'"
    ]


@pytest.mark.parametrize("listener_does", ["write", "read"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_request_that_only_read_cancelled_in_its_listener_commits_nothing_and_says_nothing(
    kind: str, listener_does: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    """A read commits in the request's own task, so a cancellation reaches it; one that lands in a
    ``before_commit`` listener (its row's INSERT, or a SELECT of its own) comes before any COMMIT. Nothing is
    committed, and no WARNING claims an unknown outcome (it used to)."""
    app, _, db, logs = app_on_two_binds(kind, new_db, [count_accounts])
    caplog.set_level(logging.WARNING, logger="plugin")
    armed: list[bool] = []

    def listener(session: Session) -> None:
        armed.append(True)
        if listener_does == "write":
            session.add(AuditEntry(id=7, message="committed"))
        else:
            session.execute(select(Account.id))

    def cancel_in_the_listener(connection: Connection, *_: object) -> None:
        if armed:
            armed.clear()
            request.cancel()

    async with serving(app):
        with (
            listening(Session, "before_commit", listener),
            listening(Engine, "before_cursor_execute", cancel_in_the_listener),
        ):
            request = asyncio.create_task(asgi.http(app, "GET", "/accounts"))
            with pytest.raises(asyncio.CancelledError):
                await request
        assert (await asgi.http(app, "GET", "/accounts")).status == 200  # the pools are sound
    assert not armed  # the cancellation did land in the listener
    assert logs.fetch("select message from audit_entries") == []
    assert db.fetch("select name from accounts") == []
    assert logged(caplog, logging.WARNING) == []


ROWS: dict[str, Any] = {}


@post("/account-and-audit-in-two-sessions")
async def add_in_two_sessions(
    db_session: NamedDependency[AsyncSession], logs_db_session: NamedDependency[AsyncSession]
) -> None:
    ROWS["account"], ROWS["audit"] = Account(name="ada"), AuditEntry(id=3, message="account added")
    db_session.add(ROWS["account"])
    logs_db_session.add(ROWS["audit"])


@pytest.mark.parametrize("kind", KINDS)
async def test_a_change_to_a_session_still_committing_is_an_error_not_lost(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    """One session's after_commit listener changes a row of the request's other session, which has flushed
    and not yet committed: that change would be dropped, so the commit fails, saying what did commit."""
    app, _, db, logs = app_on_two_binds(kind, new_db, [add_in_two_sessions])
    caplog.set_level(logging.ERROR, logger="plugin")

    def change_the_other(session: Session) -> None:
        for row in ROWS.values():
            other = object_session(row)
            if other is not None and other is not session and other.get_transaction() is not None:
                row.name = "changed"
                row.message = "changed"

    try:
        async with serving(app):
            with listening(Session, "after_commit", change_the_other):
                status = (await asgi.http(app, "POST", "/account-and-audit-in-two-sessions")).status
    finally:
        ROWS.clear()
    assert status == 500
    assert db.fetch("select name from accounts") == [("ada",)]
    assert logs.fetch("select message from audit_entries") == [("account added",)]
    [message] = logged(caplog)
    assert message.startswith("commit (after every bind committed) failed: LifecycleError: a session's objects were")
    assert message.endswith("; committed: 'default', 'logs'; rolled back: (none)")


@post("/account-sync", sync_to_thread=True)
def add_account_sync(db_session: NamedDependency[Session]) -> None:
    db_session.add(Account(name="ada"))


@pytest.mark.parametrize("kind", KINDS)
async def test_a_sync_app_s_listener_row_on_another_bind_is_rolled_back_when_the_first_bind_fails(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    """The same rule in a sync config, whose settle runs in a worker thread."""
    db, logs = new_db(kind), new_db(kind)
    config = SQLAlchemySyncConfig(
        binds={"default": db.url(sync=True), "logs": logs.url(sync=True)},
        base=(ModelsBase, logs_metadata),
        create_all=True,
    )
    app = Litestar(route_handlers=[add_account_sync], plugins=[SQLAlchemyPlugin(config=config)], logging_config=None)
    caplog.set_level(logging.ERROR, logger="plugin")
    async with app.lifespan():
        with listening(Session, "before_commit", audit_the_commit), refusing_commits(on(db)):
            assert (await asgi.http(app, "POST", "/account-sync")).status == 500
        assert (await asgi.http(app, "POST", "/account-sync")).status == 201  # without either: as usual
    assert db.fetch("select name from accounts") == [("ada",)]
    assert logs.fetch("select message from audit_entries") == []
    assert logged(caplog) == [
        "commit failed on bind 'default': RuntimeError: COMMIT refused; committed: (none); "
        "rolled back: 'default', 'logs'"
    ]


@pytest.mark.parametrize("act", ["change", "rollback", "close"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_before_commit_listener_touching_a_session_already_prepared_fails_before_any_commit(
    kind: str, act: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    """A request's two sessions run their listeners in turn; the second one's listener changes a row of the
    first, or ends its transaction, after the first was flushed for the commit: the change would not be
    committed, or the first session's rows would be gone, so nothing commits and the ERROR says so."""
    app, _, db, logs = app_on_two_binds(kind, new_db, [add_in_two_sessions])
    caplog.set_level(logging.ERROR, logger="plugin")
    seen: list[Session] = []

    def touch_the_first(session: Session) -> None:
        for earlier in seen:
            if act != "change":
                getattr(earlier, act)()
            for row in ROWS.values():
                if object_session(row) is earlier:
                    row.name = row.message = "changed"
        seen.append(session)

    try:
        async with serving(app):
            with listening(Session, "before_commit", touch_the_first):
                status = (await asgi.http(app, "POST", "/account-and-audit-in-two-sessions")).status
    finally:
        ROWS.clear()
    assert status == 500
    assert db.fetch("select name from accounts") == []
    assert logs.fetch("select message from audit_entries") == []
    [message] = logged(caplog)
    assert message.startswith(
        "commit failed: LifecycleError: a before_commit listener ended or changed another session of the unit of work"
    )
    assert message.endswith("; committed: (none); rolled back: 'default', 'logs'")


def stamp(_mapper: Any, _connection: Any, target: Any) -> None:
    """A ``before_update`` listener (an ``updated_at`` stamp, say): SQLAlchemy calls it for every dirty row a
    flush sees, whether a column's value changed or not."""
    if isinstance(target, Account):
        target.name = "stamped"
    else:
        target.message = "stamped"


@pytest.mark.parametrize("how", ["same value", "flag_dirty"])
@pytest.mark.parametrize("kind", KINDS)
async def test_an_after_commit_listener_marking_an_uncommitted_row_dirty_fails_the_request_even_with_no_new_value(
    kind: str, how: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    """An ``after_commit`` listener of the first session sets a row of the second, not committed yet, to the
    value it has, or flags it dirty: no column's value changed, but a flush of that row would run its
    ``before_update`` listener, which writes. The row is no longer flushed, so the request fails, saying what
    committed, rather than dropping that write behind a 201."""
    app, _, db, logs = app_on_two_binds(kind, new_db, [add_in_two_sessions])
    caplog.set_level(logging.ERROR, logger="plugin")
    touched: list[object] = []

    def touch_the_other(session: Session) -> None:
        for row in ROWS.values():
            other = object_session(row)
            if other is not None and other is not session and other.get_transaction() is not None:
                if how == "flag_dirty":
                    flag_dirty(row)
                elif isinstance(row, Account):
                    row.name = row.name
                else:
                    row.message = row.message
                touched.append(row)

    try:
        async with serving(app):
            with (
                listening(Session, "after_commit", touch_the_other),
                listening(Account, "before_update", stamp),
                listening(AuditEntry, "before_update", stamp),
            ):
                status = (await asgi.http(app, "POST", "/account-and-audit-in-two-sessions")).status
    finally:
        ROWS.clear()
    assert touched
    assert status == 500
    assert db.fetch("select name from accounts") == [("ada",)]
    assert logs.fetch("select message from audit_entries") == [("account added",)]
    [message] = logged(caplog)
    assert message.startswith("commit (after every bind committed) failed: LifecycleError: a session's objects were")
    assert message.endswith("; committed: 'default', 'logs'; rolled back: (none)")


@get("/read-both")
async def read_both(db_session: NamedDependency[AsyncSession], logs_db_session: NamedDependency[AsyncSession]) -> int:
    await db_session.scalars(select(Account))
    await logs_db_session.scalars(select(AuditEntry))
    return 2


@pytest.mark.parametrize("kind", KINDS)
async def test_a_read_cancelled_in_its_second_session_s_commit_says_the_outcome_is_unknown(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    """Two sessions read on replicas only, so each commits in its own ``commit()``: the first commits, and the
    second's COMMIT is cancelled. A COMMIT began, so the WARNING says the outcome is unknown (the settle
    records that it began committing, rather than guessing it afterwards from the sessions' state)."""
    db, logs = new_db(kind), new_db(kind)
    binds = {
        "default": BindConfig(url=db.url(), replicas=[db.url()]),
        "logs": BindConfig(url=logs.url(), replicas=[logs.url()]),
    }
    plugin = SQLAlchemyPlugin(
        config=SQLAlchemyAsyncConfig(binds=binds, base=(ModelsBase, logs_metadata), create_all=True)
    )
    app = Litestar(route_handlers=[read_both], plugins=[plugin], logging_config=None)
    caplog.set_level(logging.WARNING, logger="plugin")
    commits: list[str | None] = []

    def cancel_the_second_commit(connection: Connection) -> None:
        commits.append(connection.engine.url.database)
        if len(commits) == 2:
            request.cancel()

    async with serving(app):
        with listening(Engine, "commit", cancel_the_second_commit):
            request = asyncio.create_task(asgi.http(app, "GET", "/read-both"))
            with pytest.raises(asyncio.CancelledError):
                await request
    # the cancellation landed in the second COMMIT (the sessions commit in no fixed order: no bind is involved)
    assert sorted(commits) == sorted([db.url().database, logs.url().database])
    assert logged(caplog, logging.WARNING) == [
        "the task was cancelled while committing a unit of work that only read; the outcome is unknown on its "
        "read replicas"
    ]
