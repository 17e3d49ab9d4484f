"""The fixtures in a user's own suite, run as pytest runs it (a generated project, ``filterwarnings = error``).

A module-scoped ``alchemy_app`` stays started between the tests that use ``alchemy_client`` (or
``alchemy_sync_client``); whatever test comes next must still find the app as it expects it: a plain test
between the async and the sync tests, or a test that starts ``alchemy_app`` itself with Litestar's own
client, as it could before the app was kept started.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

pytest_plugins = ("pytester",)

APP = """
from litestar import Litestar, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy import String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from plugin import SQLAlchemyAsyncConfig, SQLAlchemyPlugin, SQLAlchemySyncConfig


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(80))


@post("/notes")
async def add(data: JSONBody[dict[str, str]], db_session: NamedDependency[AsyncSession]) -> int:
    db_session.add(Note(title=data["title"]))
    return 1


@get("/count")
async def count(db_session: NamedDependency[AsyncSession]) -> int:
    return await db_session.scalar(select(func.count()).select_from(Note)) or 0


@post("/sync/notes", sync_to_thread=False)
def add_sync(data: JSONBody[dict[str, str]], db_session: NamedDependency[Session]) -> int:
    db_session.add(Note(title=data["title"]))
    return 1


def create_sync_app(path: str) -> Litestar:
    config = SQLAlchemySyncConfig(binds={"default": f"sqlite:///{path}"}, base=Base, create_all=True)
    return Litestar(route_handlers=[add_sync], plugins=[SQLAlchemyPlugin(config=config)])


def create_app(path: str) -> Litestar:
    config = SQLAlchemyAsyncConfig(binds={"default": f"sqlite+aiosqlite:///{path}"}, base=Base, create_all=True)
    return Litestar(route_handlers=[add, count], plugins=[SQLAlchemyPlugin(config=config)])
"""

CONFTEST = """
import pytest
from example_app import create_app


@pytest.fixture(scope="session")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def alchemy_app():
    return create_app(DB_PATH)
"""


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path: Path) -> Path:
    db = tmp_path / "app.db"
    pytester.makepyfile(example_app=APP)
    pytester.makeconftest(CONFTEST.replace("DB_PATH", repr(str(db))))
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    return db


def _notes(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return int(connection.execute("select count(*) from notes").fetchone()[0])


def test_a_plain_test_between_the_async_and_the_sync_tests(pytester: pytest.Pytester, project: Path) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.anyio
        async def test_async(alchemy_client):
            assert (await alchemy_client.post("/notes", json={"title": "a"})).status_code == 201

        def test_plain():
            pass

        def test_sync(alchemy_sync_client):
            assert alchemy_sync_client.get("/count").json() == 0
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=3)
    assert _notes(project) == 0


def test_a_test_that_starts_the_app_with_litestars_own_clients(pytester: pytest.Pytester, project: Path) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest
        from litestar.testing import AsyncTestClient, TestClient

        @pytest.mark.anyio
        async def test_async(alchemy_client):
            assert (await alchemy_client.post("/notes", json={"title": "a"})).status_code == 201

        @pytest.mark.anyio
        async def test_own_async_client(alchemy_app):
            async with AsyncTestClient(alchemy_app) as client:
                assert (await client.get("/count")).json() == 0

        def test_sync(alchemy_sync_client):
            assert alchemy_sync_client.post("/notes", json={"title": "b"}).status_code == 201

        def test_own_sync_client(alchemy_app):
            with TestClient(alchemy_app) as client:
                assert client.get("/count").json() == 0
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=4)
    assert _notes(project) == 0


def test_a_fixture_that_writes_before_the_sandbox_is_open_never_writes(
    pytester: pytest.Pytester, project: Path
) -> None:
    """A fixture that uses ``alchemy_plugin`` but not ``alchemy_session`` is set up before ``alchemy_client``
    opens the test's sandbox: for the first test of a module the app is not started yet (an error); for the
    next ones it must not be a real write that every later test sees."""
    pytester.makepyfile(
        test_user="""
        import pytest
        from example_app import Note

        pytestmark = pytest.mark.anyio

        @pytest.fixture
        async def seeded(alchemy_plugin):
            async with alchemy_plugin.transaction() as session:
                session.add(Note(title="seed"))

        async def test_first(alchemy_client):
            assert (await alchemy_client.get("/count")).json() == 0

        @pytest.mark.parametrize("n", [1, 2, 3])
        async def test_seeded(seeded, alchemy_client, n):
            assert (await alchemy_client.get("/count")).json() == 1
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1, errors=3)
    assert _notes(project) == 0


