"""Settling a unit of work: flush, commit in bind order or in two phases, recover, and say what happened.

:func:`settle` commits or rolls back a unit of work's sessions (a request's, a script's) as one
transaction, and whatever goes wrong, the ERROR log and the :class:`~plugin.exceptions.CommitError` it
raises say which binds committed, which failed, and which have an unknown outcome:

1. Every session flushes first, so that an integrity error leaves all of them uncommitted.
2. With two-phase commit, every connection prepares (in bind order) before any commits. A failed
   PREPARE rolls back everything, by xid from a fresh connection where a connection died (its PREPARE
   may have reached the server). Once all prepared, the decision is *commit*: a failed
   ``COMMIT PREPARED`` / ``XA COMMIT`` is retried by xid on a fresh connection. A prepared transaction
   that cannot be finished is logged with the exact statement that finishes it.
3. Otherwise each connection commits in bind order (default bind first, then config order) through its
   own SQLAlchemy ``Transaction``, so a dead connection is invalidated by SQLAlchemy rather than pooled.
   A COMMIT whose answer never arrived has an unknown outcome, and is reported as such.

``settle`` is written once, for the sync ``Session``: :func:`settle_all` runs it for async sessions
in SQLAlchemy's greenlet and for sync sessions in a worker thread, and runs it to its end even when the
calling task is cancelled meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import greenlet_spawn

from plugin import twophase
from plugin._sqlalchemy import replace_finished_transaction
from plugin.exceptions import CommitConflictError, CommitError, describe_error, quote_keys
from plugin.policy import SUCCESS_STATUS, TransactionPolicy
from plugin.sessions import AsyncRoutingSession, BoundConnection, RoutingSession, is_started, mark_settled

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

__all__ = (
    "SUCCESS_STATUS",
    "TransactionPolicy",
    "close_all",
    "settle",
    "settle_all",
    "unit_of_work",
    "unit_of_work_sync",
)

logger = logging.getLogger("plugin.transactions")

T = TypeVar("T")


def _lost(exc: BaseException) -> bool:
    """Whether the connection died under the statement, so the server's answer never arrived."""
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class _Ledger:
    """What happened to each bind of a unit of work, for the log line and the error."""

    def __init__(self, bound: Sequence[BoundConnection]) -> None:
        self.binds = list(dict.fromkeys(b.bind for b in bound))
        self._total = {key: sum(b.bind == key for b in bound) for key in self.binds}
        self._remaining = dict(self._total)
        self.committed: list[str] = []
        self.unknown: list[str] = []

    def done(self, bound: BoundConnection) -> None:
        """One connection of a bind committed; the bind counts once all of its connections have."""
        self._remaining[bound.bind] -= 1
        if self._remaining[bound.bind] == 0:
            self.committed.append(bound.bind)

    def lost(self, bound: BoundConnection) -> None:
        if bound.bind not in self.unknown:
            self.unknown.append(bound.bind)

    def partly(self, key: str) -> str:
        """A note for a bind whose connections (one per session) did not all commit, or ``""``."""
        done = self._total[key] - self._remaining[key]
        return f" (bind {key!r} had committed {done} of its {self._total[key]} connections)" if done else ""

    @property
    def rolled_back(self) -> list[str]:
        return [k for k in self.binds if k not in self.committed and k not in self.unknown]


def _roll_back(session: Session) -> None:
    """Roll ``session`` back; if even that fails, log it and drop its connections rather than pool them."""
    try:
        session.rollback()
    except Exception:
        logger.warning("rolling back a session failed; invalidating its connections", exc_info=True)
        try:
            session.invalidate()
        except Exception:
            logger.exception("invalidating a session's connections failed")


