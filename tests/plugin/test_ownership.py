"""One owner per table: inheritance, association tables and per-bind MetaData, at startup and in use.

A class hierarchy whose tables would span binds stops the app at startup; a hierarchy on one bind is
created, flushed, selected and reached by Core statements on that bind alone. Tables no model maps
follow the models they join (``secondary=``) or share a MetaData with, or are refused as ambiguous.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from plugin import BindConflictError, BindRouter, SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from tests.plugin.helpers import startup_error

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


# -- hierarchies that span binds ------------------------------------------------------------------------


class JoinedBase(DeclarativeBase):
    pass


class Vehicle(JoinedBase):
    __tablename__ = "vehicles"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_on": "kind", "polymorphic_identity": "vehicle"}


class Truck(Vehicle):
    __tablename__ = "trucks"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"), primary_key=True)
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "truck"}


class SingleBase(DeclarativeBase):
    pass


class Animal(SingleBase):
    __tablename__ = "animals"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_on": "kind", "polymorphic_identity": "animal"}


class Cat(Animal):
    __bind_key__ = "logs"
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "cat"}


class ConcreteBase(DeclarativeBase):
    pass


class Invoice(ConcreteBase):
    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(primary_key=True)


class ArchivedInvoice(Invoice):
    __tablename__ = "archived_invoices"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)
    __mapper_args__: ClassVar[dict[str, Any]] = {"concrete": True}


def _app(tmp_path: Path, base: Any) -> Any:
    from litestar import Litestar

    binds = {"default": f"sqlite+aiosqlite:///{tmp_path}/a.db", "logs": f"sqlite+aiosqlite:///{tmp_path}/b.db"}
    return Litestar(plugins=[SQLAlchemyPlugin(SQLAlchemyAsyncConfig(binds=binds, base=base, create_all=True))])


@pytest.mark.parametrize(
    ("base", "message"),
    [
        pytest.param(
            JoinedBase,
            "model 'Truck' (bind 'logs') inherits from 'Vehicle' (bind 'default') with joined-table inheritance, "
            "but a class hierarchy lives on one bind (its rows are flushed through the base class's bind); give "
            "'Truck' and 'Vehicle' the same __bind_key__",
            id="joined",
        ),
        pytest.param(
            SingleBase,
            "model 'Cat' (bind 'logs') inherits from 'Animal' (bind 'default') with single-table inheritance, "
            "but a class hierarchy lives on one bind (its rows are flushed through the base class's bind); give "
            "'Cat' and 'Animal' the same __bind_key__",
            id="single",
        ),
        pytest.param(
            ConcreteBase,
            "model 'ArchivedInvoice' (bind 'logs') inherits from 'Invoice' (bind 'default') with concrete "
            "inheritance, but a class hierarchy lives on one bind (its rows are flushed through the base class's "
            "bind); give 'ArchivedInvoice' and 'Invoice' the same __bind_key__",
            id="concrete",
        ),
    ],
)
async def test_startup_rejects_a_hierarchy_spanning_binds(tmp_path: Path, base: Any, message: str) -> None:
    error = await startup_error(_app(tmp_path, base))
    assert isinstance(error, BindConflictError)
    assert str(error) == message
    assert not (tmp_path / "a.db").exists() or not _sqlite_tables(tmp_path / "a.db")  # nothing was created


def _sqlite_tables(path: Path) -> list[str]:
    import sqlite3

    connection = sqlite3.connect(str(path))
    try:
        return sorted(r[0] for r in connection.execute("select name from sqlite_master where type = 'table'"))
    finally:
        connection.close()


class FleetBase(DeclarativeBase):
    pass


class Ship(FleetBase):
    __tablename__ = "ships"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_on": "kind", "polymorphic_identity": "ship"}


class Tanker(Ship):
    __tablename__ = "tankers"
    id: Mapped[int] = mapped_column(ForeignKey("ships.id"), primary_key=True)
    cargo: Mapped[str] = mapped_column(String(20))
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "tanker"}


async def test_a_hierarchy_on_one_bind_agrees_everywhere(tmp_path: Path) -> None:
    """Flush (through the base mapper), select(Sub), Core on the parent table and create_all: one bind."""
    app = _app(tmp_path, FleetBase)
    plugin = app.plugins.get(SQLAlchemyPlugin)
    async with plugin.lifespan():
        async with plugin.transaction() as session:
            session.add(Tanker(id=1, cargo="oil"))
        async with plugin.transaction() as session:
            await session.execute(insert(Ship.__table__).values(id=2, kind="ship"))
        async with plugin.session() as session:
            cargo = (await session.scalars(select(Tanker.cargo))).all()
            kinds = (await session.scalars(select(Ship.__table__.c.kind).order_by(Ship.__table__.c.id))).all()

    assert cargo == ["oil"]
    assert kinds == ["tanker", "ship"]
    assert _sqlite_tables(tmp_path / "b.db") == ["ships", "tankers"]
    assert _sqlite_tables(tmp_path / "a.db") == []


# -- tables no model maps ------------------------------------------------------------------------------


class SharedBase(DeclarativeBase):
    """One MetaData shared by models of two binds, as a single declarative base often is."""


class Person(SharedBase):
    __tablename__ = "people"
    id: Mapped[int] = mapped_column(primary_key=True)


class Label(SharedBase):
    __tablename__ = "labels"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)


class Note(SharedBase):
    __tablename__ = "notes"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)
    labels: Mapped[list[Label]] = relationship(secondary=lambda: note_labels)


note_labels = Table(
    "note_labels",
    SharedBase.metadata,
    Column("note_id", ForeignKey("notes.id"), primary_key=True),
    Column("label_id", ForeignKey("labels.id"), primary_key=True),
)
loose = Table("loose", SharedBase.metadata, Column("id", Integer, primary_key=True))

per_bind_metadata = MetaData()  # advanced-alchemy's metadata_registry: one MetaData per bind, no key


class PerBindBase(DeclarativeBase):
    metadata = per_bind_metadata


class Reading(PerBindBase):
    __tablename__ = "readings"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)


sensors = Table("sensors", per_bind_metadata, Column("id", Integer, primary_key=True))
unused_metadata_table = Table("orphans", MetaData(), Column("id", Integer, primary_key=True))


def test_unmapped_tables_follow_their_models() -> None:
    router = BindRouter(("default", "logs"), "default", (PerBindBase, SharedBase))
    assert router.owner(note_labels) == "logs"  # secondary= between two logs models, on a shared MetaData
    assert router.owner(sensors) == "logs"  # on the MetaData that only logs models use
    assert router.key_for(clause=select(sensors)) == "logs"
    assert router.owner(unused_metadata_table) == "default"  # a MetaData no model uses: the default bind
    assert {k: [t.name for t in v] for k, v in router.tables_by_bind().items()} == {
        "default": ["people"],
        "logs": ["labels", "note_labels", "notes", "readings", "sensors"],
    }


AMBIGUOUS = (
    "table 'loose' is not mapped and its MetaData is shared by models of several binds ('default' (Person); "
    "'logs' (Label, Note)), so its bind cannot be told; give it a MetaData of its own with "
    "info={'bind_key': ...}, or one MetaData per bind shared by that bind's models"
)


def test_an_unmapped_table_on_a_metadata_shared_by_binds_is_ambiguous() -> None:
    router = BindRouter(("default", "logs"), "default", SharedBase)
    with pytest.raises(BindConflictError) as raised:
        router.key_for(clause=select(loose))
    assert str(raised.value) == AMBIGUOUS
    assert [(c.kind, c.name, c.message) for c in router.conflicts()] == [("ambiguous table", "loose", AMBIGUOUS)]
    with pytest.raises(BindConflictError) as at_startup:
        router.validate()
    assert str(at_startup.value) == AMBIGUOUS


async def test_startup_rejects_an_ambiguous_table(tmp_path: Path) -> None:
    error = await startup_error(_app(tmp_path, SharedBase))
    assert isinstance(error, BindConflictError)
    assert str(error) == AMBIGUOUS
