"""Two-phase commit on the server: is it enabled, what is prepared, and finishing a transaction by xid.

PostgreSQL prepares with ``PREPARE TRANSACTION``, lists in ``pg_prepared_xacts`` and finishes with
``COMMIT PREPARED`` / ``ROLLBACK PREPARED``; MariaDB and MySQL use ``XA PREPARE``, ``XA RECOVER`` and
``XA COMMIT`` / ``XA ROLLBACK``. Either can be finished from any connection to the server (PostgreSQL: to
the same database), which is how :mod:`plugin.transactions` finishes a transaction whose own connection
died, and what the ERROR log tells an operator to run when the server could not be reached at all.

Resolution runs on a fresh connection in autocommit mode: neither server accepts ``COMMIT PREPARED`` /
``XA COMMIT`` inside a transaction block.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Literal

import anyio
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only

from plugin.exceptions import ConfigurationError, describe_error, mask_url

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from plugin.engines import AnyEngine, EngineRegistry

__all__ = (
    "STALE_AFTER",
    "Decision",
    "InDoubt",
    "finish",
    "prepared",
    "require_enabled",
    "require_two_phase",
    "require_two_phase_sync",
    "resolution",
    "stale_prepared",
)

logger = logging.getLogger("plugin.twophase")

Decision = Literal["commit", "rollback"]

STALE_AFTER = 5.0
"""Seconds after which a prepared transaction counts as left behind (a commit finishes in milliseconds)."""

_SAFE_XID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _is_postgresql(connection_or_engine: Connection | Engine) -> bool:
    return connection_or_engine.dialect.name == "postgresql"


def resolution(engine: Engine, xid: str, decision: Decision) -> str:
    """The statement that finishes ``xid`` by hand, as the ERROR log and ``db check`` print it."""
    quoted = xid.replace("'", "''")
    if _is_postgresql(engine):
        return f"{'COMMIT' if decision == 'commit' else 'ROLLBACK'} PREPARED '{quoted}'"
    return f"XA {'COMMIT' if decision == 'commit' else 'ROLLBACK'} '{quoted}'"


def prepared(connection: Connection) -> list[str]:
    """The xids prepared on the server (PostgreSQL: in this connection's database), oldest first."""
    if _is_postgresql(connection):
        rows = connection.execute(
            text("select gid from pg_prepared_xacts where database = current_database() order by prepared")
        )
        return [gid for (gid,) in rows]
    # XA RECOVER lists every prepared XA transaction of the server; `data` holds gtrid then bqual.
    return [
        (row.data.decode() if isinstance(row.data, bytes) else str(row.data))[: row.gtrid_length]
        for row in connection.exec_driver_sql("XA RECOVER")
    ]


_ATTACHED_GRACE = 3.0
"""Seconds to wait for MariaDB/MySQL to let go of an xid whose session is dying (see :func:`finish`)."""

_XAER_NOTA = 1397


def _pause(connection: Connection, seconds: float) -> None:
    if connection.dialect.is_async:  # inside SQLAlchemy's greenlet: let the event loop run meanwhile
        await_only(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


def finish(engine: Engine, xid: str, decision: Decision) -> bool:
    """Commit or roll back the prepared transaction ``xid`` from a fresh connection.

    Returns False when ``xid`` is not prepared (any more): it was already finished, or never got
    prepared. Raises the driver's error when the server cannot be reached.

    MariaDB/MySQL list an xid whose session the server has not torn down yet (the app saw the connection
    die first), but refuse to finish it from another one (``XAER_NOTA``) until it has: that is retried
    for up to :data:`_ATTACHED_GRACE` seconds.
    """
    if not _SAFE_XID.match(xid):
        raise ValueError(f"refusing to finish a transaction with the unexpected xid {xid!r}")
    deadline = time.monotonic() + _ATTACHED_GRACE
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        while True:
            if xid not in prepared(connection):
                return False
            try:
                connection.exec_driver_sql(resolution(engine, xid, decision))
            except DBAPIError as exc:
                code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
                if _is_postgresql(connection) or code != _XAER_NOTA or time.monotonic() > deadline:
                    raise
            else:
                return True
            _pause(connection, 0.1)


def stale_prepared(connection: Connection, older_than: float | None = None) -> list[str]:
    """Prepared transactions that have been waiting longer than ``older_than`` (:data:`STALE_AFTER`) seconds.

    PostgreSQL records when each was prepared. XA RECOVER does not, so on MariaDB/MySQL the list is
    read twice, ``min(older_than, 2)`` seconds apart, and what was there both times is reported.
    """
    older_than = STALE_AFTER if older_than is None else older_than
    if _is_postgresql(connection):
        rows = connection.execute(
            text(
                "select gid from pg_prepared_xacts where database = current_database() "
                "and prepared < now() - make_interval(secs => :age) order by prepared"
            ),
            {"age": older_than},
        )
        return [gid for (gid,) in rows]
    first = prepared(connection)
    if not first:
        return []
    _pause(connection, min(older_than, 2.0))
    still = set(prepared(connection))
    return [xid for xid in first if xid in still]


def require_enabled(key: str, connection: Connection) -> None:
    """Raise :class:`ConfigurationError` when the bind's server cannot prepare transactions."""
    if not _is_postgresql(connection):
        return  # MariaDB and MySQL always accept XA transactions (InnoDB)
    setting = connection.exec_driver_sql("show max_prepared_transactions").scalar()
    if int(setting or 0) == 0:
        raise ConfigurationError(
            f"bind {key!r}: two_phase=True needs PostgreSQL's max_prepared_transactions > 0, and it is 0 on "
            f"{mask_url(connection.engine.url)}; set it (ALTER SYSTEM SET max_prepared_transactions = 20, then "
            "restart the server) or set two_phase=False"
        )


_STARTUP_TIMEOUT = 10.0


def _warn_unverified(key: str, exc: BaseException) -> None:
    logger.warning(
        "bind %r: could not check at startup that the server accepts two-phase commit (%s); a request that "
        "writes to several binds will fail if it does not",
        key,
        describe_error(exc),
    )


def _verify(key: str, engine: Engine) -> None:
    with engine.connect() as connection:
        require_enabled(key, connection)


async def require_two_phase(registry: EngineRegistry) -> None:
    """At startup: every server of a ``two_phase=True`` config must accept prepared transactions.

    An unreachable server is not an error here (it may come up after the app); it is logged at WARNING.
    """

    async def verify(key: str, engine: AnyEngine) -> None:
        try:
            with anyio.fail_after(_STARTUP_TIMEOUT):
                if isinstance(engine, AsyncEngine):
                    async with engine.connect() as connection:
                        await connection.run_sync(lambda sync: require_enabled(key, sync))
                else:
                    await anyio.to_thread.run_sync(_verify, key, engine, abandon_on_cancel=True)
        except ConfigurationError:
            raise
        except Exception as exc:
            _warn_unverified(key, exc)

    for key, engine in registry.engines.items():
        await verify(key, engine)


def require_two_phase_sync(registry: EngineRegistry) -> None:
    """:func:`require_two_phase` for sync scripts (``with plugin.lifespan():``)."""
    for key in registry.engines:
        try:
            _verify(key, registry.sync_engine(key))
        except ConfigurationError:
            raise
        except Exception as exc:
            _warn_unverified(key, exc)


class InDoubt:
    """Prepared transactions whose outcome was decided but that could not be finished then (the server
    was unreachable). The plugin tries them again before each later commit and at shutdown, so that once
    the server is back nothing of the plugin's stays prepared, holding its locks.

    Owned by the engine registry (one per plugin); safe to use from several threads and greenlets.
    """

    def __init__(self) -> None:
        self._pending: dict[str, tuple[str, Engine, Decision]] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, bind: str, engine: Engine, xid: str, decision: Decision) -> None:
        with self._lock:
            self._pending[xid] = (bind, engine, decision)

    def retry(self) -> None:
        """Try once to finish each pending transaction; those the server still cannot take stay pending."""
        with self._lock:
            pending = list(self._pending.items())
        for xid, (bind, engine, decision) in pending:
            try:
                finished = finish(engine, xid, decision)
            except Exception:
                continue
            with self._lock:
                self._pending.pop(xid, None)
            if finished:
                logger.warning("bind %r: %s the prepared transaction %s once its server was back", bind, decision, xid)