def _fail(
    sessions: Sequence[Session],
    exc: BaseException,
    ledger: _Ledger,
    *,
    stage: str,
    failed: str | None = None,
    note: str = "",
) -> CommitError:
    """Roll back every session, log at ERROR what happened to each bind, and build the error to raise."""
    if failed is None and len(ledger.binds) == 1:
        failed = ledger.binds[0]
    for session in sessions:
        _roll_back(session)
    kind = CommitConflictError if isinstance(exc, IntegrityError) and not ledger.unknown else CommitError
    binds = ledger.binds
    where = f"bind {failed!r}" if failed else f"bind{'s' if len(binds) != 1 else ''} {quote_keys(binds)}"
    unknown = (
        f"; outcome unknown: {quote_keys(ledger.unknown)} (the connection was lost before the server answered)"
        if ledger.unknown
        else ""
    )
    message = (
        f"{stage} failed on {where}: {describe_error(exc)}; committed: {quote_keys(ledger.committed)}"
        f"{unknown}; rolled back: {quote_keys(ledger.rolled_back)}{note}"
    )
    logger.error(message)
    return kind(message, committed=tuple(ledger.committed), failed=failed, unknown=tuple(ledger.unknown))


def _bound(sessions: Sequence[Session]) -> list[BoundConnection] | None:
    """Every connection the sessions' transactions began, in bind order (None: not routing sessions)."""
    if not all(isinstance(session, RoutingSession) for session in sessions):
        return None
    bound = [b for session in sessions for b in session.bound_connections()]  # type: ignore[attr-defined]
    order = {key: index for index, key in enumerate(sessions[0].router.keys)} if sessions else {}  # type: ignore[attr-defined]
    return sorted(bound, key=lambda b: order[b.bind])


def settle(sessions: Sequence[Session], commit: bool) -> list[str]:
    """Commit or roll back a unit of work (a request's sessions, a script's) as one transaction.

    Returns the binds that committed. Raises :class:`CommitError` when the commit fails, after rolling
    every session back; the sessions must still be closed by the caller. A rollback that fails is
    logged and its connections invalidated; it never raises.
    """
    active = [session for session in sessions if session.in_transaction()]
    if not active:
        return []
    if not commit:
        for session in active:
            _roll_back(session)
        return []
    for session in active:
        try:
            session.flush()
        except Exception as exc:  # the failing statement was routed before it failed: its bind is known
            raise _fail(active, exc, _Ledger(_bound(active) or []), stage="flush") from exc
    bound = _bound(active)  # the flush may have begun connections on more binds
    if bound is None or len(bound) < 2 or any(b.transaction is None for b in bound):
        return _commit_each(active, bound)  # one connection (or a sandbox's savepoints): nothing to order
    ledger = _Ledger(bound)
    if all(session.twophase for session in active):
        _commit_two_phase(active, bound, ledger)
    else:
        _commit_in_bind_order(active, bound, ledger)
    return ledger.committed


def _commit_each(active: Sequence[Session], bound: list[BoundConnection] | None) -> list[str]:
    ledger = _Ledger(bound or [])
    try:
        for session in active:
            session.commit()
    except Exception as exc:
        if _lost(exc):
            for b in bound or []:
                ledger.lost(b)
        raise _fail(active, exc, ledger, stage="commit") from exc
    return ledger.binds


def _commit_in_bind_order(active: Sequence[Session], bound: list[BoundConnection], ledger: _Ledger) -> None:
    sessions_of = {id(b.connection): s for s in active for b in s.bound_connections()}  # type: ignore[attr-defined]
    for b in bound:
        assert b.transaction is not None
        try:
            b.transaction.commit()  # SQLAlchemy's own COMMIT: a disconnect invalidates the connection
        except Exception as exc:
            if _lost(exc):
                ledger.lost(b)
            raise _fail(active, exc, ledger, stage="commit", failed=b.bind, note=ledger.partly(b.bind)) from exc
        replace_finished_transaction(sessions_of[id(b.connection)], b.connection)
        ledger.done(b)
    try:
        for session in active:  # before_commit/after_commit events and expiry; the binds are committed
            session.commit()
    except Exception as exc:
        raise _fail(active, exc, ledger, stage="commit (after every bind committed)") from exc


