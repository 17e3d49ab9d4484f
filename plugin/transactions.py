"""The transaction policy and the one routine that commits or rolls back a session.

:class:`TransactionPolicy` decides *whether* to commit, from a final HTTP status (requests) or from
success (scripts, ``litestar db run``). :func:`settle` does it: commit in a fixed bind order (or with
two-phase commit), roll back on any failure, log the failure naming the binds, and raise a
:class:`~plugin.exceptions.CommitError` that Litestar turns into a 409 or 500 response.

``settle`` is written once, for the sync ``Session``: async sessions run it through
``AsyncSession.run_sync`` (a greenlet), sync sessions in a worker thread.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from plugin.exceptions import CommitConflictError, CommitError, ConfigurationError, describe_error, quote_keys
from plugin.sessions import is_started

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence, Set

    from sqlalchemy.engine import Connection

__all__ = ("TransactionPolicy", "close_all", "flush", "settle", "settle_all", "unit_of_work", "unit_of_work_sync")

logger = logging.getLogger("plugin.transactions")

SUCCESS_STATUS = 200
"""The status a successful unit of work outside HTTP (a script, ``db run``) is judged by."""


def _statuses(value: Iterable[int]) -> frozenset[int]:
    statuses = frozenset(value)
    if bad := sorted(s for s in statuses if not (isinstance(s, int) and 100 <= s <= 599)):
        raise ConfigurationError(f"{bad} are not HTTP status codes; use integers from 100 to 599")
    return statuses


@dataclass(frozen=True)
class TransactionPolicy:
    """When a unit of work commits. One object serves requests and ``litestar db run``.

    Example::

        TransactionPolicy(commit_on_redirect=True, rollback_statuses={207})
    """

    mode: Literal["autocommit", "manual"] = "autocommit"
    """``autocommit``: commit on success, roll back otherwise. ``manual``: never commit; the handler
    commits itself and whatever it left open is rolled back."""
    commit_on_redirect: bool = False
    """Also commit when the final status is 3xx."""
    commit_statuses: Set[int] = frozenset()
    """Extra statuses that commit (e.g. ``{422}`` for an API that stores failed attempts)."""
    rollback_statuses: Set[int] = frozenset()
    """Statuses that roll back even though they would commit (e.g. ``{202}``)."""

    def __post_init__(self) -> None:
        if self.mode not in ("autocommit", "manual"):
            raise ConfigurationError(f"transaction mode {self.mode!r} is unknown; use 'autocommit' or 'manual'")
        commit, rollback = _statuses(self.commit_statuses), _statuses(self.rollback_statuses)
        if overlap := sorted(commit & rollback):
            raise ConfigurationError(
                f"status {', '.join(map(str, overlap))} is in both commit_statuses and rollback_statuses; "
                "keep each status in one of them"
            )
        object.__setattr__(self, "commit_statuses", commit)
        object.__setattr__(self, "rollback_statuses", rollback)

    def should_commit(self, status: int) -> bool:
        """Whether a unit of work that ended with ``status`` (and did not raise) commits."""
        if self.mode == "manual" or status in self.rollback_statuses:
            return False
        return (
            200 <= status < 300 or (self.commit_on_redirect and 300 <= status < 400) or status in self.commit_statuses
        )


def _wrapped(exc: Exception, target: Engine | Connection) -> Exception:
    """A driver's own exception as SQLAlchemy's (``IntegrityError`` & co.), as SQLAlchemy would raise it."""
    dbapi_error = getattr(target.dialect.loaded_dbapi, "Error", None)
    if isinstance(dbapi_error, type) and isinstance(exc, dbapi_error):
        return DBAPIError.instance(None, None, exc, dbapi_error, dialect=target.dialect)
    return exc


def _fail(
    session: Session,
    exc: BaseException,
    *,
    binds: list[tuple[str, Any]],
    committed: list[str],
    stage: str,
    failed: str | None = None,
) -> CommitError:
    """Roll back, log at ERROR naming the binds, and build the error to raise.

    ``failed`` is the bind whose commit failed when known; a single-bind unit of work always knows it.
    """
    if failed is None and len(binds) == 1:
        failed = binds[0][0]
    try:
        session.rollback()
    except Exception:  # the connection may be gone; closing the session will discard it
        logger.warning("rollback after a failed commit also failed", exc_info=True)
    kind = CommitConflictError if isinstance(exc, IntegrityError) else CommitError
    rolled_back = [key for key, _ in binds if key not in committed]
    where = f"bind {failed!r}" if failed else f"bind{'s' if len(binds) != 1 else ''} {quote_keys(k for k, _ in binds)}"
    message = (
        f"{stage} failed on {where}: {describe_error(exc)}; "
        f"committed: {quote_keys(committed)}; rolled back: {quote_keys(rolled_back)}"
    )
    logger.error(message)
    return kind(message, committed=tuple(committed), failed=failed)


def flush(session: Session) -> None:
    """Flush pending changes; on failure roll back, log, and raise :class:`CommitError` (nothing committed)."""
    try:
        session.flush()
    except Exception as exc:
        raise _fail(session, exc, binds=getattr(session, "touched_binds", list)(), committed=[], stage="flush") from exc


def settle(session: Session, commit: bool) -> None:
    """Commit or roll back what ``session`` has open; raise :class:`CommitError` if the commit fails.

    Several binds without two-phase commit commit one by one in bind order (default bind first, then
    config order); the first failure rolls back the rest, and the error says which binds had already
    committed. The session stays usable (and must still be closed by the caller).

    How: every bind's DBAPI connection is committed in order, then ``Session.commit()`` does its usual
    bookkeeping (events, expiry), its own COMMIT finding nothing left to do. Writes that a
    ``before_commit`` listener adds at that point are committed by SQLAlchemy, in its own order.
    """
    if not session.in_transaction():
        return
    if not commit:
        session.rollback()
        return
    flush(session)  # first, so that every bind the commit needs is known
    binds: list[tuple[str, Any]] = getattr(session, "touched_binds", list)()
    if len(binds) < 2 or session.twophase or not all(isinstance(t, Engine) for _, t in binds):
        try:
            session.commit()
        except Exception as exc:
            stage = "two-phase commit" if session.twophase and len(binds) > 1 else "commit"
            raise _fail(session, exc, binds=binds, committed=[], stage=stage) from exc
        return
    committed: list[str] = []
    for key, engine in binds:
        # Commit each database ourselves, in bind order: SQLAlchemy commits a session's connections
        # in no fixed order. The session's own commit below then finds nothing left to do on the wire.
        dbapi_connection = session.connection(bind_arguments={"bind": engine}).connection.dbapi_connection
        try:
            assert dbapi_connection is not None
            dbapi_connection.commit()
        except Exception as exc:
            error = _wrapped(exc, engine)
            raise _fail(session, error, binds=binds, committed=committed, failed=key, stage="commit") from exc
        committed.append(key)
    session.commit()


async def _in_session(session: AsyncSession | Session, function: Callable[..., None], *args: Any) -> None:
    """Run sync session code: in SQLAlchemy's greenlet for async sessions, in a thread for sync ones."""
    if isinstance(session, AsyncSession):
        await session.run_sync(function, *args)
    else:
        await anyio.to_thread.run_sync(function, session, *args)


