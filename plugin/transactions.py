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
from itertools import groupby
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal

import anyio
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import greenlet_spawn

from plugin.exceptions import CommitConflictError, CommitError, ConfigurationError, describe_error, quote_keys
from plugin.sessions import RoutingSession, is_started

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence, Set

    from sqlalchemy.engine import Connection

__all__ = ("TransactionPolicy", "close_all", "settle", "settle_all", "unit_of_work", "unit_of_work_sync")

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
    sessions: Sequence[Session],
    exc: BaseException,
    *,
    binds: list[str],
    committed: list[str],
    stage: str,
    failed: str | None = None,
    note: str = "",
) -> CommitError:
    """Roll back every session, log at ERROR naming the binds, and build the error to raise.

    ``failed`` is the bind whose commit failed when known; a unit of work on one bind always knows it.
    """
    if failed is None and len(binds) == 1:
        failed = binds[0]
    for session in sessions:
        try:
            session.rollback()
        except Exception:  # the connection may be gone; closing the session will discard it
            logger.warning("rollback after a failed commit also failed", exc_info=True)
    kind = CommitConflictError if isinstance(exc, IntegrityError) else CommitError
    rolled_back = [key for key in binds if key not in committed]
    where = f"bind {failed!r}" if failed else f"bind{'s' if len(binds) != 1 else ''} {quote_keys(binds)}"
    message = (
        f"{stage} failed on {where}: {describe_error(exc)}; "
        f"committed: {quote_keys(committed)}; rolled back: {quote_keys(rolled_back)}{note}"
    )
    logger.error(message)
    return kind(message, committed=tuple(committed), failed=failed)


def _connections(sessions: Sequence[Session]) -> list[tuple[str, Session, Any]] | None:
    """Every (bind, session, engine-or-connection) the sessions used, in bind order (None: not routed)."""
    routing = [session for session in sessions if isinstance(session, RoutingSession)]
    if not routing or len(routing) != len(sessions):
        return None
    order = {key: index for index, key in enumerate(routing[0].router.keys)}
    used = [(key, session, target) for session in routing for key, target in session.touched_binds()]
    return sorted(used, key=lambda item: order[item[0]])


def _keys(touched: list[tuple[str, Session, Any]] | None) -> list[str]:
    return list(dict.fromkeys(key for key, _, _ in touched or []))


def settle(sessions: Sequence[Session], commit: bool) -> None:
    """Commit or roll back a unit of work (a request's sessions, a script's) as one transaction.

    Raises :class:`CommitError` when the commit fails, after rolling every session back. The sessions
    stay usable, and must still be closed by the caller.

    1. Every session flushes first, so that an integrity error leaves all of them uncommitted.
    2. With two-phase commit, every session is prepared before any commits: all or nothing.
    3. Otherwise every connection commits in bind order (default bind first, then config order), across
       sessions; a failure rolls back what has not committed yet, and the error says which binds had.
       Each DBAPI connection is committed directly (SQLAlchemy commits a session's connections in no fixed
       order); ``Session.commit()`` then does its bookkeeping (events, expiry), its own COMMIT finding
       nothing left to do. Writes a ``before_commit`` listener adds at that point commit in SQLAlchemy's
       order.
    """
    active = [session for session in sessions if session.in_transaction()]
    if not active:
        return
    if not commit:
        for session in active:
            session.rollback()
        return
    for session in active:
        try:
            session.flush()
        except Exception as exc:  # the failing statement was routed before it failed: its bind is known
            raise _fail(active, exc, binds=_keys(_connections(active)), committed=[], stage="flush") from exc
    touched = _connections(active)
    if all(session.twophase for session in active) and (touched is None or len(touched) > 1):
        _commit_two_phase(active, _keys(touched))
    elif touched is None or len(touched) < 2 or not all(isinstance(t, Engine) for _, _, t in touched):
        _commit_each(active, _keys(touched))  # one connection (or a sandbox's own): nothing to order
    else:
        _commit_in_bind_order(active, touched)


def _commit_two_phase(active: Sequence[Session], binds: list[str]) -> None:
    try:
        for session in active:
            session.prepare()
        for session in active:
            session.commit()
    except Exception as exc:
        raise _fail(active, exc, binds=binds, committed=[], stage="two-phase commit") from exc


def _commit_each(active: Sequence[Session], binds: list[str]) -> None:
    try:
        for session in active:
            session.commit()
    except Exception as exc:
        raise _fail(active, exc, binds=binds, committed=[], stage="commit") from exc


def _commit_in_bind_order(active: Sequence[Session], touched: list[tuple[str, Session, Any]]) -> None:
    binds = _keys(touched)
    committed: list[str] = []
    # A bind counts as committed once all its connections have (two sessions can each hold one).
    for key, group in groupby(touched, key=itemgetter(0)):
        connections = list(group)
        for done, (_, session, engine) in enumerate(connections):
            dbapi_connection = session.connection(bind_arguments={"bind": engine}).connection.dbapi_connection
            try:
                assert dbapi_connection is not None
                dbapi_connection.commit()
            except Exception as exc:
                note = f" (bind {key!r} had committed {done} of its {len(connections)} connections)" if done else ""
                error = _wrapped(exc, engine)
                raise _fail(
                    active, error, binds=binds, committed=committed, failed=key, stage="commit", note=note
                ) from exc
        committed.append(key)
    try:
        for session in active:
            session.commit()
    except Exception as exc:
        stage = "commit (after every bind committed)"
        raise _fail(active, exc, binds=binds, committed=committed, stage=stage) from exc


async def settle_all(sessions: Sequence[AsyncSession | Session], commit: bool) -> CommitError | None:
    """:func:`settle` a unit of work's used sessions, from async code; returns the error, if any.

    Async sessions are settled together in one of SQLAlchemy's greenlets, sync sessions in a worker
    thread.
    """
    active = [session for session in sessions if is_started(session) and session.in_transaction()]
    async_sessions = [session.sync_session for session in active if isinstance(session, AsyncSession)]
    sync_sessions = [session for session in active if isinstance(session, Session)]
    try:
        if async_sessions:
            await greenlet_spawn(settle, async_sessions, commit)
        if sync_sessions:
            await anyio.to_thread.run_sync(settle, sync_sessions, commit)
    except CommitError as exc:
        return exc
    return None


async def _in_session(session: AsyncSession | Session, function: Callable[..., None], *args: Any) -> None:
    """Run sync session code: in SQLAlchemy's greenlet for async sessions, in a thread for sync ones."""
    if isinstance(session, AsyncSession):
        await session.run_sync(function, *args)
    else:
        await anyio.to_thread.run_sync(function, session, *args)


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
            settle([session], commit=False)
        raise
    else:
        if is_started(session):
            settle([session], not dry_run and policy.should_commit(SUCCESS_STATUS))
    finally:
        if is_started(session):
            session.close()
