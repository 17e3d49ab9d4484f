"""Units of work from async code: settle and close a request's (or a script's) sessions, to the end.

:func:`settle_all` runs :func:`~plugin.commit.settle` for async sessions in SQLAlchemy's greenlet and
for sync sessions in a worker thread, and keeps it running when the calling task is cancelled
meanwhile: a half-finished COMMIT would leave some binds committed and nobody told. :func:`close_all`
closes the same way. :func:`unit_of_work` is ``plugin.transaction()``: a block under the policy.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.util import greenlet_spawn

from plugin.commit import ListenersWrote, Settling, flush_all, only_read, settle
from plugin.exceptions import CommitError, quote_keys
from plugin.policy import SUCCESS_STATUS, TransactionPolicy
from plugin.sessions import (
    AsyncRoutingSession,
    began_connections,
    close_now,
    is_started,
    mark_ended,
    mark_settled,
    threads,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

    from sqlalchemy.orm import Session

__all__ = (
    "SUCCESS_STATUS",
    "Settling",
    "TransactionPolicy",
    "close_all",
    "close_idle",
    "settles_on_the_loop",
    "settle",
    "settle_all",
    "unit_of_work",
    "unit_of_work_sync",
)

logger = logging.getLogger("plugin.transactions")

T = TypeVar("T")


def _resolve(future: asyncio.Future[None], _task: object) -> None:
    if not future.done():
        future.set_result(None)


async def _to_the_end(
    work: Awaitable[T], settling: Settling | None = None
) -> tuple[T | None, asyncio.CancelledError | None]:
    """Await ``work`` to its end even if the calling task is cancelled meanwhile.

    Returns the result and the cancellation that arrived meanwhile, if any: the caller re-raises that very
    exception after reporting (an anyio cancel scope recognises its own cancellation by its message). With
    ``settling``, a cancellation that arrives before the work began committing stops the work instead
    (the result is then ``None``).

    The work runs in a task of its own, so cancelling the caller cannot cancel the database call it is
    awaiting. The caller waits on a plain future the work resolves as its last step, which is what
    ``asyncio.shield`` does with two more callbacks through the loop. Measured with callgrind (Python
    3.11, a work of one ``sleep(0)`` awaited 2,000 times): about 52,000 instructions more than awaiting
    the work directly, against about 88,000 with ``shield``.
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
            if settling is not None and settling.abandon() and settling.interruptible:
                task.cancel()  # a task cancelled before its first step never runs run()'s finally: watch the task
            if not task.done():
                finished = loop.create_future()
                task.add_done_callback(functools.partial(_resolve, finished))
    if task.cancelled() and settling is not None and settling.abandoned:
        return None, cancelled  # stopped here, before committing; anything else cancelling it is re-raised
    return task.result(), cancelled


def _by_kind(active: Sequence[AsyncSession | Session]) -> tuple[list[Session], list[Session]]:
    async_sessions: list[Session] = []
    sync_sessions: list[Session] = []
    for session in active:
        if isinstance(session, AsyncSession):
            async_sessions.append(session.sync_session)
        else:
            sync_sessions.append(session)
    return async_sessions, sync_sessions


async def _settle_now(
    async_sessions: list[Session], sync_sessions: list[Session], commit: bool, settling: Settling | None
) -> tuple[list[str], CommitError | None]:
    """Flush and settle, async sessions in one of SQLAlchemy's greenlets, sync ones in a worker thread."""
    committed: list[str] = []
    try:
        if async_sessions:
            committed += await greenlet_spawn(settle, async_sessions, commit, settling)
        if sync_sessions:
            committed += await anyio.to_thread.run_sync(settle, sync_sessions, commit, settling)
    except CommitError as exc:
        return list(exc.committed), exc
    return committed, None


def _only_read(async_sessions: list[Session], sync_sessions: list[Session]) -> bool:
    """Whether a unit of work may commit without the shield: async sessions that neither wrote, may have
    written, nor have changes a flush would write, none of them two-phase.

    Not a sync session: its commit runs in a worker thread a cancellation cannot stop, and the cancelled
    caller would close the session under that running commit. Not two-phase: a cancellation between
    PREPARE and COMMIT PREPARED would leave a prepared transaction, holding its locks, that nothing finishes.
    """
    if sync_sessions:
        return False
    for session in async_sessions:
        if session.twophase:
            return False
    return only_read(async_sessions)


