"""A module-scoped ``alchemy_app`` is started once for the module by ``alchemy_client`` itself.

Each test still gets its own sandbox: every test below writes one note and finds only that one. The app's
own ``on_startup``/``on_shutdown`` hooks record when it starts and stops. The sync tests of the module
(``alchemy_sync_client`` runs the app on a loop of its own) stop the async tests' app and start it once
for themselves; the next async test stops that and starts it again on its loop. At the end of the module
the app is stopped before its databases are dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar
from sqlalchemy import func, select

from plugin import SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from tests.databases import KINDS, new_database
from tests.plugin.test_testing import Base, Note, add_note, count_notes

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from litestar.testing import AsyncTestClient, TestClient
    from sqlalchemy.ext.asyncio import AsyncSession

    from tests.databases import Database

pytestmark = pytest.mark.anyio
EVENTS: list[str] = []


@pytest.fixture(scope="module", params=KINDS[:2])
def databases(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Database]]:
    path = tmp_path_factory.mktemp("once")
    made = [new_database(request.param, path), new_database(request.param, path)]
    EVENTS.clear()
    yield made
    # alchemy_app's teardown comes before this one: the app must have been stopped by then
    assert EVENTS[-1:] == ["stop"], EVENTS
    for database in made:
        database.drop()


@pytest.fixture(scope="module")
def alchemy_app(databases: list[Database]) -> Litestar:
    default, logs = (db.url().render_as_string(hide_password=False) for db in databases)
    config = SQLAlchemyAsyncConfig(binds={"default": default, "logs": logs}, base=Base, create_all=True)
    return Litestar(
        route_handlers=[add_note, count_notes],
        plugins=[SQLAlchemyPlugin(config=config)],
        on_startup=[lambda: EVENTS.append("start")],
        on_shutdown=[lambda: EVENTS.append("stop")],
    )


@pytest.mark.parametrize("title", ["first", "second", "third"])
async def test_started_once_and_each_test_starts_empty(
    alchemy_client: AsyncTestClient[Litestar], alchemy_session: AsyncSession, title: str
) -> None:
    assert (await alchemy_client.post("/notes", json={"title": title})).status_code == 201

    assert await alchemy_session.scalar(select(func.count()).select_from(Note)) == 1
    assert await alchemy_session.scalar(select(Note.title)) == title
    assert EVENTS == ["start"]


@pytest.mark.parametrize("title", ["sync", "sync again"])
def test_sync_tests_start_it_once_on_the_sync_clients_loop(
    alchemy_sync_client: TestClient[Litestar], title: str
) -> None:
    assert alchemy_sync_client.post("/notes", json={"title": title}).status_code == 201
    assert alchemy_sync_client.get("/notes/count").json() == 1
    assert alchemy_sync_client.cookies.get("seen") is None  # each test has a client of its own
    alchemy_sync_client.cookies.set("seen", "yes")
    assert EVENTS == ["start", "stop", "start"]  # stopped on the async tests' loop, started once for these


async def test_the_next_async_test_starts_it_again(
    alchemy_client: AsyncTestClient[Litestar], alchemy_plugin: SQLAlchemyPlugin[Any]
) -> None:
    assert (await alchemy_client.post("/notes", json={"title": "again"})).status_code == 201
    assert (await alchemy_client.get("/notes/count")).json() == 1
    assert EVENTS == ["start", "stop", "start", "stop", "start"]


class TestAFunctionScopedApp:
    """A function-scoped app in the same module: started for each test, stopped at its end (before the
    test's own databases are dropped), while the module's app stays as it is."""

    @pytest.fixture(params=KINDS[:2])
    def events(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[list[str], Litestar]]:
        made = [new_database(request.param, tmp_path), new_database(request.param, tmp_path)]
        default, logs = (db.url().render_as_string(hide_password=False) for db in made)
        config = SQLAlchemyAsyncConfig(binds={"default": default, "logs": logs}, base=Base, create_all=True)
        events: list[str] = []
        app = Litestar(
            route_handlers=[add_note, count_notes],
            plugins=[SQLAlchemyPlugin(config=config)],
            on_startup=[lambda: events.append("start")],
            on_shutdown=[lambda: events.append("stop")],
        )
        yield events, app
        assert events == ["start", "stop"]  # stopped at the end of its test, before this teardown
        for database in made:
            database.drop()

    @pytest.fixture
    def alchemy_app(self, events: tuple[list[str], Litestar]) -> Litestar:
        return events[1]

    @pytest.mark.parametrize("title", ["first", "second"])
    async def test_started_for_its_test_only(
        self, alchemy_client: AsyncTestClient[Litestar], events: tuple[list[str], Litestar], title: str
    ) -> None:
        assert (await alchemy_client.post("/notes", json={"title": title})).status_code == 201
        assert (await alchemy_client.get("/notes/count")).json() == 1
        assert events[0] == ["start"]
