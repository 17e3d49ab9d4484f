"""The private corners of SQLAlchemy this package touches, kept here with tests that pin them
(``tests/plugin/test_private_sqlalchemy.py`` fails loudly if SQLAlchemy's layout changes).

- Committing a request's binds in a fixed order means committing each connection through its own
  ``Transaction`` (SQLAlchemy's ``Session.commit()`` commits a session's connections in no fixed order).
  The session still holds the finished transaction afterwards, and its own ``commit()`` would refuse it
  ("This transaction is inactive"), skipping the ``before_commit``/``after_commit`` events and expiry.
  :func:`replace_finished_transaction` gives the session a fresh, empty transaction on that connection,
  so its ``commit()`` and ``rollback()`` behave as usual. :func:`own_transaction` finds, for a
  connection outside the binds, the transaction the session's ``commit()`` would commit there (what
  ``SessionTransaction._connections`` holds: a joined connection's transaction is not the session's).
  :func:`rolled_back_by_commit` reads ``SessionTransaction._state`` to tell a ``commit()`` that failed
  after its COMMITs from one that rolled back before them (both leave the connections without a
  transaction).
- Committing in bind order also means running first what ``Session.commit()`` runs before its COMMITs (its
  ``before_commit`` event, and flushing what the event's listeners changed): rows a listener adds are part
  of the unit of work, and may need a connection of another bind. :func:`prepare_commit` does what
  ``SessionTransaction._prepare_impl()`` does but PREPARE (``Session._is_clean()``, ``dispatch``), under
  ``_StateChange.declare_states`` (the guard that refuses a listener's ``commit()``/``rollback()``/``close()``),
  and sets ``SessionTransaction._state`` to ``PREPARED``, so the session's own ``commit()`` goes straight to
  its COMMITs and the listeners run once.
- ``_mapper_registries``: every registry of the process, for ``base=None`` (no public listing exists).
- ``Session._flushing``: whether a flush is running. Read replica routing sends everything a flush does
  to the primary (SQLAlchemy's own "custom vertical partitioning" recipe reads the same attribute).
- ``GenerativeSelect._for_update_arg``: a ``SELECT ... FOR UPDATE`` (or ``FOR SHARE``) locks rows, which a
  standby cannot do; there is no public accessor.
- ``Session._is_clean()``: whether a flush would find nothing to write (``new``, ``deleted`` and
  ``dirty`` through public names build a set each; a unit of work is asked this on every request).
- ``Session._execute_internal``: where ``execute()``, ``scalar()``, ``scalars()`` (and through ``execute()``:
  ``get()``, lazy and eager loads, legacy ``Query``) run a statement. :class:`StatementHook` sees each
  statement there, as a ``do_orm_execute`` listener would, without the ``ORMExecuteState`` and the second
  pass over ORM options SQLAlchemy runs for any listener (see its docstring for the number).
- ``_generate_cache_key()``: a statement's structural cache key. SQLAlchemy memoizes it on the statement
  and computes it anyway to find the compiled SQL, so routing keyed on it costs a dictionary lookup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import FlushError
from sqlalchemy.orm.mapper import _mapper_registries
from sqlalchemy.orm.session import SessionTransaction, SessionTransactionState
from sqlalchemy.orm.state_changes import _StateChange
from sqlalchemy.sql.base import Executable

if TYPE_CHECKING:
    from collections.abc import Hashable

    from sqlalchemy.engine import Connection, RootTransaction
    from sqlalchemy.orm import registry
    from sqlalchemy.sql.expression import ClauseElement

__all__ = (
    "StatementHook",
    "has_changes",
    "is_flushing",
    "locks_rows",
    "own_transaction",
    "prepare_commit",
    "registries",
    "replace_finished_transaction",
    "rolled_back_by_commit",
    "structure_key",
)


def replace_finished_transaction(session: Session, connection: Connection) -> None:
    """After ``connection``'s transaction was committed directly, hand ``session`` a new one there."""
    transaction = session.get_transaction()
    if transaction is None:
        raise RuntimeError("the session has no transaction to update")
    # SessionTransaction._connections maps both the Connection and its Engine to
    # (connection, transaction, should_commit, autoclose).
    entries = transaction._connections
    _, _, should_commit, autoclose = entries[connection]
    fresh = connection.begin()
    entries[connection] = entries[connection.engine] = (connection, fresh, should_commit, autoclose)


def own_transaction(session: Session, connection: Connection) -> RootTransaction | None:
    """The root transaction ``session.commit()`` would commit on ``connection``: the one the session began
    there, still active; ``None`` for a connection it joined (a caller's transaction, even where the session
    made a savepoint of its own in it: releasing that commits nothing)."""
    transaction = session.get_transaction()
    if transaction is None or connection not in transaction._connections:
        return None
    _, own, should_commit, _ = transaction._connections[connection]
    root = connection.get_transaction()
    return root if should_commit and own.is_active and own is root else None


