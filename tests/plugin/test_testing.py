"""The pytest fixtures shipped in plugin/testing.py, used exactly as the README's "Testing your app" shows.

One app with two binds (notes on ``default``, audit entries on ``logs``), async and sync, on SQLite,
PostgreSQL and MariaDB. The databases live for the whole module: the first test of each pair writes
through the test client and sees the rows in its own session; the second finds every table empty again,
read back with the raw drivers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy import String, create_engine, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from plugin import SQLAlchemyAsyncConfig, SQLAlchemyPlugin, SQLAlchemySyncConfig
from tests.databases import KINDS, new_database

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from litestar.testing import AsyncTestClient, TestClient

    from tests.databases import Database

pytestmark = pytest.mark.anyio


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(80))


class AuditEntry(Base):
    __tablename__ = "audit_entries"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)
    action: Mapped[str] = mapped_column(String(80))


@post("/notes")
async def add_note(data: JSONBody[dict[str, str]], db_session: NamedDependency[AsyncSession]) -> dict[str, int]:
    note = Note(title=data["title"])
    db_session.add_all([note, AuditEntry(action=f"added {data['title']}")])
    await db_session.flush()
    return {"id": note.id}


@get("/notes/count")
async def count_notes(db_session: NamedDependency[AsyncSession]) -> int:
    return int(await db_session.scalar(select(func.count()).select_from(Note)) or 0)


@post("/notes", sync_to_thread=True)
def add_note_sync(data: JSONBody[dict[str, str]], db_session: NamedDependency[Session]) -> dict[str, int]:
    note = Note(title=data["title"])
    db_session.add_all([note, AuditEntry(action=f"added {data['title']}")])
    db_session.flush()
    return {"id": note.id}


@get("/notes/count", sync_to_thread=True)
def count_notes_sync(db_session: NamedDependency[Session]) -> int:
    return int(db_session.scalar(select(func.count()).select_from(Note)) or 0)


def create_app(default: str, logs: str, *, sync: bool, create_all: bool = False) -> Litestar:
    config_class: Any = SQLAlchemySyncConfig if sync else SQLAlchemyAsyncConfig
    config = config_class(binds={"default": default, "logs": logs}, base=Base, create_all=create_all)
    handlers = [add_note_sync, count_notes_sync] if sync else [add_note, count_notes]
    return Litestar(route_handlers=handlers, plugins=[SQLAlchemyPlugin(config=config)])


@pytest.fixture(scope="module", params=KINDS)
def databases(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Database]]:
    """Two databases per kind for the whole module (each test must leave them as it found them)."""
    path: Path = tmp_path_factory.mktemp("testing")
    made = [new_database(request.param, path), new_database(request.param, path)]
    for database, table in zip(made, (Note.__table__, AuditEntry.__table__), strict=True):
        engine = create_engine(database.url(sync=True))
        Base.metadata.create_all(engine, tables=[table])
        engine.dispose()
    yield made
    for database in made:
        database.drop()


def counts(databases: list[Database]) -> tuple[Any, ...]:
    """Rows in both tables, read with the raw drivers."""
    default, logs = databases
    return default.fetch("select count(*) from notes")[0][0], logs.fetch("select count(*) from audit_entries")[0][0]


class TestAsyncApp:
    @pytest.fixture
    def alchemy_app(self, databases: list[Database]) -> Litestar:
        default, logs = (db.url().render_as_string(hide_password=False) for db in databases)
        return create_app(default, logs, sync=False)

    async def test_writes_are_visible_inside_the_test(
        self, alchemy_client: AsyncTestClient[Litestar], alchemy_session: AsyncSession
    ) -> None:
        first = await alchemy_client.post("/notes", json={"title": "first"})
        second = await alchemy_client.post("/notes", json={"title": "second"})

        assert (first.status_code, second.status_code) == (201, 201)
        assert (await alchemy_client.get("/notes/count")).json() == 2
        assert await alchemy_session.scalar(select(func.count()).select_from(Note)) == 2
        assert await alchemy_session.scalar(select(AuditEntry.action).order_by(AuditEntry.id)) == "added first"

    async def test_and_gone_after_it(
        self, alchemy_client: AsyncTestClient[Litestar], databases: list[Database]
    ) -> None:
        assert counts(databases) == (0, 0)
        assert (await alchemy_client.get("/notes/count")).json() == 0

    def test_the_sync_client_works_with_an_async_app_too(
        self, alchemy_sync_client: TestClient[Litestar], databases: list[Database]
    ) -> None:
        assert alchemy_sync_client.post("/notes", json={"title": "third"}).status_code == 201
        assert alchemy_sync_client.get("/notes/count").json() == 1


class TestSyncApp:
    @pytest.fixture
    def alchemy_app(self, databases: list[Database]) -> Litestar:
        default, logs = (db.url(sync=True).render_as_string(hide_password=False) for db in databases)
        return create_app(default, logs, sync=True)

    def test_writes_are_visible_inside_the_test(
        self, alchemy_sync_client: TestClient[Litestar], alchemy_sync_session: Session
    ) -> None:
        assert alchemy_sync_client.post("/notes", json={"title": "first"}).status_code == 201

        assert alchemy_sync_client.get("/notes/count").json() == 1
        assert alchemy_sync_session.scalar(select(func.count()).select_from(Note)) == 1
        assert alchemy_sync_session.scalar(select(AuditEntry.action)) == "added first"

    async def test_the_async_client_serves_a_sync_app(
        self, alchemy_client: AsyncTestClient[Litestar], alchemy_session: Session
    ) -> None:
        assert (await alchemy_client.post("/notes", json={"title": "second"})).status_code == 201
        assert alchemy_session.scalar(select(func.count()).select_from(AuditEntry)) == 1

    def test_and_gone_after_it(self, alchemy_sync_client: TestClient[Litestar], databases: list[Database]) -> None:
        assert counts(databases) == (0, 0)
        assert alchemy_sync_client.get("/notes/count").json() == 0


def test_after_every_test_every_table_is_empty(databases: list[Database]) -> None:
    assert counts(databases) == (0, 0)
