"""Pins the private corners of SQLAlchemy the plugin touches (plugin/_sqlalchemy.py).

If SQLAlchemy changes how a session keeps its connections, how it lists registries or how it keys
statements, this fails first, naming what moved.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, event, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, selectinload
from sqlalchemy.orm.session import SessionTransactionState
from sqlalchemy.sql.base import Executable

from plugin._sqlalchemy import (
    StatementHook,
    has_changes,
    is_flushing,
    locks_rows,
    own_transaction,
    prepare_commit,
    registries,
    replace_finished_transaction,
    rolled_back_by_commit,
    structure_key,
)


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


def test_own_transaction_is_the_one_the_session_commit_would_commit() -> None:
    engine = create_engine("sqlite://")
    with Session(engine) as session:
        session.execute(text("select 1"))
        connection = session.connection()
        assert own_transaction(session, connection) is connection.get_transaction()
    with engine.connect() as outer:
        outer.begin()  # the caller's transaction: a session bound to this connection joins it, and never commits it
        with Session(outer) as session:
            session.execute(text("select 1"))
            assert own_transaction(session, outer) is None
        with Session(outer, join_transaction_mode="create_savepoint") as session:
            session.execute(text("select 1"))  # the session's own savepoint, inside the caller's transaction
            assert own_transaction(session, outer) is None
    with Session(engine) as session, engine.connect() as other:
        session.execute(text("select 1"))
        assert own_transaction(session, other) is None  # not one of the session's connections


def test_prepare_commit_runs_before_commit_once_and_leaves_commit_only_committing() -> None:
    engine = create_engine("sqlite://")
    with engine.begin() as connection:
        connection.execute(text("create table t (x int)"))
    calls: list[str] = []

    def add_a_row(session: Session) -> None:
        calls.append("before_commit")
        if len(calls) == 1:
            session.execute(text("insert into t values (2)"))
            session.begin_nested()  # left open: released (SQLAlchemy fires both events for a savepoint too)

    with Session(engine) as session:
        event.listen(session, "before_commit", add_a_row)
        event.listen(session, "after_commit", lambda _: calls.append("after_commit"))
        session.execute(text("insert into t values (1)"))
        prepare_commit(session)
        assert calls == ["before_commit", "before_commit", "after_commit"]  # the transaction's, the savepoint's
        assert session.get_nested_transaction() is None
        transaction = session.get_transaction()
        assert transaction is not None
        assert transaction._state is SessionTransactionState.PREPARED
        prepare_commit(session)  # already prepared: nothing again
        session.commit()
        assert calls == ["before_commit", "before_commit", "after_commit", "after_commit"]
    with engine.connect() as connection:
        assert connection.execute(text("select x from t order by x")).scalars().all() == [1, 2]


class PrivateBase(DeclarativeBase):
    pass


class Thing(PrivateBase):
    __tablename__ = "things"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


def test_has_changes_sees_new_modified_and_deleted_objects_and_nothing_else() -> None:
    engine = create_engine("sqlite://")
    PrivateBase.metadata.create_all(engine, tables=[Thing.__table__])  # type: ignore[list-item]
    with Session(engine) as session:
        assert not has_changes(session)
        session.add(Thing(id=1, name="a"))
        assert has_changes(session)  # new
        session.flush()
        assert not has_changes(session)
        thing = session.get(Thing, 1)
        assert thing is not None
        assert not has_changes(session)  # loaded, unchanged
        thing.name = "b"
        assert has_changes(session)  # modified
        session.flush()
        session.delete(thing)
        assert has_changes(session)  # deleted


def test_registries_lists_live_registries() -> None:
    assert PrivateBase.registry in registries()


def test_structure_key_ignores_values_and_tells_same_named_tables_apart() -> None:
    first = Table("t", MetaData(), Column("id", Integer, primary_key=True))
    second = Table("t", MetaData(), Column("id", Integer, primary_key=True))
    one, two = select(first).where(first.c.id == 1), select(first).where(first.c.id == 2)
    assert structure_key(one) == structure_key(two)  # parameter values are not part of the structure
    assert structure_key(select(first)) != structure_key(select(second))  # tables by identity, not name
    assert hash(structure_key(one)) == hash(structure_key(two))


def test_the_cache_key_is_memoized_on_the_statement() -> None:
    """Routing computes the key before SQLAlchemy does; it must then cost SQLAlchemy nothing."""
    table = Table("m", MetaData(), Column("id", Integer, primary_key=True))
    statement = select(table)
    assert statement._generate_cache_key() is statement._generate_cache_key()


class Flushed(PrivateBase):
    __tablename__ = "flushed"
    id: Mapped[int] = mapped_column(primary_key=True)


def test_is_flushing_is_true_only_inside_a_flush() -> None:
    engine = create_engine("sqlite://")
    PrivateBase.metadata.create_all(engine)
    seen: list[bool] = []
    with Session(engine) as session:
        event.listen(session, "before_flush", lambda s, *_: seen.append(is_flushing(s)))
        event.listen(session, "after_flush", lambda s, *_: seen.append(is_flushing(s)))
        assert not is_flushing(session)
        session.add(Flushed(id=1))
        session.flush()
        assert not is_flushing(session)
    assert seen == [True, True]


def test_locks_rows_reads_with_for_update() -> None:
    table = Table("l", MetaData(), Column("id", Integer, primary_key=True))
    assert not locks_rows(select(table))
    assert locks_rows(select(table).with_for_update())
    assert locks_rows(select(table).with_for_update(read=True))  # FOR SHARE
    assert locks_rows(select(table).union_all(select(table)).with_for_update())
    assert not locks_rows(text("select 1"))


def test_rolled_back_by_commit_tells_a_flush_that_failed_in_commit_from_a_failing_after_commit() -> None:
    engine = create_engine("sqlite://")
    PrivateBase.metadata.create_all(engine, tables=[Thing.__table__])  # type: ignore[list-item]

    def add_a_duplicate(session: Session) -> None:  # flushed inside commit(): the primary key is taken
        session.add(Thing(id=1, name="again"))

    def fail(session: Session) -> None:
        raise RuntimeError("after_commit failed")

    for name, listener, rolled_back in (("before_commit", add_a_duplicate, True), ("after_commit", fail, False)):
        with Session(engine) as session:
            session.add(Thing(id=1, name="first"))
            session.flush()
            event.listen(session, name, listener)
            with pytest.raises(Exception):  # noqa: B017, PT011 - an IntegrityError, or the listener's error
                session.commit()
            assert rolled_back_by_commit(session) is rolled_back, name
        with Session(engine) as session:
            assert session.scalars(select(Thing.name)).all() == ([] if rolled_back else ["first"])
            session.execute(text("delete from things"))
            session.commit()


class Parent(PrivateBase):
    __tablename__ = "parents"
    id: Mapped[int] = mapped_column(primary_key=True)
    children: Mapped[list[Child]] = relationship()


class Child(PrivateBase):
    __tablename__ = "children"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int] = mapped_column(sqlalchemy.ForeignKey("parents.id"))


class Seeing(StatementHook):
    def before_statement(self, statement: Executable, bind_arguments: dict[str, Any] | None) -> dict[str, Any] | None:
        self.seen.append(type(statement).__name__)
        return bind_arguments


def test_every_way_of_running_a_statement_goes_through_execute_internal() -> None:
    """StatementHook overrides Session._execute_internal: every public way of running a statement must reach
    it, or the plugin's write tracking and after-settle refusal would miss that way."""
    engine = create_engine("sqlite://")
    PrivateBase.metadata.create_all(engine, tables=[Parent.__table__, Child.__table__])  # type: ignore[list-item]
    with Seeing(engine) as session:
        session.seen = []  # type: ignore[attr-defined]
        session.add(Parent(id=1, children=[Child(id=1)]))
        session.commit()
        session.expunge_all()
        session.execute(text("select 1"))
        session.scalar(select(Parent.id))
        session.scalars(select(Parent).options(selectinload(Parent.children))).all()  # and the eager load
        session.expunge_all()
        parent = session.get(Parent, 1)
        assert parent is not None
        assert len(parent.children) == 1  # a lazy load
        session.query(Parent).all()
        session.execute(select(Parent).union_all(select(Parent)))
        assert session.seen == [  # type: ignore[attr-defined]
            "TextClause", "Select", "Select", "Select", "Select", "Select", "Select", "CompoundSelect",
        ]  # fmt: skip