def prepare_commit(session: Session) -> None:
    """Do now what ``session.commit()`` does before its COMMITs, but PREPARE: run its ``before_commit``
    listeners, release the savepoints they leave, flush what they changed, and mark the transaction
    ``PREPARED``, so that its ``commit()`` only commits (and runs the ``after_commit`` listeners). A two-phase
    session's connections are prepared by the caller, in bind order; the connections its listeners' rows
    need are begun as two-phase ones (``SessionTransaction._prepare_impl()`` would PREPARE them all, in no
    fixed order). Nothing is done for a transaction that is not active (already prepared, or failed).

    It runs under SQLAlchemy's own state-change guard, as ``_prepare_impl()`` does inside ``commit()``: a
    listener's ``session.commit()``, ``rollback()`` or ``close()`` raises ``IllegalStateChangeError``."""
    transaction = session.get_transaction()
    if transaction is not None and transaction._state is SessionTransactionState.ACTIVE:
        before_commit(transaction)


@_StateChange.declare_states((SessionTransactionState.ACTIVE,), SessionTransactionState.PREPARED)
def before_commit(transaction: SessionTransaction) -> None:
    """:func:`prepare_commit`'s work; SQLAlchemy names it in the error a listener's misuse raises."""
    session = transaction.session
    session.dispatch.before_commit(session)
    while (nested := session.get_nested_transaction()) is not None:
        nested.commit()
    for _ in range(100):  # as commit() does: an after_flush listener may add rows again
        if session._is_clean():
            break
        session.flush()
    else:
        raise FlushError("over 100 flushes in a row before committing: does an after_flush listener add rows?")
    transaction._state = SessionTransactionState.PREPARED


def rolled_back_by_commit(session: Session) -> bool:
    """Whether ``session.commit()``, which raised, found the transaction rolled back by SQLAlchemy itself (a
    flush that failed, inside ``commit()`` or before it): its connections' transactions then ended without
    a COMMIT, though SQLAlchemy let go of them as it does after one. (``SessionTransaction._state`` is then
    ``DEACTIVE``; ``COMMITTED`` when an ``after_commit`` listener failed, ``PREPARED`` when a COMMIT did.)"""
    transaction = session.get_transaction()
    return transaction is not None and transaction._state is SessionTransactionState.DEACTIVE


def registries() -> list[registry]:
    """Every live declarative/imperative registry of the process (the mapping is weak)."""
    return list(_mapper_registries)


def structure_key(statement: ClauseElement) -> Hashable | None:
    """A hashable key equal for statements of the same structure (tables, columns, clauses; not the
    parameter values), or ``None`` when SQLAlchemy cannot cache the statement."""
    cache_key = statement._generate_cache_key()
    return None if cache_key is None else cache_key.key


def has_changes(session: Session) -> bool:
    """Whether ``session`` holds changes a flush would write (new, deleted or modified objects)."""
    return not session._is_clean()


def is_flushing(session: Session) -> bool:
    """Whether ``session`` is inside ``flush()`` (its ``get_bind`` calls come from the unit of work)."""
    return session._flushing


def locks_rows(statement: object) -> bool:
    """Whether a select statement has ``with_for_update()`` (``FOR UPDATE`` / ``FOR SHARE``)."""
    return getattr(statement, "_for_update_arg", None) is not None


class StatementHook(Session):
    """A ``Session`` whose :meth:`before_statement` sees every statement before it runs.

    Where a ``do_orm_execute`` listener would be called, but without what SQLAlchemy does for any such
    listener: an ``ORMExecuteState`` per statement and a second pass over the ORM options. On a primary-key
    read that was about 8,600 of 1.73 million instructions (counted with callgrind; docs/benchmarks.md).
    Anything that is not an executable statement goes straight to SQLAlchemy, which refuses it.
    """

    def before_statement(self, statement: Executable, bind_arguments: dict[str, Any] | None) -> dict[str, Any] | None:
        """Called before ``statement`` runs; returns the ``bind_arguments`` to run it with (``get_bind``'s)."""
        return bind_arguments

    def _execute_internal(
        self, statement: Executable, params: Any = None, *, bind_arguments: dict[str, Any] | None = None, **kw: Any
    ) -> Any:
        if isinstance(statement, Executable):
            bind_arguments = self.before_statement(statement, bind_arguments)
        return super()._execute_internal(statement, params, bind_arguments=bind_arguments, **kw)
