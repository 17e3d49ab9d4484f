"""A function-scoped ``anyio_backend`` gives every test a new event loop: then ``alchemy_client`` starts
even a module-scoped ``alchemy_app`` for each test and stops it at the test's end (an engine kept for
the module would be attached to a closed loop, and a module-scoped async fixture would be a scope error).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from litestar import Litestar

from plugin import SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from tests.databases import KINDS, new_database
from tests.plugin.test_testing import Base, add_note, count_notes

if TYPE_CHECKING:
    from collections.abc import Iterator

    from litestar.testing import AsyncTestClient

    from tests.databases import Database

pytestmark = pytest.mark.anyio
app_events: list[str] = []


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # function scope: a new event loop for every test


@pytest.fixture(scope="module", params=KINDS[:2])
def alchemy_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Litestar]:
    path = tmp_path_factory.mktemp("per_test")
    made: list[Database] = [new_database(request.param, path), new_database(request.param, path)]
    default, logs = (db.url().render_as_string(hide_password=False) for db in made)
    config = SQLAlchemyAsyncConfig(binds={"default": default, "logs": logs}, base=Base, create_all=True)
    app_events.clear()
    yield Litestar(
        route_handlers=[add_note, count_notes],
        plugins=[SQLAlchemyPlugin(config=config)],
        on_startup=[lambda: app_events.append("start")],
        on_shutdown=[lambda: app_events.append("stop")],
    )
    for database in made:
        database.drop()


@pytest.mark.parametrize("earlier_tests", [0, 1, 2])
async def test_started_and_stopped_with_each_test(
    alchemy_client: AsyncTestClient[Litestar], earlier_tests: int
) -> None:
    assert (await alchemy_client.post("/notes", json={"title": "a note"})).status_code == 201
    assert (await alchemy_client.get("/notes/count")).json() == 1
    started_before = ["start", "stop"] * earlier_tests
    assert app_events == [*started_before, "start"]