def test_a_sync_fixture_that_writes_before_the_sandbox_is_open_never_writes(
    pytester: pytest.Pytester, project: Path
) -> None:
    pytester.makepyfile(
        test_user=f"""
        import pytest
        from example_app import Note, create_sync_app

        @pytest.fixture(scope="module")
        def alchemy_app():
            return create_sync_app({str(project)!r})

        @pytest.fixture
        def seeded(alchemy_plugin):
            with alchemy_plugin.transaction() as session:
                session.add(Note(title="seed"))

        def test_first(alchemy_sync_client):
            assert alchemy_sync_client.post("/sync/notes", json={{"title": "a"}}).status_code == 201

        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_seeded(seeded, alchemy_sync_session, n):
            assert alchemy_sync_session.query(Note).count() == 1
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1, errors=3)
    assert _notes(project) == 0


def test_a_class_with_an_app_of_its_own_between_the_modules_tests(pytester: pytest.Pytester, project: Path) -> None:
    """The module's app stays started for the next test that uses the client; a class in between with a
    function-scoped ``alchemy_app`` of its own must not make the module's app look function-scoped."""
    pytester.makepyfile(
        test_user="""
        import pytest
        from example_app import create_app

        def test_one(alchemy_sync_client):
            assert alchemy_sync_client.post("/notes", json={"title": "a"}).status_code == 201

        class TestOwnApp:
            @pytest.fixture
            def alchemy_app(self, tmp_path):
                return create_app(str(tmp_path / "own.db"))

            def test_two(self, alchemy_sync_client):
                assert alchemy_sync_client.get("/count").json() == 0

        def test_three(alchemy_sync_client):
            assert alchemy_sync_client.get("/count").json() == 0

        @pytest.mark.anyio
        async def test_four(alchemy_client):
            assert (await alchemy_client.get("/count")).json() == 0
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=4)
    assert _notes(project) == 0


def test_a_skipped_async_test_between_the_async_and_the_sync_tests(pytester: pytest.Pytester, project: Path) -> None:
    """The async test's teardown sees an ``alchemy_client`` test next and keeps the app started; that test is
    skipped (its fixtures never set up), so the sync test after it must stop the app itself."""
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.anyio
        async def test_async(alchemy_client):
            assert (await alchemy_client.post("/notes", json={"title": "a"})).status_code == 201

        @pytest.mark.skip(reason="not yet")
        @pytest.mark.anyio
        async def test_skipped(alchemy_client):
            pass

        def test_sync(alchemy_sync_client):
            assert alchemy_sync_client.get("/count").json() == 0

        def test_own_sync_client(alchemy_app):
            from litestar.testing import TestClient

            with TestClient(alchemy_app) as client:
                assert client.get("/count").json() == 0
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=3, skipped=1)
    assert _notes(project) == 0


def test_a_task_the_app_left_running_does_not_write_into_the_next_test(
    pytester: pytest.Pytester, project: Path
) -> None:
    """A handler that starts a task and returns: the task outlives the request and its test. With the app
    started once for the module and run on the module's loop, it must not write into the next test's
    sandbox (nor, between tests, to the database)."""
    pytester.makepyfile(
        test_user="""
        import asyncio

        import anyio
        import pytest
        from litestar import post
        from example_app import Note

        pytestmark = pytest.mark.anyio
        TASKS = set()

        @pytest.fixture(scope="module")
        def alchemy_app(alchemy_app):
            plugin = alchemy_app.plugins.get("SQLAlchemyPlugin")

            async def later():
                await asyncio.sleep(0.3)
                async with plugin.transaction() as session:
                    session.add(Note(title="later"))

            @post("/later")
            async def start_later() -> None:
                task = asyncio.get_running_loop().create_task(later())
                TASKS.add(task)
                task.add_done_callback(TASKS.discard)

            alchemy_app.register(start_later)
            return alchemy_app

        async def test_one(alchemy_client):
            assert (await alchemy_client.post("/later")).status_code == 201

        async def test_two(alchemy_client):
            await anyio.sleep(0.6)
            assert (await alchemy_client.get("/count")).json() == 0
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    assert _notes(project) == 0


def test_a_task_the_app_left_running_does_not_write_into_the_next_sync_test(
    pytester: pytest.Pytester, project: Path
) -> None:
    """The same for sync tests: the app runs on one test client's loop for all of them."""
    pytester.makepyfile(
        test_user="""
        import asyncio
        import time

        import pytest
        from litestar import post
        from example_app import Note

        TASKS = set()

        @pytest.fixture(scope="module")
        def alchemy_app(alchemy_app):
            plugin = alchemy_app.plugins.get("SQLAlchemyPlugin")

            async def later():
                await asyncio.sleep(0.3)
                async with plugin.transaction() as session:
                    session.add(Note(title="later"))

            @post("/later")
            async def start_later() -> None:
                task = asyncio.get_running_loop().create_task(later())
                TASKS.add(task)
                task.add_done_callback(TASKS.discard)

            alchemy_app.register(start_later)
            return alchemy_app

        def test_one(alchemy_sync_client):
            assert alchemy_sync_client.post("/later").status_code == 201

        def test_two(alchemy_sync_client):
            time.sleep(0.6)
            assert alchemy_sync_client.get("/count").json() == 0
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    assert _notes(project) == 0
