"""``alchemy_started_app``: the app starts once for the module, and each test still gets its own sandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar
from sqlalchemy import func, select

from tests.databases import KINDS, new_database
from tests.plugin.test_testing import Note, create_app

if TYPE_CHECKING:
    from collections.abc import Iterator

    from litestar.testing import AsyncTestClient
    from sqlalchemy.ext.asyncio import AsyncSession

    from plugin import SQLAlchemyPlugin
    from tests.databases import Database

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("alchemy_started_app")]
ENGINES_SEEN: list[Any] = []


@pytest.fixture(scope="module", params=KINDS[:2])
def alchemy_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Litestar]:
    path = tmp_path_factory.mktemp("started")
    made: list[Database] = [new_database(request.param, path), new_database(request.param, path)]
    default, logs = (db.url().render_as_string(hide_password=False) for db in made)
    yield create_app(default, logs, sync=False, create_all=True)
    ENGINES_SEEN.clear()
    for database in made:
        database.drop()


@pytest.mark.parametrize("title", ["first", "second"])
async def test_each_test_is_isolated_while_the_app_stays_up(
    alchemy_client: AsyncTestClient[Litestar],
    alchemy_session: AsyncSession,
    alchemy_plugin: SQLAlchemyPlugin[Any],
    title: str,
) -> None:
    ENGINES_SEEN.append(alchemy_plugin.engines.engine("default"))

    assert (await alchemy_client.post("/notes", json={"title": title})).status_code == 201
    assert await alchemy_session.scalar(select(func.count()).select_from(Note)) == 1
    assert ENGINES_SEEN[0] is ENGINES_SEEN[-1]  # started once: the same engine in every test