def _commit_two_phase(active: Sequence[Session], bound: list[BoundConnection], ledger: _Ledger) -> None:
    for index, b in enumerate(bound):
        assert b.transaction is not None
        try:
            b.transaction.prepare()  # type: ignore[attr-defined]
        except Exception as exc:
            # The decision is rollback. A PREPARE whose answer was lost may still have prepared it.
            _finish_all(bound[: index + 1], "rollback", ledger)
            raise _fail(active, exc, ledger, stage="two-phase commit (prepare)", failed=b.bind) from exc
    # Every bind prepared: the decision is commit, and every bind is driven to it.
    errors: list[tuple[BoundConnection, Exception]] = []
    for b in bound:
        assert b.transaction is not None
        try:
            b.transaction.commit()
            ledger.done(b)
        except Exception as exc:
            errors.append((b, exc))
    if errors:
        _finish_all([b for b, _ in errors], "commit", ledger)
        if ledger.unknown:
            failed, first = next((b, e) for b, e in errors if b.bind in ledger.unknown)
            raise _fail(
                active, first, ledger, stage="two-phase commit (commit prepared)", failed=failed.bind
            ) from first
        for b, error in errors:
            logger.warning(
                "bind %r: COMMIT PREPARED failed (%s); committed by xid from a fresh connection",
                b.bind,
                describe_error(error),
            )
            b.connection.rollback()  # forget the failed attempt (no SQL: SQLAlchemy knows it is inactive)
    for b in bound:
        replace_finished_transaction(_session_of(active, b), b.connection)
    # The sessions' own commit() still runs the before_commit/after_commit events and expiry; each now
    # holds a fresh, empty transaction per connection, which must not be prepared (twophase is a public
    # Session attribute).
    for session in active:
        session.twophase = False
        try:
            session.commit()
        finally:
            session.twophase = True


def _session_of(active: Sequence[Session], bound: BoundConnection) -> Session:
    return next(s for s in active if any(b.connection is bound.connection for b in s.bound_connections()))  # type: ignore[attr-defined]


def _finish_all(bound: Sequence[BoundConnection], decision: twophase.Decision, ledger: _Ledger) -> None:
    """Drive each connection's transaction to ``decision``: on its own connection while it lives, else by
    xid from a fresh one; log at ERROR what could not be finished, with the statement that finishes it."""
    for b in bound:
        assert b.transaction is not None
        xid: str = b.transaction.xid  # type: ignore[attr-defined]
        if decision == "rollback" and b.transaction.is_active:
            try:
                b.transaction.rollback()  # ROLLBACK PREPARED (or a plain ROLLBACK) on its own connection
            except Exception:
                logger.warning("rolling back bind %r on its own connection failed; retrying by xid", b.bind)
            else:
                if not b.connection.invalidated:  # SQLAlchemy skips the ROLLBACK on a connection it knows dead
                    continue
        engine = b.connection.engine
        try:
            finished = twophase.finish(engine, xid, decision)
        except Exception as exc:
            ledger.lost(b)
            logger.error(
                "bind %r: the prepared transaction %s could not be finished (%s); the decision was to %s it: "
                "run %s on that database (%s); `litestar db check` lists it until then",
                b.bind, xid, describe_error(exc), decision, twophase.resolution(engine, xid, decision),
                engine.url.render_as_string(hide_password=True),
            )  # fmt: skip
            continue
        if decision == "commit":
            # Either the retry committed it now (finished), or it is no longer prepared because the
            # COMMIT PREPARED whose answer was lost did commit it (nobody else finishes this plugin's xids).
            ledger.done(b)
        elif finished:
            logger.warning("bind %r: rolled back the prepared transaction %s from a fresh connection", b.bind, xid)


