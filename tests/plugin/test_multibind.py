"""Requests that write to two binds: fixed commit order without two-phase, all-or-nothing with it.

A deferred foreign key makes a bind's COMMIT itself fail (the flush succeeds), which is the hard case:
one database may already have committed when the other refuses.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from sqlalchemy import ForeignKeyConstraint, String, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from plugin import SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from plugin.transactions import close_all, settle_all
from tests.databases import KINDS, require_prepared_transactions

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.databases import Database

pytestmark = pytest.mark.anyio


class LedgerBase(DeclarativeBase):
    pass


class Parent(LedgerBase):
    __tablename__ = "parents"
    id: Mapped[int] = mapped_column(primary_key=True)


class Entry(LedgerBase):
    """On the default bind; its parent must exist by COMMIT time (deferred foreign key; none on MariaDB)."""

    __tablename__ = "entries"
    __table_args__ = (
        ForeignKeyConstraint(["parent_id"], ["parents.id"], deferrable=True, initially="DEFERRED").ddl_if(
            dialect=("postgresql", "sqlite")
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(20))
    parent_id: Mapped[int | None]


class LogParent(LedgerBase):
    __tablename__ = "log_parents"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)


class LogEntry(LedgerBase):
    """On the logs bind, with the same deferred foreign key (MariaDB has no deferred constraints: none there)."""

    __tablename__ = "log_entries"
    __bind_key__ = "logs"
    __table_args__ = (
        ForeignKeyConstraint(["parent_id"], ["log_parents.id"], deferrable=True, initially="DEFERRED").ddl_if(
            dialect=("postgresql", "sqlite")
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(20))
    parent_id: Mapped[int | None]


@post("/write/{ref:str}/{broken:str}")
async def write_both(ref: FromPath[str], broken: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    """Writes one row per bind (``default-only``: no logs row); the bind named by ``broken`` gets a
    dangling foreign key, which fails at COMMIT."""
    db_session.add(Entry(ref=ref, parent_id=999 if broken.startswith("default") else None))
    if broken != "default-only":
        db_session.add(LogEntry(ref=ref, parent_id=999 if broken == "logs" else None))


def engine_for(db: Database) -> AsyncEngine:
    engine = create_async_engine(db.url())
    if db.kind == "sqlite":  # SQLite enforces foreign keys only when asked, per connection

        @event.listens_for(engine.sync_engine, "connect")
        def _foreign_keys_on(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("pragma foreign_keys = on")

    return engine


def app_for(default: Database, logs: Database, **options: Any) -> Litestar:
    config = SQLAlchemyAsyncConfig(
        binds={"default": engine_for(default), "logs": engine_for(logs)}, base=LedgerBase, create_all=True, **options
    )
    return Litestar(route_handlers=[write_both], plugins=[SQLAlchemyPlugin(config=config)], logging_config=None)


def refs(db: Database, table: str) -> list[str]:
    return [ref for (ref,) in db.fetch(f"select ref from {table} order by id")]


@pytest.mark.parametrize("kind", KINDS[:2])
async def test_second_bind_failing_after_the_first_committed(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    default, logs = new_db(kind), new_db(kind)
    caplog.set_level(logging.ERROR, logger="plugin")
    async with AsyncTestClient(app_for(default, logs)) as client:
        assert (await client.post("/write/fine/none")).status_code == 201
        response = await client.post("/write/half/logs")

    assert response.status_code == 409
    # Binds commit in order (default, then logs): default had committed when logs refused.
    assert refs(default, "entries") == ["fine", "half"]
    assert refs(logs, "log_entries") == ["fine"]
    [message] = [r.getMessage() for r in caplog.records if r.name == "plugin.transactions"]
    assert message.startswith("commit failed on bind 'logs': IntegrityError")
    assert message.endswith("committed: 'default'; rolled back: 'logs'")


@pytest.mark.parametrize("kind", KINDS[:2])
async def test_first_bind_failing_commits_nothing(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    default, logs = new_db(kind), new_db(kind)
    caplog.set_level(logging.ERROR, logger="plugin")
    async with AsyncTestClient(app_for(default, logs)) as client:
        assert (await client.post("/write/none/default")).status_code == 409

    assert refs(default, "entries") == []
    assert refs(logs, "log_entries") == []
    [message] = [r.getMessage() for r in caplog.records if r.name == "plugin.transactions"]
    assert message.startswith("commit failed on bind 'default': IntegrityError")
    assert message.endswith("committed: (none); rolled back: 'default', 'logs'")


@pytest.mark.postgresql
async def test_two_phase_keeps_neither_write(
    new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    default, logs = new_db("postgresql"), new_db("postgresql")
    require_prepared_transactions(default)
    caplog.set_level(logging.ERROR, logger="plugin")
    async with AsyncTestClient(app_for(default, logs, two_phase=True)) as client:
        assert (await client.post("/write/both/none")).status_code == 201
        assert (await client.post("/write/neither/logs")).status_code == 409

    assert refs(default, "entries") == ["both"]
    assert refs(logs, "log_entries") == ["both"]
    # nothing left in doubt (in this database: other test sessions share the server)
    assert default.fetch("select count(*) from pg_prepared_xacts where database = current_database()") == [(0,)]
    [message] = [r.getMessage() for r in caplog.records if r.name == "plugin.transactions"]
    assert message.startswith("two-phase commit (prepare) failed on bind 'logs': IntegrityError")
    assert message.endswith("committed: (none); rolled back: 'default', 'logs'")


@pytest.mark.postgresql
@pytest.mark.mariadb
async def test_two_phase_across_postgresql_and_mariadb(new_db: Callable[[str], Database]) -> None:
    default, logs = new_db("postgresql"), new_db("mariadb")
    require_prepared_transactions(default)
    async with AsyncTestClient(app_for(default, logs, two_phase=True)) as client:
        assert (await client.post("/write/xa/none")).status_code == 201
        assert (await client.post("/write/dangling/default")).status_code == 409

    assert refs(default, "entries") == ["xa"]
    assert refs(logs, "log_entries") == ["xa"]


@post("/two-sessions/{ref:str}")
async def two_sessions(
    ref: FromPath[str], logs_db_session: NamedDependency[AsyncSession], db_session: NamedDependency[AsyncSession]
) -> None:
    """Two sessions in one request; the logs one is created (and so settled) first."""
    logs_db_session.add(LogEntry(ref=ref))
    db_session.add(Entry(ref=ref, parent_id=None))
    db_session.add(Parent(id=1))  # the second request repeats this primary key: its flush fails


@pytest.mark.parametrize("kind", KINDS)
async def test_all_sessions_of_a_request_flush_before_any_commits(kind: str, new_db: Callable[[str], Database]) -> None:
    default, logs = new_db(kind), new_db(kind)
    config = SQLAlchemyAsyncConfig(
        binds={"default": default.url(), "logs": logs.url()}, base=LedgerBase, create_all=True
    )
    app = Litestar(route_handlers=[two_sessions], plugins=[SQLAlchemyPlugin(config=config)], logging_config=None)
    async with AsyncTestClient(app) as client:
        assert (await client.post("/two-sessions/first")).status_code == 201
        assert (await client.post("/two-sessions/second")).status_code == 409

    assert refs(default, "entries") == ["first"]
    assert refs(logs, "log_entries") == ["first"]  # the logs session did not commit "second" on its own


@post("/sessions-commit-fails/{ref:str}")
async def sessions_commit_fails(
    ref: FromPath[str], logs_db_session: NamedDependency[AsyncSession], db_session: NamedDependency[AsyncSession]
) -> None:
    """The logs session is created first; its COMMIT fails (dangling deferred foreign key)."""
    logs_db_session.add(LogEntry(ref=ref, parent_id=999))
    db_session.add(Entry(ref=ref, parent_id=None))


@pytest.mark.parametrize("kind", KINDS[:2])
async def test_sessions_of_a_request_commit_in_bind_order(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    default, logs = new_db(kind), new_db(kind)
    caplog.set_level(logging.ERROR, logger="plugin")
    app = app_for(default, logs)
    app.register(sessions_commit_fails)
    async with AsyncTestClient(app) as client:
        assert (await client.post("/sessions-commit-fails/half")).status_code == 409

    # default before logs, whichever session was created first; the log says what committed
    assert refs(default, "entries") == ["half"]
    assert refs(logs, "log_entries") == []
    [message] = [r.getMessage() for r in caplog.records if r.name == "plugin.transactions"]
    assert message.startswith("commit failed on bind 'logs': IntegrityError")
    assert message.endswith("committed: 'default'; rolled back: 'logs'")


@pytest.mark.postgresql
async def test_two_phase_spans_the_sessions_of_a_request(
    new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    default, logs = new_db("postgresql"), new_db("postgresql")
    require_prepared_transactions(default)
    caplog.set_level(logging.ERROR, logger="plugin")
    app = app_for(default, logs, two_phase=True)
    app.register(sessions_commit_fails)
    async with AsyncTestClient(app) as client:
        assert (await client.post("/sessions-commit-fails/neither")).status_code == 409

    assert refs(default, "entries") == []
    assert refs(logs, "log_entries") == []
    assert default.fetch("select count(*) from pg_prepared_xacts where database = current_database()") == [(0,)]
    [message] = [r.getMessage() for r in caplog.records if r.name == "plugin.transactions"]
    assert message.startswith("two-phase commit (prepare) failed on bind 'logs': IntegrityError")


@pytest.mark.parametrize("kind", KINDS[:2])
async def test_one_bind_failing_at_commit_itself(kind: str, new_db: Callable[[str], Database]) -> None:
    default, logs = new_db(kind), new_db(kind)
    async with AsyncTestClient(app_for(default, logs)) as client:
        response = await client.post("/write/dangling/default-only")
    assert response.status_code == 409
    assert refs(default, "entries") == []


@pytest.mark.postgresql
async def test_a_bind_half_committed_across_two_sessions_is_reported_as_such(
    new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    """Two sessions hold a connection each on the logs bind; the second one's COMMIT fails."""
    default, logs = new_db("postgresql"), new_db("postgresql")
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(
        binds={"default": engine_for(default), "logs": engine_for(logs)}, base=LedgerBase, create_all=True
    ))  # fmt: skip
    caplog.set_level(logging.ERROR, logger="plugin")
    async with plugin.lifespan():
        routed, pinned = plugin.sessions(), plugin.sessions("logs")  # settled in this order
        routed.add(LogEntry(ref="routed", parent_id=None))
        pinned.add(LogEntry(ref="pinned", parent_id=999))
        _, error = await settle_all([routed, pinned], commit=True)
        await close_all([routed, pinned])

    assert error is not None
    assert error.committed == ()
    assert refs(logs, "log_entries") == ["routed"]  # the first connection had committed
    [message] = [r.getMessage() for r in caplog.records if r.name == "plugin.transactions"]
    assert message.startswith("commit failed on bind 'logs': IntegrityError")
    assert message.endswith("committed: (none); rolled back: 'logs' (bind 'logs' had committed 1 of its 2 connections)")