def settles_on_the_loop(sessions: Sequence[AsyncSession | Session]) -> bool:
    """Whether :func:`settle_all` would settle a transaction of these sessions from the event loop: at least
    one used session is in a transaction, and every used session is async (none settles in a worker thread).
    Asked before the settle: afterwards no session is in a transaction."""
    in_transaction = False
    for session in sessions:  # one loop, no lists: this runs on every request that used a session
        if is_started(session):
            if not isinstance(session, AsyncSession):
                return False
            in_transaction = in_transaction or session.sync_session.in_transaction()
    return in_transaction


async def _settle_read_only(sessions: list[Session]) -> tuple[list[str], CommitError | None] | None:
    """Commit a unit of work that only read (async sessions, see :func:`_only_read`) in the calling task:
    a cancellation has no write to lose there.

    The shield (a task of its own, :func:`_to_the_end`) protects writes from a cancellation landing
    between two binds' COMMITs or inside one; without writes, what a COMMIT ends is reads. If a
    cancellation does land during the COMMIT, it interrupts it (SQLAlchemy drops the connection) and the
    WARNING says the outcome is unknown, which covers a write hidden where the plugin cannot see it (a
    ``SELECT`` of a function that writes). One that lands before the settle began committing (in a
    ``before_commit`` listener, or the flush of its rows) stops it there, and nothing is logged: nothing was
    committed, and the sessions roll back when closed. Measured: the shield costs a primary-key read about
    45,000 instructions, 3 % of the request (docs/benchmarks.md).

    Returns ``None``, having committed nothing, when ``before_commit`` listeners wrote: the caller settles
    the unit of work as a write, shielded.
    """
    settling = Settling(interruptible=True)  # nothing abandons it here: it tells whether committing began
    try:
        return await greenlet_spawn(settle, sessions, True, settling, read_only=True), None
    except ListenersWrote:
        return None
    except CommitError as exc:
        return list(exc.committed), exc
    except asyncio.CancelledError:
        if not settling.committing:
            raise  # cut short before its first COMMIT (in a listener): the sessions roll back when closed
        binds = dict.fromkeys(b.bind for s in sessions for b in began_connections(s))
        where = f"bind{'s' if len(binds) != 1 else ''} {quote_keys(binds)}" if binds else "its read replicas"
        logger.warning(
            "the task was cancelled while committing a unit of work that only read; the outcome is unknown on %s",
            where,
        )
        raise


async def _flush_first(async_sessions: list[Session], sync_sessions: list[Session]) -> CommitError | None:
    """Step 1 of a commit (:func:`~plugin.commit.flush_all`), run from the calling task, which a cancellation
    may stop: nothing is committed yet. Returns the error of a failed flush (every session rolled back)."""
    if sync_sessions:
        # A worker thread cannot be interrupted, and its flush may wait on a lock another session of the
        # request holds, released only when that session is closed: flush in the request's own task,
        # whose wait a cancellation ends (the sessions are then closed, which releases the lock). Without
        # abandon_on_cancel anyio shields that wait from its own cancel scopes (a timeout middleware).
        # If the request is cancelled meanwhile, the worker thread closes the session it is inside of when
        # it leaves it (sessions.threads): closing it from here would be under its feet.
        try:
            await anyio.to_thread.run_sync(flush_all, sync_sessions, threads, abandon_on_cancel=True)
        except CommitError as exc:
            return exc
    if async_sessions:
        # Flushed here, as a hand-written `await session.commit()` flushes, the statements take their
        # connections from the pools now, rather than after the settle's task waited its turn behind
        # everything else ready to run. Under uvicorn with more requests than pooled connections, that turn
        # was the difference: inserts at concurrency 16 waited 2.3-3.2 ms for a connection and ran 108-156
        # young collections in 3 s with the flush in the task; 0.3 ms and 69-84 flushed here, as many as
        # the hand-written dependency (with plugin.middleware.give_way; docs/benchmarks.md).
        try:
            await greenlet_spawn(flush_all, async_sessions)
        except CommitError as exc:
            return exc
    return None


