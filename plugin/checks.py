"""Connectivity, schema and migration checks, one per bind, run concurrently with a timeout.

Used by ``litestar db check`` and the health route (:mod:`plugin.health`). Each check connects, times
one round trip, names the server, compares the tables the models route to that bind with what the
database has, and, when the bind has migrations configured, reads its Alembic state on the same
connection. A refused connection, a server that never answers, a missing table or column, a database
that is not at its migrations' head each fail only their own bind.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from plugin.exceptions import MigrationsError, describe_error, mask_url
from plugin.migration_state import failed, read_state
from plugin.migrations import ScriptCache
from plugin.twophase import resolution, stale_prepared

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import URL, Connection, Dialect, Engine
    from sqlalchemy.sql.schema import Table

    from plugin.binds import BindConflict, BindRouter, UnknownBindKey
    from plugin.engines import EngineRegistry
    from plugin.migration_state import MigrationState
    from plugin.migrations import Migrations
    from plugin.replica_checks import ReplicaCheck

__all__ = ("BindCheck", "CheckReport", "PreparedTransaction", "check_binds")

T = TypeVar("T")


@dataclass(frozen=True)
class BindCheck:
    """The outcome of checking one bind."""

    bind: str
    url: str
    """The bind's URL, password masked."""
    ok: bool = False
    connect_ms: float | None = None
    """Time to get a connection (from the pool, so usually a new one), in milliseconds."""
    latency_ms: float | None = None
    """One ``SELECT 1`` round trip on that connection, in milliseconds."""
    server: str | None = None
    """Server name and version, e.g. ``PostgreSQL 15.20``."""
    tables: int = 0
    """How many tables the models route to this bind (all were looked for)."""
    missing_tables: tuple[str, ...] = ()
    missing_columns: tuple[str, ...] = ()
    """``table.column`` for each mapped column the database lacks."""
    error: str | None = None
    """Why the bind could not be checked (refused, timed out, ...)."""
    prepared: tuple[PreparedTransaction, ...] = ()
    """Two-phase transactions left prepared on the server for longer than a few seconds."""
    migrations: MigrationState | None = None
    """The Alembic state, when the bind has migrations configured (and they were asked for)."""


@dataclass(frozen=True)
class PreparedTransaction:
    """A prepared (two-phase) transaction nobody finished, and the statements that would finish it."""

    xid: str
    commit: str
    """E.g. ``COMMIT PREPARED '_sa_...'`` (PostgreSQL) or ``XA COMMIT '_sa_...'`` (MariaDB/MySQL)."""
    rollback: str


@dataclass(frozen=True)
class CheckReport:
    """Every bind checked, the models whose bind key is not configured, and tables whose bind cannot be told."""

    binds: tuple[BindCheck, ...]
    unknown_bind_keys: tuple[UnknownBindKey, ...] = field(default=())
    bind_conflicts: tuple[BindConflict, ...] = field(default=())
    """Class hierarchies spanning binds and unmapped tables on a MetaData shared by several binds."""
    replicas: tuple[ReplicaCheck, ...] = field(default=())
    """The read replicas of the checked binds (:mod:`plugin.replica_checks`), when they were checked."""

    @property
    def ok(self) -> bool:
        return (
            all(check.ok for check in self.binds)
            and all(check.ok for check in self.replicas)
            and not self.unknown_bind_keys
            and not self.bind_conflicts
        )


Probe = tuple[float, str, list[str], list[str], list[PreparedTransaction]]
"""Round trip (ms), server, missing tables, missing ``table.column``s, prepared transactions left."""


def _server(dialect: Dialect) -> str:
    name = {"postgresql": "PostgreSQL", "sqlite": "SQLite", "mssql": "SQL Server", "oracle": "Oracle"}.get(
        dialect.name, "MariaDB" if getattr(dialect, "is_mariadb", False) else dialect.name.capitalize()
    )
    version = dialect.server_version_info
    return f"{name} {'.'.join(str(part) for part in version)}" if version else name


def _left_prepared(connection: Connection) -> list[PreparedTransaction]:
    if connection.dialect.name not in ("postgresql", "mysql", "mariadb"):
        return []  # SQLite has no two-phase commit
    engine = connection.engine
    return [
        PreparedTransaction(xid, resolution(engine, xid, "commit"), resolution(engine, xid, "rollback"))
        for xid in stale_prepared(connection)
    ]


def _probe(connection: Connection, tables: Sequence[Table]) -> Probe:
    """Round trip, server, what the database lacks of ``tables``, and prepared transactions left behind
    (runs on a sync connection)."""
    started = time.perf_counter()
    connection.execute(text("select 1")).scalar()
    latency = (time.perf_counter() - started) * 1000
    inspector = inspect(connection)
    missing_tables: list[str] = []
    missing_columns: list[str] = []
    for table in tables:
        if not inspector.has_table(table.name, schema=table.schema):
            missing_tables.append(table.fullname)
            continue
        present = {column["name"].lower() for column in inspector.get_columns(table.name, schema=table.schema)}
        missing_columns += [f"{table.fullname}.{c.name}" for c in table.columns if c.name.lower() not in present]
    return latency, _server(connection.dialect), missing_tables, missing_columns, _left_prepared(connection)