async def settle_all(sessions: Sequence[AsyncSession | Session], commit: bool) -> CommitError | None:
    """Settle every used session (a request's ``db_session``, ``logs_db_session``, ...) as one unit.

    Every session is flushed before any commits, so an integrity error in one leaves all of them
    uncommitted; then they commit in order. Only a failure at COMMIT itself (deferred constraints, a lost
    connection) can come after an earlier session committed, as with binds (see :func:`settle`).
    """
    active = [session for session in sessions if is_started(session) and session.in_transaction()]
    error: CommitError | None = None
    if commit and len(active) > 1:
        for session in active:
            try:
                await _in_session(session, flush)
            except CommitError as exc:
                error = exc
                break
    for session in active:
        try:
            await _in_session(session, settle, commit and error is None)
        except CommitError as exc:
            error = exc
    return error


async def close_all(sessions: Sequence[AsyncSession | Session]) -> None:
    """Close every used session (rolling back what is open), shielded from cancellation."""
    for session in sessions:
        if not is_started(session):
            continue
        if not session.in_transaction():
            # Holds no connection: closing is bookkeeping (no I/O), so no greenlet or thread is needed.
            (session.sync_session if isinstance(session, AsyncSession) else session).close()
            continue
        with anyio.CancelScope(shield=True):
            try:
                await _in_session(session, Session.close)
            except Exception:
                # The connection is unusable (e.g. cancelled mid-query); drop it rather than pool it.
                logger.warning("closing a session failed; invalidating its connections", exc_info=True)
                try:
                    await _in_session(session, Session.invalidate)
                except Exception:
                    logger.exception("invalidating a session's connections failed")


@asynccontextmanager
async def unit_of_work(
    session: AsyncSession, policy: TransactionPolicy, *, dry_run: bool = False
) -> AsyncIterator[AsyncSession]:
    """Run a block as one transaction under ``policy``: commit on success, roll back on an exception.

    ``dry_run`` rolls back even on success. The session is closed at exit in every case. A failed commit
    raises :class:`~plugin.exceptions.CommitError` after rolling back.
    """
    try:
        yield session
    except BaseException:
        await settle_all([session], commit=False)
        raise
    else:
        if (error := await settle_all([session], not dry_run and policy.should_commit(SUCCESS_STATUS))) is not None:
            raise error
    finally:
        await close_all([session])


@contextmanager
def unit_of_work_sync(session: Session, policy: TransactionPolicy, *, dry_run: bool = False) -> Iterator[Session]:
    """:func:`unit_of_work` for sync sessions."""
    try:
        yield session
    except BaseException:
        if is_started(session):
            settle(session, commit=False)
        raise
    else:
        if is_started(session):
            settle(session, not dry_run and policy.should_commit(SUCCESS_STATUS))
    finally:
        if is_started(session):
            session.close()
