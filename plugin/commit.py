"""Committing a unit of work's connections, and a ledger of what really happened to each bind.

:func:`settle` commits or rolls back a unit of work's sessions (a request's, a script's) as one
transaction, and whatever goes wrong, the ERROR log and the :class:`~plugin.exceptions.CommitError` it
raises say which binds committed, which failed, and which have an unknown outcome:

1. Every session flushes first, so that an integrity error leaves all of them uncommitted; then each runs
   what its ``commit()`` runs before committing (``before_commit`` listeners, and a flush of the rows they
   add), so that those rows are committed with the rest, on whichever bind they belong to.
2. With two-phase commit, every connection prepares (in bind order) before any commits. A failed
   PREPARE rolls back everything, by xid from a fresh connection where a connection died (its PREPARE
   may have reached the server). Once all prepared, the decision is *commit*: a failed
   ``COMMIT PREPARED`` / ``XA COMMIT`` is retried by xid on a fresh connection. A prepared transaction
   that cannot be finished is logged with the exact statement that finishes it.
3. Otherwise each connection commits in bind order (default bind first, then config order) through its
   own SQLAlchemy ``Transaction``, so a dead connection is invalidated by SQLAlchemy rather than pooled.
   A COMMIT whose answer never arrived has an unknown outcome, and is reported as such.

Written once, for the sync ``Session``: :mod:`plugin.transactions` runs it for async sessions in
SQLAlchemy's greenlet and for sync sessions in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.exc import DBAPIError, IntegrityError

from plugin import twophase
from plugin._sqlalchemy import (
    has_changes,
    own_transaction,
    prepare_commit,
    replace_finished_transaction,
    rolled_back_by_commit,
)
from plugin.exceptions import (
    CommitConflictError,
    CommitError,
    LifecycleError,
    describe_error,
    failing_engine,
    mask_url,
    quote_keys,
)
from plugin.sessions import BoundConnection, RoutingSession, began_connections, or_invalidate

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

__all__ = ("Gate", "ListenersWrote", "Settling", "flush_all", "only_read", "settle")

logger = logging.getLogger("plugin.transactions")


class Settling:
    """Whether a settle may still be stopped: until its first COMMIT (or PREPARE), nothing is committed.

    A settle flushes first, and a flush may wait on a lock another session of the same request holds: a
    cancelled request must be able to stop it there. From the first COMMIT on it must run to its end.
    The worker thread of a sync settle and the event loop both ask, so the answer is taken under a lock.
    """

    __slots__ = ("_lock", "abandoned", "committing", "interruptible")

    def __init__(self, *, interruptible: bool) -> None:
        self._lock = threading.Lock()
        self.committing = False
        self.abandoned = False
        self.interruptible = interruptible
        """Whether an abandoned settle's task may be cancelled: yes in SQLAlchemy's greenlet, where it stops
        the flush at its next await; no in a worker thread, which would go on using the sessions while
        they are closed. There the settle stops by itself, before committing."""

    def begin_commit(self) -> bool:
        """Called by the settle just before it commits: False when it was abandoned meanwhile."""
        with self._lock:
            self.committing = not self.abandoned
            return self.committing

    def abandon(self) -> bool:
        """Called on cancellation: True when nothing was committed yet, so the settle stops before committing."""
        with self._lock:
            self.abandoned = not self.committing
            return self.abandoned


def _lost(exc: BaseException) -> bool:
    """Whether the connection died under the statement, so the server's answer never arrived."""
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class _Ledger:
    """What happened to each bind of a unit of work, for the log line and the error."""

    def __init__(self, bound: Sequence[BoundConnection]) -> None:
        total: dict[str, int] = {}  # connections per bind, in bind order
        for b in bound:  # a loop, not generator expressions: every request that commits builds a ledger
            total[b.bind] = total.get(b.bind, 0) + 1
        self.binds = list(total)
        self._total = total
        self._remaining = dict(total)
        self.committed: list[str] = []
        self.unknown: list[str] = []
        self.outside: set[str] = set()
        """What happened to writes through engines outside the binds: ``committed``, ``unknown``, ``rolled back``
        (several, when sessions fared differently). Reported under :data:`OUTSIDE_BINDS`."""
        self.failing_binds: list[str] | None = None
        """The binds of the session whose own ``commit()`` failed, where sessions commit one by one."""

    def include(self, key: str) -> None:
        """Count bind ``key`` too: the unit of work's commit began it (a flush inside ``commit()``) and failed
        there, so it is reported as rolled back."""
        if key not in self._total:
            self.binds.append(key)
            self._total[key] = self._remaining[key] = 1

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

    def reported(self, outcome: str) -> list[str]:
        """The binds whose outcome is ``outcome`` (``committed``, ``unknown`` or ``rolled back``), then
        :data:`OUTSIDE_BINDS` when a write through an engine outside the binds had it."""
        if outcome == "committed":
            binds = self.committed
        elif outcome == "unknown":
            binds = self.unknown
        else:
            binds = [k for k in self.binds if k not in self.committed and k not in self.unknown]
        return [*binds, OUTSIDE_BINDS] if outcome in self.outside else binds


