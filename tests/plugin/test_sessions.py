"""Bind-routed sessions in requests: each model's row lands in its own database, on every backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from litestar import get, post
from litestar.di import NamedDependency
from litestar.testing import AsyncTestClient, TestClient
from sqlalchemy import event, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from plugin import RoutingSession
from tests.databases import KINDS, Database
from tests.plugin.models import Account, AuditEntry, Metric, events, make_app, make_plugin

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Engine

pytestmark = pytest.mark.anyio


@post("/records")
async def create_records(db_session: NamedDependency[AsyncSession]) -> dict[str, str]:
    db_session.add(Account(name="ada"))
    db_session.add(AuditEntry(message="ada signed up"))
    await db_session.execute(insert(events).values(kind="signup"))
    return {"created": "ada"}


@post("/records-with-metric")
async def create_records_with_metric(db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add_all([Account(name="grace"), AuditEntry(message="grace signed up"), Metric(value=42)])


@get("/reads")
async def read_back(db_session: NamedDependency[AsyncSession]) -> dict[str, Any]:
    return {
        "accounts": (await db_session.scalars(select(Account.name))).all(),
        "audit": (await db_session.scalars(select(AuditEntry.message))).all(),
        "events": (await db_session.scalars(select(events.c.kind))).all(),
        # text() goes to the default bind unless a bind is named
        "default_text": (await db_session.execute(text("select count(*) from accounts"))).scalar(),
        "logs_text": (
            await db_session.execute(text("select count(*) from audit_entries"), bind_arguments={"bind_key": "logs"})
        ).scalar(),
    }


@get("/per-bind")
async def per_bind(
    logs_db_session: NamedDependency[AsyncSession],
    logs_db_engine: NamedDependency[AsyncEngine],
    db_engine: NamedDependency[AsyncEngine],
) -> dict[str, Any]:
    count = (await logs_db_session.execute(text("select count(*) from audit_entries"))).scalar()
    return {
        "session": type(logs_db_session).__name__,
        "logs_database": logs_db_engine.url.database,
        "default_database": db_engine.url.database,
        "audit_rows_via_logs_session": count,
    }


def _database_name(db: Database) -> str:
    return str(db.path) if db.kind == "sqlite" else db.name


@pytest.mark.parametrize("kind", KINDS)
async def test_routed_session_writes_each_model_to_its_own_database(
    kind: str, new_db: Callable[[str], Database]
) -> None:
    app_db, logs_db = new_db(kind), new_db(kind)
    app = make_app(make_plugin({"default": app_db, "logs": logs_db}), [create_records, read_back, per_bind])

    async with AsyncTestClient(app) as client:
        response = await client.post("/records")
        assert response.status_code == 201
        reads = (await client.get("/reads")).json()
        per_bind_info = (await client.get("/per-bind")).json()

    assert app_db.fetch("select name from accounts") == [("ada",)]
    assert logs_db.fetch("select message from audit_entries") == [("ada signed up",)]
    assert logs_db.fetch("select kind from events") == [("signup",)]
    # each table exists only on its own bind
    assert not _has_table(logs_db, "accounts")
    assert not _has_table(app_db, "audit_entries")
    assert not _has_table(app_db, "events")
    assert reads == {
        "accounts": ["ada"], "audit": ["ada signed up"], "events": ["signup"], "default_text": 1, "logs_text": 1,
    }  # fmt: skip
    assert per_bind_info == {
        "session": "AsyncRoutingSession",
        "logs_database": _database_name(logs_db),
        "default_database": _database_name(app_db),
        "audit_rows_via_logs_session": 1,
    }


@pytest.mark.postgresql
@pytest.mark.mariadb
async def test_one_app_with_a_bind_on_sqlite_postgresql_and_mariadb(new_db: Callable[[str], Database]) -> None:
    sqlite_db, pg_db, maria_db = new_db("sqlite"), new_db("postgresql"), new_db("mariadb")
    plugin = make_plugin({"default": sqlite_db, "logs": pg_db, "metrics": maria_db})
    app = make_app(plugin, [create_records_with_metric])

    async with AsyncTestClient(app) as client:
        assert (await client.post("/records-with-metric")).status_code == 201

    assert sqlite_db.fetch("select name from accounts") == [("grace",)]
    assert pg_db.fetch("select message from audit_entries") == [("grace signed up",)]
    assert maria_db.fetch("select value from metrics") == [(42,)]


def _has_table(db: Database, table: str) -> bool:
    if db.kind == "sqlite":
        return bool(db.fetch(f"select name from sqlite_master where type = 'table' and name = '{table}'"))
    schema = "current_schema()" if db.kind == "postgresql" else "database()"
    return bool(db.fetch(f"select 1 from information_schema.tables where table_name = '{table}' "
                         f"and table_schema = {schema}"))  # fmt: skip


@post("/sync-records", sync_to_thread=True)
def create_records_sync(db_session: NamedDependency[Session]) -> None:
    db_session.add_all([Account(name="lin"), AuditEntry(message="lin signed up")])
    db_session.execute(insert(events).values(kind="sync"))


@get("/sync-per-bind", sync_to_thread=True)
def per_bind_sync(
    logs_db_session: NamedDependency[Session],
    logs_db_engine: NamedDependency[Engine],
    db_engine: NamedDependency[Engine],
) -> dict[str, Any]:
    return {
        "session": type(logs_db_session).__name__,
        "logs_database": logs_db_engine.url.database,
        "default_database": db_engine.url.database,
        "audit_rows_via_logs_session": logs_db_session.execute(text("select count(*) from audit_entries")).scalar(),
    }


@pytest.mark.parametrize("kind", KINDS)
def test_sync_app_routes_the_same_way(kind: str, new_db: Callable[[str], Database]) -> None:
    app_db, logs_db = new_db(kind), new_db(kind)
    app = make_app(make_plugin({"default": app_db, "logs": logs_db}, sync=True), [create_records_sync, per_bind_sync])

    with TestClient(app) as client:
        assert client.post("/sync-records").status_code == 201
        per_bind_info = client.get("/sync-per-bind").json()

    assert app_db.fetch("select name from accounts") == [("lin",)]
    assert logs_db.fetch("select message from audit_entries") == [("lin signed up",)]
    assert logs_db.fetch("select kind from events") == [("sync",)]
    assert per_bind_info == {
        "session": "SyncRoutingSession",
        "logs_database": _database_name(logs_db),
        "default_database": _database_name(app_db),
        "audit_rows_via_logs_session": 1,
    }


@get("/declared-but-unused")
async def declared_but_unused(
    db_session: NamedDependency[AsyncSession], logs_db_session: NamedDependency[AsyncSession]
) -> str:
    return "nothing touched"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_declared_but_unused_session_costs_no_connection_and_no_commit(
    kind: str, new_db: Callable[[str], Database]
) -> None:
    plugin = make_plugin({"default": new_db(kind), "logs": new_db(kind)}, create_all=False)
    app = make_app(plugin, [declared_but_unused])
    seen: list[str] = []

    async with AsyncTestClient(app) as client:
        for key, engine in plugin.engines.engines.items():
            assert isinstance(engine, AsyncEngine)
            for name in ("connect", "checkout", "begin", "commit", "rollback"):
                event.listen(engine.sync_engine, name, lambda *_, event=f"{name} on {key}": seen.append(event))
        for _ in range(5):
            response = await client.get("/declared-but-unused")
            assert response.status_code == 200
            assert response.text == "nothing touched"

    assert seen == []  # no connection, no transaction, no COMMIT


@get("/sync-session-at-first-use")
async def sync_session_at_first_use(db_session: NamedDependency[AsyncSession]) -> dict[str, bool]:
    sync_session = db_session.sync_session  # the async session's first use
    plain = type(sync_session) is RoutingSession  # not a deferred twin waiting for its own first use
    await db_session.execute(text("select 1"))
    return {"plain_at_first_use": plain, "same_after_a_statement": db_session.sync_session is sync_session}


async def test_an_async_session_starts_its_sync_session_with_itself(new_db: Callable[[str], Database]) -> None:
    """Pins the cut measured in docs/benchmarks.md ("the sync session made at once"): deferring the sync
    session a second time cost a primary-key read about 36,000 instructions and bought nothing."""
    plugin = make_plugin({"default": new_db("sqlite"), "logs": new_db("sqlite")})
    app = make_app(plugin, [sync_session_at_first_use])
    async with AsyncTestClient(app) as client:
        response = await client.get("/sync-session-at-first-use")
    assert response.status_code == 200
    assert response.json() == {"plain_at_first_use": True, "same_after_a_statement": True}