async def settle_all(
    sessions: Sequence[AsyncSession | Session], commit: bool, *, alone: bool = False
) -> tuple[list[str], CommitError | None]:
    """:func:`settle` a unit of work's used sessions from async code; returns the binds where a write
    committed (none for a unit of work that only read) and the error, if any.

    A commit first flushes every session from the calling task (async sessions in one of SQLAlchemy's
    greenlets, sync sessions in a worker thread); then the sessions are settled (committed, or rolled back)
    in a task of their own, async ones together in a greenlet, sync ones in a worker thread. ``alone`` (a
    request with no other in flight) leaves the async sessions' flush to the settle's own greenlet, where a
    cancellation stops it just the same: the flush in the calling task is for the pools when requests queue
    for connections, and alone it costs an insert a second greenlet, about 24,000 instructions of 1.86
    million (docs/benchmarks.md). Its limit: the flush then runs a turn later, and a request arriving in that
    turn can take a pool's last idle connection first. A cancellation of the calling task that arrives while
    the sessions flush stops the settle (nothing is committed; the sessions roll back when closed) and is
    re-raised.
    One that arrives once committing began lets it run to its end: then what was committed is logged at
    WARNING (nobody is left to receive a response), and the cancellation is re-raised. Every session is
    marked settled: a later flush through it raises :class:`~plugin.exceptions.LifecycleError`.

    A commit of async, one-phase sessions that only read runs in the calling task instead
    (:func:`_settle_read_only`): it has no write a cancellation could cut short.
    """
    active = [session for session in sessions if is_started(session) and session.in_transaction()]
    try:
        if not active:
            return [], None
        for session in active:
            if isinstance(session, AsyncRoutingSession) and session.__dict__.get("_user") is not None:
                await session.until_idle()
        async_sessions, sync_sessions = _by_kind(active)
        if commit and _only_read(async_sessions, sync_sessions):
            settled = await _settle_read_only(async_sessions)
            if settled is not None:
                return [], settled[1]  # no write was committed (what the caller warns about when the response is lost)
            # before_commit listeners wrote: their rows are flushed, and the unit of work is settled as a write
        if commit and (error := await _flush_first([] if alone else async_sessions, sync_sessions)) is not None:
            return [], error
        # A rollback is never stopped; a commit is, until it begins committing.
        settling = Settling(interruptible=not sync_sessions) if commit else None
        outcome, cancelled = await _to_the_end(_settle_now(async_sessions, sync_sessions, commit, settling), settling)
    finally:
        for session in sessions:
            mark_settled(session)
    if outcome is None:  # stopped while flushing: nothing was committed
        raise cancelled or asyncio.CancelledError()
    committed, error = outcome
    if cancelled is not None:
        result = f"committed: {quote_keys(committed)}" if commit else "rolled back"
        if error is not None:
            result = f"the commit failed (see the error above); committed: {quote_keys(committed)}"
        logger.warning("the task was cancelled while its transaction was being settled; settled anyway: %s", result)
        raise cancelled
    if committed and error is None and only_read(async_sessions) and only_read(sync_sessions):
        return [], None  # a unit of work that only read (sync, two-phase) committed no write either
    return committed, error


async def _in_session(session: AsyncSession | Session, function: Callable[..., None], *args: Any) -> None:
    """Run sync session code: in SQLAlchemy's greenlet for async sessions, in a thread for sync ones."""
    if isinstance(session, AsyncSession):
        await greenlet_spawn(function, session.sync_session, *args)
    else:
        await anyio.to_thread.run_sync(function, session, *args)


async def _close(session: AsyncSession | Session) -> None:
    if isinstance(session, AsyncRoutingSession) and session.__dict__.get("_user") is not None:
        await session.until_idle()
    # A sync session gets here only through close_idle(), which already closed it to its threads: no thread
    # is inside it, and none can enter.
    await _in_session(session, close_now)


def close_idle(sessions: Sequence[AsyncSession | Session]) -> list[AsyncSession | Session]:
    """Close the sessions that hold no connection (bookkeeping, no I/O) and mark them ended; return the
    others, for :func:`close_all`. Synchronous, so a request whose session was never used awaits nothing.

    A sync session is first closed to its threads (:data:`~plugin.sessions.threads`), before anything of it
    is read: one a thread is inside of (a handler the request stopped waiting for, maybe still setting the
    session up) is left to that thread; any other refuses further use, used or not.
    """
    holding: list[AsyncSession | Session] = []
    for session in sessions:
        if isinstance(session, AsyncSession):
            if is_started(session):
                if session.in_transaction():
                    holding.append(session)
                    continue
                session.sync_session.close()
        elif not threads.close_when_done(session) and is_started(session):
            if session.in_transaction():
                holding.append(session)
                continue
            session.close()
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
        _, error = await settle_all([session], not dry_run and policy.should_commit(SUCCESS_STATUS))
        if error is not None:
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