def _roll_back(session: Session) -> None:
    """Roll ``session`` back; if even that fails, log it and drop its connections rather than pool them."""
    or_invalidate(session, session.rollback, "rolling back")


class Gate(Protocol):
    """Who may use each session of a flush run in a worker thread the request may stop waiting for
    (:data:`plugin.sessions.threads`): a session closed by the request's end meanwhile is skipped."""

    def enter(self, session: Session) -> bool:
        """Whether the worker may use ``session`` now (``False``: it was closed); then :meth:`leave` it."""

    def leave(self, session: Session) -> None:
        """The worker is done with ``session`` for now."""


def _fail(
    sessions: Sequence[Session],
    exc: BaseException,
    ledger: _Ledger,
    *,
    stage: str,
    failed: str | None = None,
    note: str = "",
    gate: Gate | None = None,
    on_a_bind: bool = True,
) -> CommitError:
    """Roll back every session, log at ERROR what happened to each bind, and build the error to raise.

    ``on_a_bind=False``: what failed was no bind's COMMIT (the sessions' own commit once every bind
    committed: their events, an engine outside the binds), so the message blames none."""
    if failed is None and on_a_bind:
        # The bind the failing statement ran on (a flush of several binds; a before_commit listener's rows on
        # another bind than the request's), else the only one.
        failed = _failing_bind(sessions, exc) or (ledger.binds[0] if len(ledger.binds) == 1 else None)
    if failed is not None:
        ledger.include(failed)
    for session in sessions:  # asked before the rollback ends their transactions
        if _wrote_outside(session):  # a connection outside the binds not committed (or lost) yet
            ledger.outside.add("rolled back")
    for session in sessions:
        if gate is None:
            _roll_back(session)
        elif gate.enter(session):
            try:
                _roll_back(session)
            finally:
                gate.leave(session)
    conflict = isinstance(exc, IntegrityError) and not ledger.reported("unknown")
    kind = CommitConflictError if conflict else CommitError
    binds = ledger.binds
    where = f"bind {failed!r}" if failed else f"bind{'s' if len(binds) != 1 else ''} {quote_keys(binds)}"
    where = f" on {where}" if on_a_bind else ""
    committed, lost = ledger.reported("committed"), ledger.reported("unknown")
    unknown = (
        f"; outcome unknown: {quote_keys(lost)} (the connection was lost before the server answered)" if lost else ""
    )
    message = (
        f"{stage} failed{where}: {describe_error(exc)}; committed: {quote_keys(committed)}"
        f"{unknown}; rolled back: {quote_keys(ledger.reported('rolled back'))}{note}"
    )
    logger.error(message)
    return kind(message, committed=tuple(committed), failed=failed, unknown=tuple(lost))


def _failing_bind(sessions: Sequence[Session], exc: BaseException) -> str | None:
    """The bind, among these sessions' binds, whose engine raised ``exc`` (None: not known, or another
    engine: a replica's, one outside the binds)."""
    engine = failing_engine(exc)
    routing = next((s for s in sessions if isinstance(s, RoutingSession)), None)
    if engine is None or routing is None:
        return None
    try:
        return routing.bind_of(engine)
    except LifecycleError:
        return None