async def _to_the_end(work: Awaitable[T]) -> tuple[T, bool]:
    """Await ``work`` to its end even if the calling task is cancelled meanwhile.

    Returns the result and whether a cancellation arrived (the caller re-raises it after reporting).
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            return await asyncio.shield(task), cancelled
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True


async def _settle_now(active: Sequence[AsyncSession | Session], commit: bool) -> tuple[list[str], CommitError | None]:
    async_sessions = [session.sync_session for session in active if isinstance(session, AsyncSession)]
    sync_sessions = [session for session in active if isinstance(session, Session)]
    committed: list[str] = []
    try:
        if async_sessions:
            committed += await greenlet_spawn(settle, async_sessions, commit)
        if sync_sessions:
            committed += await anyio.to_thread.run_sync(settle, sync_sessions, commit)
    except CommitError as exc:
        return list(exc.committed), exc
    return committed, None


def _misused(sessions: Sequence[AsyncSession | Session]) -> CommitError | None:
    misused = [s for s in sessions if isinstance(s, AsyncRoutingSession) and s.used_concurrently]
    if not misused:
        return None
    message = (
        "not committed: a session of this unit of work was used by several tasks at once (asyncio.gather, "
        "create_task), which SQLAlchemy sessions do not support; rolled back every bind"
    )
    logger.error(message)
    return CommitError(message)


async def settle_all(sessions: Sequence[AsyncSession | Session], commit: bool) -> CommitError | None:
    """:func:`settle` a unit of work's used sessions from async code; returns the error, if any.

    Async sessions are settled together in one of SQLAlchemy's greenlets, sync sessions in a worker
    thread. Settling runs to its end even if the calling task is cancelled: then what was committed is
    logged at WARNING (nobody is left to receive a response), and the cancellation is re-raised. Every
    session is marked settled: a later flush through it raises :class:`~plugin.exceptions.LifecycleError`.
    """
    active = [session for session in sessions if is_started(session) and session.in_transaction()]
    try:
        if not active:
            return None
        for session in active:
            if isinstance(session, AsyncRoutingSession):
                await session.until_idle()
        if (misuse := _misused(active)) is not None:
            commit = False
        (committed, error), cancelled = await _to_the_end(_settle_now(active, commit))
    finally:
        for session in sessions:
            mark_settled(session)
    if cancelled:
        outcome = f"committed: {quote_keys(committed)}" if commit else "rolled back"
        if error is not None:
            outcome = f"the commit failed (see the error above); committed: {quote_keys(committed)}"
        logger.warning("the task was cancelled while its transaction was being settled; settled anyway: %s", outcome)
        raise asyncio.CancelledError
    return misuse or error


async def _in_session(session: AsyncSession | Session, function: Callable[..., None], *args: Any) -> None:
    """Run sync session code: in SQLAlchemy's greenlet for async sessions, in a thread for sync ones."""
    if isinstance(session, AsyncSession):
        await greenlet_spawn(function, session.sync_session, *args)
    else:
        await anyio.to_thread.run_sync(function, session, *args)


async def _close(session: AsyncSession | Session) -> None:
    if isinstance(session, AsyncRoutingSession):
        await session.until_idle()
    try:
        await _in_session(session, Session.close)
    except Exception:
        # The connection is unusable (e.g. cancelled mid-query); drop it rather than pool it.
        logger.warning("closing a session failed; invalidating its connections", exc_info=True)
        try:
            await _in_session(session, Session.invalidate)
        except Exception:
            logger.exception("invalidating a session's connections failed")


async def close_all(sessions: Sequence[AsyncSession | Session]) -> None:
    """Close every used session (rolling back what is open), to the end even when cancelled meanwhile."""
    holding = []
    for session in sessions:
        if not is_started(session):
            continue
        if not session.in_transaction():
            # Holds no connection: closing is bookkeeping (no I/O), so no greenlet or thread is needed.
            (session.sync_session if isinstance(session, AsyncSession) else session).close()
        else:
            holding.append(session)
    if holding:
        _, cancelled = await _to_the_end(asyncio.gather(*(_close(session) for session in holding)))
        if cancelled:
            raise asyncio.CancelledError


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
        mark_settled(session)
        if is_started(session):
            session.close()
