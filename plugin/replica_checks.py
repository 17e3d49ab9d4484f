"""Checking read replicas: reachable, which server, and how far behind the primary (``db check``).

Replication lag, per server:

- PostgreSQL: a standby that has replayed everything it received (``pg_last_wal_receive_lsn() =
  pg_last_wal_replay_lsn()``) is 0 s behind; otherwise the lag is ``now() - pg_last_xact_replay_timestamp()``,
  the age of the last transaction it applied. That is an upper bound: after an idle spell on the primary it
  counts the idle time too. A server that is not in recovery is not a standby, and fails the check.
- MariaDB/MySQL: ``Seconds_Behind_Master`` (``Seconds_Behind_Source``) of ``SHOW REPLICA STATUS`` (``SHOW
  SLAVE STATUS`` on older servers). No row: not a replica; NULL: replication is not running. Both fail.
- Other databases (SQLite) have no replication to ask about: the lag is not measured.

With ``max_lag``, a replica further behind fails, and so does one whose lag cannot be told.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from plugin.checks import _in_daemon_thread, _redacted, _server
from plugin.exceptions import describe_error, mask_url

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.engine import Connection, Engine

    from plugin.engines import EngineRegistry

__all__ = ("ReplicaCheck", "check_replicas")

_PG_LAG = text(
    "select pg_is_in_recovery(), coalesce(pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), false), "
    "extract(epoch from now() - pg_last_xact_replay_timestamp())"
)


@dataclass(frozen=True)
class ReplicaCheck:
    """The outcome of checking one replica of a bind."""

    bind: str
    replica: int
    """Its number among the bind's replicas, from 1, in config order."""
    url: str
    """Password masked."""
    ok: bool = False
    connect_ms: float | None = None
    latency_ms: float | None = None
    server: str | None = None
    lag_s: float | None = None
    """Seconds behind the primary (0: caught up; None: not measured, or unknown)."""
    state: str | None = None
    """What the lag means: ``caught up``, ``replaying``, ``not measured for sqlite``, ..."""
    error: str | None = None
    """Why it failed: unreachable, not a replica, too far behind."""


Probe = tuple[float, str, "float | None", str, "str | None"]


Lag = tuple["float | None", str, "str | None"]
"""Seconds behind the primary, what that means, and the error that fails the check (if any)."""


def _postgresql_lag(connection: Connection) -> Lag:
    standby, caught_up, age = connection.execute(_PG_LAG).one()
    if not standby:
        return None, "not a standby", "not a standby: pg_is_in_recovery() is false (is this the primary's URL?)"
    if caught_up:
        return 0.0, "caught up", None
    if age is None:
        return None, "replaying; nothing applied since it started", None
    return max(0.0, float(age)), "replaying", None


def _mysql_lag(connection: Connection) -> Lag:
    try:
        row = connection.execute(text("show replica status")).mappings().first()
    except DBAPIError:  # servers older than MariaDB 10.5 / MySQL 8.0.22
        row = connection.execute(text("show slave status")).mappings().first()
    if row is None:
        return None, "not a replica", "not a replica: SHOW REPLICA STATUS returned nothing"
    behind = row.get("Seconds_Behind_Master", row.get("Seconds_Behind_Source"))
    if behind is None:
        return None, "stopped", "replication is not running (Seconds_Behind_Master is NULL)"
    return float(behind), "caught up" if behind == 0 else "replaying", None


def _lag(connection: Connection) -> Lag:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return _postgresql_lag(connection)
    if dialect in ("mysql", "mariadb"):
        return _mysql_lag(connection)
    return None, f"not measured for {dialect}", None


def _probe(connection: Connection) -> Probe:
    started = time.perf_counter()
    connection.execute(text("select 1")).scalar()
    latency = (time.perf_counter() - started) * 1000
    lag, state, error = _lag(connection)
    return latency, _server(connection.dialect), lag, state, error


def _probe_sync_engine(engine: Engine) -> tuple[float, Probe]:
    started = time.perf_counter()
    with engine.connect() as connection:
        return (time.perf_counter() - started) * 1000, _probe(connection)


async def _check(key: str, number: int, engine: Any, timeout: float, max_lag: float | None) -> ReplicaCheck:
    url = mask_url(engine.url)
    try:
        with anyio.fail_after(timeout):
            if isinstance(engine, AsyncEngine):
                started = time.perf_counter()
                async with engine.connect() as connection:
                    connect_ms = (time.perf_counter() - started) * 1000
                    probe = await connection.run_sync(_probe)
            else:
                connect_ms, probe = await _in_daemon_thread(_probe_sync_engine, engine)
    except TimeoutError:
        return ReplicaCheck(key, number, url, error=f"no answer within {timeout:g} s (timed out)")
    except Exception as exc:
        return ReplicaCheck(key, number, url, error=_redacted(describe_error(exc), engine.url))
    latency, server, lag, state, error = probe
    if lag is not None:  # rounded once, as reported: `--json`'s lag_s and the error must not round apart
        lag = round(lag, 3)
    if error is None and max_lag is not None and lag is None:  # a bound nobody can check is not met
        error = f"lag unknown ({state}), so --max-lag {max_lag:g} s cannot be checked"
    if error is None and max_lag is not None and lag is not None and lag > max_lag:
        error = f"{lag:.1f} s behind the primary, more than --max-lag {max_lag:g} s"
    return ReplicaCheck(
        key, number, url, ok=error is None, connect_ms=connect_ms, latency_ms=latency, server=server,
        lag_s=lag, state=state, error=error,
    )  # fmt: skip


async def check_replicas(
    registry: EngineRegistry, keys: Iterable[str], timeout: float = 5.0, max_lag: float | None = None
) -> tuple[ReplicaCheck, ...]:
    """Check every replica of the binds ``keys`` concurrently, each within ``timeout`` seconds."""
    checks = [
        _check(key, number, engine, timeout, max_lag)
        for key in keys
        for number, engine in enumerate(registry.replicas(key), 1)
    ]
    return tuple(await asyncio.gather(*checks))