def _bound(sessions: Sequence[Session]) -> list[BoundConnection] | None:
    """Every connection the sessions' transactions began, in bind order (None: not routing sessions)."""
    bound: list[BoundConnection] = []
    for session in sessions:
        if not isinstance(session, RoutingSession):
            return None
        bound += session.__dict__.get("_begun") or ()
    if len(bound) > 1:
        rank = sessions[0].router.rank  # type: ignore[attr-defined]
        bound.sort(key=lambda b: rank[b.bind])
    return bound if sessions else None


def _session_of(active: Sequence[Session], bound: BoundConnection) -> Session:
    """The session that began ``bound``'s connection."""
    return next(
        s
        for s in active
        if isinstance(s, RoutingSession) and any(b.connection is bound.connection for b in s.bound_connections())
    )


def flush_all(active: Sequence[Session], gate: Gate | None = None) -> None:
    """Step 1 of :func:`settle`: flush every session of ``active`` (each in a transaction). Nothing is
    committed yet, so this may be stopped (see :class:`Settling`). With ``gate``, each session is used
    (flushed, or rolled back) only while the gate lets it.

    Raises :class:`CommitError` when a flush fails, after rolling every session back.
    """
    for session in active:
        if gate is not None and not gate.enter(session):
            continue  # closed meanwhile: nothing of it is left to flush
        failure: Exception | None = None
        try:
            # A savepoint the handler left open is released first, as Session.commit() does: the commit
            # goes to each connection's root transaction, under the savepoint's feet.
            while (nested := session.get_nested_transaction()) is not None:
                nested.commit()
            session.flush()
        except Exception as exc:  # the failing statement was routed before it failed: its bind is known
            failure = exc
        finally:
            if gate is not None:
                gate.leave(session)
        if failure is not None:
            raise _fail(active, failure, _Ledger(_bound(active) or []), stage="flush", gate=gate) from failure


def settle(
    sessions: Sequence[Session], commit: bool, settling: Settling | None = None, *, read_only: bool = False
) -> list[str]:
    """Commit or roll back a unit of work (a request's sessions, a script's) as one transaction.

    Returns the binds that committed (and :data:`OUTSIDE_BINDS` when a session that wrote held a connection
    of an engine outside them). Raises :class:`CommitError` when the commit fails, after rolling
    every session back; the sessions must still be closed by the caller. A rollback that fails is
    logged and its connections invalidated; it never raises. With ``settling``, a settle abandoned while
    it flushed stops before committing, raising ``asyncio.CancelledError``. With ``read_only`` (a unit of
    work settled as one that only read), it raises :class:`ListenersWrote` before committing anything when
    a ``before_commit`` listener wrote: the caller settles it as a write.
    """
    active = [session for session in sessions if session.in_transaction()]
    if not active:
        return []
    if not commit:
        for session in active:
            _roll_back(session)
        return []
    flush_all(active)
    _prepare_all(active)
    if read_only and not only_read(active):
        raise ListenersWrote
    if settling is not None and not settling.begin_commit():
        raise asyncio.CancelledError("the settle was abandoned before it committed")
    in_doubt = _in_doubt(active)
    if in_doubt:
        in_doubt.retry()  # transactions an earlier commit could not finish, now that a server may be back
    if len(active) == 1 and (alone := _alone(active[0])) is not None:
        return _commit_alone(active[0], alone)
    bound = _bound(active)  # the flush may have begun connections on more binds
    held = _holds_others(active)
    two_phase = True
    for session in active:
        two_phase = two_phase and session.twophase
    # One connection (or a sandbox's savepoints): nothing to order. With two-phase sessions even a single
    # connection is prepared (SQLAlchemy begins it as a two-phase transaction), so it is finished by xid too.
    # A connection that is not a bind's (an engine outside the binds, a read replica's) is committed after the
    # binds: beside a bind's connection, the bind commits first, by itself, so that a failure of the bind
    # leaves the other uncommitted, and a failure of the other cannot be mistaken for the bind's.
    ledger = _Ledger(bound or ())
    if bound is None or _joined(bound) or (len(bound) < (1 if two_phase else 2) and not (held and bound)):
        _commit_each(active, bound, ledger)
    elif two_phase:
        _commit_two_phase(active, bound, ledger)
    else:
        _commit_in_bind_order(active, bound, ledger)
    return ledger.reported("committed")


