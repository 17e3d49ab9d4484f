"""Units of work from async code: settle and close a request's (or a script's) sessions, to the end.

:func:`settle_all` runs :func:`~plugin.commit.settle` for async sessions in SQLAlchemy's greenlet and
for sync sessions in a worker thread, and keeps it running when the calling task is cancelled
meanwhile: a half-finished COMMIT would leave some binds committed and nobody told. :func:`close_all`
closes the same way. :func:`unit_of_work` is ``plugin.transaction()``: a block under the policy.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import greenlet_spawn

from plugin.commit import flush_all, settle
from plugin.exceptions import CommitError, quote_keys
from plugin.policy import SUCCESS_STATUS, TransactionPolicy
from plugin.sessions import AsyncRoutingSession, is_started, mark_ended, mark_settled

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

__all__ = (
    "SUCCESS_STATUS",
    "TransactionPolicy",
    "close_all",
    "close_idle",
    "settle",
    "settle_all",
    "unit_of_work",
    "unit_of_work_sync",
)

logger = logging.getLogger("plugin.transactions")

T = TypeVar("T")


async def _to_the_end(work: Awaitable[T]) -> tuple[T, asyncio.CancelledError | None]:
    """Await ``work`` to its end even if the calling task is cancelled meanwhile.

    Returns the result and the cancellation that arrived meanwhile, if any: the caller re-raises that very
    exception after reporting (an anyio cancel scope recognises its own cancellation by its message).

    The work runs in a task of its own, so cancelling the caller cannot cancel the database call it is
    awaiting. The caller waits on a plain future the work resolves as its last step, which is what
    ``asyncio.shield`` does with two more callbacks through the loop: 110,000 CPU instructions per
    settle with ``shield``, (see docs/benchmarks.md) against a third of that now.
    """
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    async def run() -> T:
        try:
            return await work
        finally:
            if not finished.done():  # the caller's wait may have been cancelled: it then waits on a new one
                finished.set_result(None)

    task = loop.create_task(run())
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await finished
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
            if not task.done():
                finished = loop.create_future()
    return task.result(), cancelled


def _by_kind(active: Sequence[AsyncSession | Session]) -> tuple[list[Session], list[Session]]:
    async_sessions = [session.sync_session for session in active if isinstance(session, AsyncSession)]
    return async_sessions, [session for session in active if isinstance(session, Session)]


def _has_pending(session: AsyncSession | Session) -> bool:
    """Whether a flush would do anything: changes to write, or a savepoint the handler left open."""
    return bool(session.new or session.deleted or session.dirty) or session.get_nested_transaction() is not None


async def _flush_now(active: Sequence[AsyncSession | Session]) -> None:
    """Flush every session; cancellable, since nothing is committed yet (sessions of one request that
    block each other on a lock would otherwise hang their request for good)."""
    async_sessions, sync_sessions = _by_kind(active)
    if async_sessions:
        await greenlet_spawn(flush_all, async_sessions)
    if sync_sessions:
        await anyio.to_thread.run_sync(flush_all, sync_sessions)


async def _settle_now(active: Sequence[AsyncSession | Session], commit: bool) -> tuple[list[str], CommitError | None]:
    async_sessions, sync_sessions = _by_kind(active)
    committed: list[str] = []
    try:
        if async_sessions:
            committed += await greenlet_spawn(settle, async_sessions, commit)
        if sync_sessions:
            committed += await anyio.to_thread.run_sync(settle, sync_sessions, commit)
    except CommitError as exc:
        return list(exc.committed), exc
    return committed, None


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
            if isinstance(session, AsyncRoutingSession) and session.__dict__.get("_user") is not None:
                await session.until_idle()
        if commit and any(_has_pending(session) for session in active):  # reads have nothing to flush
            try:
                await _flush_now(active)
            except CommitError as exc:
                return exc
        (committed, error), cancelled = await _to_the_end(_settle_now(active, commit))
    finally:
        for session in sessions:
            mark_settled(session)
    if cancelled is not None:
        outcome = f"committed: {quote_keys(committed)}" if commit else "rolled back"
        if error is not None:
            outcome = f"the commit failed (see the error above); committed: {quote_keys(committed)}"
        logger.warning("the task was cancelled while its transaction was being settled; settled anyway: %s", outcome)
        raise cancelled
    return error


async def _in_session(session: AsyncSession | Session, function: Callable[..., None], *args: Any) -> None:
    """Run sync session code: in SQLAlchemy's greenlet for async sessions, in a thread for sync ones."""
    if isinstance(session, AsyncSession):
        await greenlet_spawn(function, session.sync_session, *args)
    else:
        await anyio.to_thread.run_sync(function, session, *args)


async def _close(session: AsyncSession | Session) -> None:
    if isinstance(session, AsyncRoutingSession) and session.__dict__.get("_user") is not None:
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


def close_idle(sessions: Sequence[AsyncSession | Session]) -> list[AsyncSession | Session]:
    """Close the sessions that hold no connection (bookkeeping, no I/O) and mark them ended; return the
    others, for :func:`close_all`. Synchronous, so a request whose session was never used awaits nothing."""
    holding = []
    for session in sessions:
        if is_started(session) and session.in_transaction():
            holding.append(session)
            continue
        if is_started(session):
            (session.sync_session if isinstance(session, AsyncSession) else session).close()
        mark_ended(session)
    return holding


async def close_all(sessions: Sequence[AsyncSession | Session]) -> None:
    """Close every used session (rolling back what is open), to the end even when cancelled meanwhile."""
    holding = close_idle(sessions)
    try:
        if holding:
            _, cancelled = await _to_the_end(asyncio.gather(*(_close(session) for session in holding)))
            if cancelled is not None:
                raise cancelled
    finally:
        for session in holding:
            mark_ended(session)


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