MigrationStep = tuple["Migrations", "ScriptDirectory"]
"""A bind's migrations and their loaded scripts: what :func:`_migration_probe` needs."""


def _migration_probe(connection: Connection, step: MigrationStep | None) -> MigrationState | None:
    """The bind's Alembic state, read on the check's own connection (nothing runs, nothing is written)."""
    if step is None:
        return None
    migrations, script = step
    try:
        return read_state(connection, migrations, script)
    except Exception as exc:  # e.g. no privilege on the version table: a failed check, not a crash
        return failed(migrations, describe_error(exc))


def _probe_sync_engine(
    engine: Engine, tables: Sequence[Table], step: MigrationStep | None
) -> tuple[float, Probe, MigrationState | None]:
    started = time.perf_counter()
    with engine.connect() as connection:
        connected = (time.perf_counter() - started) * 1000
        return connected, _probe(connection, tables), _migration_probe(connection, step)


async def _in_daemon_thread(function: Callable[..., T], *args: Any) -> T:
    """Run blocking code in a daemon thread: if the check times out, a driver stuck on a silent server
    cannot keep the process alive (a worker thread from a pool would)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(setter: Callable[[Any], object], value: Any) -> None:
        # A closed loop means the check timed out and nobody waits for this any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(lambda: future.done() or setter(value))

    def run() -> None:
        try:
            result = function(*args)
        except BaseException as exc:
            deliver(future.set_exception, exc)
        else:
            deliver(future.set_result, result)

    threading.Thread(target=run, name="db-check", daemon=True).start()
    return await future


def _redacted(text: str, url: URL) -> str:
    """``text`` without the bind's password (some drivers echo the connection string in errors)."""
    return text.replace(str(url.password), "***") if url.password else text


def _migration_step(
    migrations: Migrations | None, scripts: ScriptCache
) -> tuple[MigrationStep | None, MigrationState | None]:
    """The scripts to compare with, or the state that says why they cannot be read."""
    if migrations is None:
        return None, None
    try:
        return (migrations, scripts.get(migrations)), None
    except MigrationsError as exc:
        return None, failed(migrations, str(exc))


async def _check(  # noqa: PLR0917  (private; the call site names nothing)
    key: str,
    engine: AsyncEngine | Engine,
    tables: Sequence[Table],
    timeout: float,
    migrations: Migrations | None,
    scripts: ScriptCache,
) -> BindCheck:
    url = mask_url(engine.url)
    step, state = _migration_step(migrations, scripts)
    unread = None if migrations is None else failed(migrations, "not read: the database did not answer")
    try:
        with anyio.fail_after(timeout):
            if isinstance(engine, AsyncEngine):
                started = time.perf_counter()
                async with engine.connect() as connection:
                    connect_ms = (time.perf_counter() - started) * 1000
                    probe = await connection.run_sync(_probe, tables)
                    state = state or await connection.run_sync(_migration_probe, step)
            else:
                connect_ms, probe, read = await _in_daemon_thread(_probe_sync_engine, engine, tables, step)
                state = state or read
    except TimeoutError:
        return BindCheck(key, url, error=f"no answer within {timeout:g} s (timed out)", migrations=state or unread)
    except Exception as exc:
        return BindCheck(key, url, error=_redacted(describe_error(exc), engine.url), migrations=state or unread)
    latency, server, missing_tables, missing_columns, prepared = probe
    return BindCheck(
        key,
        url,
        ok=not missing_tables and not missing_columns and not prepared and (state is None or state.ok),
        connect_ms=connect_ms,
        latency_ms=latency,
        server=server,
        tables=len(tables),
        missing_tables=tuple(missing_tables),
        missing_columns=tuple(missing_columns),
        prepared=tuple(prepared),
        migrations=state,
    )


async def check_binds(
    registry: EngineRegistry,
    router: BindRouter,
    keys: Iterable[str] | None = None,
    timeout: float = 5.0,
    *,
    schema: bool = True,
    migrations: Mapping[str, Migrations] | None = None,
    scripts: ScriptCache | None = None,
) -> CheckReport:
    """Check every bind (or ``keys``) concurrently; each check ends within ``timeout`` seconds.

    ``schema=False`` skips comparing tables with the models. ``migrations`` (bind key -> where its
    Alembic scripts live) adds the migration state of those binds; ``scripts`` keeps loaded scripts
    between calls (the health route passes one).
    """
    tables = router.tables_by_bind() if schema else {}
    selected = list(router.keys if keys is None else keys)
    scripts = scripts or ScriptCache()
    migrations = migrations or {}
    checks = await asyncio.gather(
        *(_check(k, registry.engine(k), tables.get(k, []), timeout, migrations.get(k), scripts) for k in selected)
    )
    return CheckReport(
        binds=tuple(checks),
        unknown_bind_keys=tuple(router.unknown_keys()),
        bind_conflicts=tuple(router.conflicts()),
    )
