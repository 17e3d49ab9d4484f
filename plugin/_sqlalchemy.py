"""The one private corner of SQLAlchemy this package touches, kept here with a test that pins it.

Committing a request's binds in a fixed order means committing each connection through its own
``Transaction`` (SQLAlchemy's ``Session.commit()`` commits a session's connections in no fixed order).
The session still holds the finished transaction afterwards, and its own ``commit()`` would refuse it
("This transaction is inactive"), skipping the ``before_commit``/``after_commit`` events and expiry.
:func:`replace_finished_transaction` gives the session a fresh, empty transaction on that connection,
so its ``commit()`` and ``rollback()`` behave as usual. ``tests/plugin/test_private_sqlalchemy.py``
fails loudly if SQLAlchemy's layout changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

__all__ = ("replace_finished_transaction",)


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