def _prepare_all(active: Sequence[Session]) -> None:
    """Run each routing session's ``before_commit`` listeners and flush the rows they add, before anything
    commits (:func:`~plugin._sqlalchemy.prepare_commit`). Left to its own ``commit()``, a listener's row on
    another bind began that bind's connection inside it, which SQLAlchemy commits in no fixed order and this
    module never saw; and beside other binds, committed first, the rows ran in a transaction of their own.

    Raises :class:`CommitError`, after rolling every session back, when a listener or its flush fails, or
    a listener ended or changed another session of the unit of work once that one was prepared (its
    changes would not be committed).
    """
    began = _bound(active) or []  # a session whose transaction a listener ended forgets its connections
    prepared: list[tuple[Session, object]] = []
    try:
        for session in active:
            if isinstance(session, RoutingSession):  # another session's commit() is not ordered: it prepares itself
                prepare_commit(session)
                prepared.append((session, session.get_transaction()))
        # A session's own listeners ran before its flush; only another session's can have touched it since.
        for session, transaction in prepared if len(prepared) > 1 else ():
            if session.get_transaction() is not transaction or has_changes(session):
                raise LifecycleError(CHANGED_BY_A_LISTENER)
    except Exception as exc:
        ledger = _Ledger(began)
        for b in _bound(active) or ():
            ledger.include(b.bind)
        # Named only when a bind's statement failed (a listener's row): a listener raising is no bind's failure.
        failed = _failing_bind(active, exc)
        raise _fail(active, exc, ledger, stage="commit", failed=failed, on_a_bind=failed is not None) from exc


CHANGED_BY_A_LISTENER = (
    "a before_commit listener ended or changed another session of the unit of work (rollback(), close(), or "
    "its rows) after that session's rows were flushed for the commit: those changes would not be committed. "
    "Change a session's rows in the listener it is called for, with the session it is given"
)


class ListenersWrote(Exception):
    """Raised by ``settle(read_only=True)``: ``before_commit`` listeners wrote (their rows are flushed,
    nothing is committed), so the unit of work is no longer one that only read."""


def only_read(sessions: Sequence[Session]) -> bool:
    """Whether none of ``sessions`` wrote, may have written, or has changes a flush would write."""
    for session in sessions:  # noqa: SIM110 - a loop, not all() over a generator: this runs on every request
        if getattr(session, "wrote", True) or has_changes(session):
            return False
    return True


CHANGED_WHILE_COMMITTING = (
    "a session's objects were changed while the unit of work committed (by another session's after_commit "
    "listener?), after its rows were flushed: those changes are not committed. Make them in a before_commit "
    "listener, or in a transaction of their own: `async with plugin.transaction() as session:`"
)


OUTSIDE_BINDS = "(an engine outside the binds)"
"""How :func:`settle`, its log lines and :class:`~plugin.exceptions.CommitError` name what was written
through engines that are not binds (``bind_arguments={"bind": engine}``, each connection committed by
itself after the binds): a WARNING about a lost response must not say ``committed: (none)`` of it."""


def _holds_others(sessions: Sequence[Session]) -> bool:
    """Whether a session holds a connection that is not a bind's: of an engine outside the binds, or of a
    read replica."""
    for session in sessions:
        if getattr(session, "outside", False) or session.__dict__.get("replica_connections"):
            return True
    return False


def _wrote_outside(session: Session) -> bool:
    """Whether ``session``'s transaction holds a connection outside the binds, and the session wrote."""
    return bool(getattr(session, "outside", False) and getattr(session, "wrote", True))


def _joined(bound: Sequence[BoundConnection]) -> bool:
    """Whether a connection is one the sessions joined (a sandbox's) rather than began."""
    for b in bound:  # noqa: SIM110 - a loop, not any() over a generator: this runs on every request
        if b.transaction is None:
            return True
    return False


def _alone(session: Session) -> list[BoundConnection] | None:
    """The connection (one at most) of a routing session whose own ``commit()`` is the whole unit of work's
    commit: it began at most one bind connection, joined none, holds none outside the binds or of a replica,
    and commits in one phase. ``None`` for any other session.

    A request's unit of work is most often such a session. Settled through :func:`_commit_each`, its
    bookkeeping (the ordering, the ledger counting its connection) cost a primary-key read about 19,000
    instructions (counted with callgrind; docs/benchmarks.md); :func:`_commit_alone` builds the ledger only
    when the commit fails.
    """
    begun: list[BoundConnection] | None = session.__dict__.get("_begun")
    if begun is None or len(begun) > 1 or session.twophase or _holds_others((session,)) or _joined(begun):
        return None
    return list(begun)


