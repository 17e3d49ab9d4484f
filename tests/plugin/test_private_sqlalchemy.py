"""Pins the one private corner of SQLAlchemy the plugin touches (plugin/_sqlalchemy.py).

If SQLAlchemy changes how a session keeps its connections, this fails first, naming what moved.
"""

from __future__ import annotations

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from plugin._sqlalchemy import replace_finished_transaction


def test_a_session_keeps_connection_and_engine_entries_as_four_tuples() -> None:
    engine = create_engine("sqlite://")
    with Session(engine) as session:
        session.execute(text("select 1"))
        transaction = session.get_transaction()
        assert transaction is not None
        entries = transaction._connections
        connection = session.connection()
        assert entries[connection] is entries[engine]
        conn, root, should_commit, autoclose = entries[connection]
        assert conn is connection
        assert root is connection.get_transaction()
        assert (should_commit, autoclose) == (True, True)


def test_a_directly_committed_connection_leaves_the_session_commit_and_rollback_working() -> None:
    engine = create_engine("sqlite://")
    with Session(engine) as session:
        session.execute(text("create table t (x int)"))
        session.commit()
        session.execute(text("insert into t values (1)"))
        connection = session.connection()
        root = connection.get_transaction()
        assert root is not None
        root.commit()
        replace_finished_transaction(session, connection)
        session.execute(text("insert into t values (2)"))
        session.rollback()  # rolls back the second insert only; no "inactive transaction" error
        assert session.execute(text("select x from t")).scalars().all() == [1]
        session.execute(text("insert into t values (3)"))
        root = session.connection().get_transaction()
        assert root is not None
        root.commit()
        replace_finished_transaction(session, session.connection())
        session.commit()
        assert session.execute(text("select x from t order by x")).scalars().all() == [1, 3]