def _commit_alone(session: Session, began: list[BoundConnection]) -> list[str]:
    """:func:`_commit_each` of the one session :func:`_alone` found: the same commit and the same report."""
    try:
        session.commit()
    except Exception as exc:
        ledger = _Ledger(began)
        _count_failed_commit(session, began, exc, ledger)
        raise _fail((session,), exc, ledger, stage="commit", on_a_bind=bool(ledger.failing_binds)) from exc
    return [b.bind for b in began]


def _commit_each(active: Sequence[Session], bound: list[BoundConnection] | None, ledger: _Ledger) -> None:
    # No connection of a bind: what the sessions hold are replica reads (a standby refuses PREPARE) or
    # engines outside the binds; two-phase commit has nothing to coordinate, so each commits in one phase.
    try:
        _commit_sessions(active, ledger, one_phase=bound == [], count_binds=True)
    except Exception as exc:
        failing = ledger.failing_binds
        raise _fail(active, exc, ledger, stage="commit", on_a_bind=bool(failing)) from exc


def _commit_sessions(active: Sequence[Session], ledger: _Ledger, *, one_phase: bool, count_binds: bool) -> None:
    """Each session's own ``commit()``, in turn (its events and expiry, and what it still holds), each of its
    connections outside the binds first, by itself, so that each is reported as it fared.

    ``one_phase``: two-phase sessions commit in one phase (nothing of theirs is to be prepared).
    ``count_binds``: the sessions' commits commit their binds' connections (the ordered paths did already),
    so the ledger counts them as each session's commit succeeds, or loses them when its connection died.
    """
    for session in active:
        if isinstance(session, RoutingSession) and has_changes(session):
            raise LifecycleError(CHANGED_WHILE_COMMITTING)
        _commit_outside(session, ledger)
        began = began_connections(session) if count_binds else []
        try:
            if one_phase and session.twophase:
                session.twophase = False
                try:
                    session.commit()
                finally:
                    session.twophase = True
            else:
                session.commit()
        except Exception as exc:
            _count_failed_commit(session, began, exc, ledger)
            raise
        for b in began:
            if b.transaction is not None:  # a sandbox's sessions only released savepoints: nothing is committed
                ledger.done(b)


def _count_failed_commit(session: Session, began: list[BoundConnection], exc: Exception, ledger: _Ledger) -> None:
    """Record in ``ledger`` what ``session.commit()``, which raised ``exc``, did to the bind connections it
    ``began``, and the binds of the failing ones.

    Its commit() may have committed some connections before it failed (or failed after all of them, in an
    ``after_commit`` listener): SQLAlchemy lets go of a connection's transaction once its COMMIT went
    through, and of all of them when the commit rolled back first (a flush in it failed).
    """
    rolled_back = rolled_back_by_commit(session)
    failing = [b for b in began if b.transaction is not None and (rolled_back or not _committed(b))]
    ledger.failing_binds = [b.bind for b in failing]
    for b in began:
        if b.transaction is not None and b not in failing:
            ledger.done(b)
        elif _lost(exc):
            ledger.lost(b)


def _committed(bound: BoundConnection) -> bool:
    """Whether the transaction a session began on ``bound``'s connection ended (a failed COMMIT leaves it the
    connection's transaction, inactive; one not tried yet is still active): committed, unless the session's
    commit() rolled back first (:func:`~plugin._sqlalchemy.rolled_back_by_commit`)."""
    transaction = bound.transaction
    return transaction is not None and not transaction.is_active and bound.connection.get_transaction() is None


def _commit_outside(session: Session, ledger: _Ledger) -> None:
    """Commit ``session``'s connections outside the binds one by one, as its own ``commit()`` would (after the
    binds), recording each outcome; each committed one gets a fresh transaction for the session's commit()."""
    if not _wrote_outside(session):
        return  # none, or only read through them: the session's own commit() ends them
    pending: list[Connection] = getattr(session, "outside", [])
    while pending:
        connection = pending[0]
        transaction = own_transaction(session, connection)
        if transaction is not None:
            try:
                transaction.commit()
            except Exception as exc:
                if _lost(exc):
                    ledger.outside.add("unknown")
                    pending.pop(0)  # not rolled back either: its outcome is unknown
                raise
            replace_finished_transaction(session, connection)
            ledger.outside.add("committed")
        pending.pop(0)


def _commit_in_bind_order(active: Sequence[Session], bound: list[BoundConnection], ledger: _Ledger) -> None:
    for b in bound:
        assert b.transaction is not None
        try:
            b.transaction.commit()  # SQLAlchemy's own COMMIT: a disconnect invalidates the connection
        except Exception as exc:
            if _lost(exc):
                ledger.lost(b)
            raise _fail(active, exc, ledger, stage="commit", failed=b.bind, note=ledger.partly(b.bind)) from exc
        replace_finished_transaction(_session_of(active, b), b.connection)
        ledger.done(b)
    try:  # before_commit/after_commit events and expiry; the binds are committed
        _commit_sessions(active, ledger, one_phase=False, count_binds=False)
    except Exception as exc:
        raise _fail(active, exc, ledger, stage="commit (after every bind committed)", on_a_bind=False) from exc


def _commit_two_phase(active: Sequence[Session], bound: list[BoundConnection], ledger: _Ledger) -> None:
    for index, b in enumerate(bound):
        assert b.transaction is not None
        try:
            b.transaction.prepare()  # type: ignore[attr-defined]
        except Exception as exc:
            # The decision is rollback. A PREPARE whose answer was lost may still have prepared it.
            _finish_all(active, bound[: index + 1], "rollback", ledger, _in_doubt(active))
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
        _finish_all(active, [b for b, _ in errors], "commit", ledger, _in_doubt(active))
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
    try:
        _commit_sessions(active, ledger, one_phase=True, count_binds=False)
    except Exception as exc:
        raise _fail(active, exc, ledger, stage="commit (after every bind committed)", on_a_bind=False) from exc


def _in_doubt(sessions: Sequence[Session]) -> twophase.InDoubt | None:
    for session in sessions:
        if isinstance(session, RoutingSession):
            return session.in_doubt
    return None


def _forget_finished(active: Sequence[Session], bound: BoundConnection) -> None:
    """After ``bound``'s transaction ended on its own connection, give its session a fresh one there, so the
    session's own rollback finds a live transaction (SQLAlchemy warns about a finished one)."""
    if bound.connection.get_transaction() is not None:
        return  # a failed COMMIT is still the connection's transaction: the session's rollback ends it
    try:  # on a connection SQLAlchemy invalidated this reconnects, which may fail while the server is away
        replace_finished_transaction(_session_of(active, bound), bound.connection)
    except Exception:
        logger.debug("no fresh transaction for bind %r; its session's rollback will warn", bound.bind, exc_info=True)


def _finish_all(
    active: Sequence[Session],
    bound: Sequence[BoundConnection],
    decision: twophase.Decision,
    ledger: _Ledger,
    in_doubt: twophase.InDoubt | None,
) -> None:
    """Drive each connection's transaction to ``decision``: on its own connection while it lives, else by
    xid from a fresh one; log at ERROR what could not be finished, with the statement that finishes it, and
    leave it to ``in_doubt``, which tries again before later commits and at shutdown."""
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
                    _forget_finished(active, b)
                    continue
        engine = b.connection.engine
        try:
            finished = twophase.finish(engine, xid, decision)
        except Exception as exc:
            ledger.lost(b)
            if in_doubt is not None:
                in_doubt.add(b.bind, engine, xid, decision)
            logger.error(
                "bind %r: the prepared transaction %s could not be finished (%s); the decision was to %s it: "
                "run %s on that database (%s), or let the plugin do it: it tries again every 2 s and before each "
                "commit while it runs, and at shutdown; `litestar db check` lists it until then",
                b.bind, xid, describe_error(exc), decision, twophase.resolution(engine, xid, decision),
                mask_url(engine.url),
            )  # fmt: skip
            continue
        if decision == "commit":
            # Either the retry committed it now (finished), or it is no longer prepared because the
            # COMMIT PREPARED whose answer was lost did commit it (nobody else finishes this plugin's xids).
            ledger.done(b)
        else:
            if finished:
                logger.warning("bind %r: rolled back the prepared transaction %s from a fresh connection", b.bind, xid)
            _forget_finished(active, b)
