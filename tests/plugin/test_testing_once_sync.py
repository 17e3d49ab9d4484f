"""A module-scoped app with a sync config, served to sync tests: started once for the module (on the sync
client's helper loop); each test has its own sandbox, client and session."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from litestar import Litestar
from sqlalchemy import func, select

from plugin import SQLAlchemyPlugin, SQLAlchemySyncConfig
from tests.databases import KINDS, new_database
from tests.plugin.test_testing import AuditEntry, Base, Note, add_note_sync, count_notes_sync

if TYPE_CHECKING:
    from collections.abc import Iterator

    from litestar.testing import TestClient
    from sqlalchemy.orm import Session

    from tests.databases import Database

EVENTS: list[str] = []


@pytest.fixture(scope="module", params=KINDS[:2])
def alchemy_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Litestar]:
    path = tmp_path_factory.mktemp("once_sync")
    made: list[Database] = [new_database(request.param, path), new_database(request.param, path)]
    default, logs = (db.url(sync=True).render_as_string(hide_password=False) for db in made)
    config = SQLAlchemySyncConfig(binds={"default": default, "logs": logs}, base=Base, create_all=True)
    EVENTS.clear()
    yield Litestar(
        route_handlers=[add_note_sync, count_notes_sync],
        plugins=[SQLAlchemyPlugin(config=config)],
        on_startup=[lambda: EVENTS.append("start")],
        on_shutdown=[lambda: EVENTS.append("stop")],
    )
    assert EVENTS == ["start", "stop"]  # once for the module, stopped before the databases are dropped
    for database in made:
        database.drop()


@pytest.mark.parametrize("title", ["first", "second"])
def test_started_once_and_each_test_starts_empty(
    alchemy_sync_client: TestClient[Litestar], alchemy_sync_session: Session, title: str
) -> None:
    assert alchemy_sync_client.post("/notes", json={"title": title}).status_code == 201

    assert alchemy_sync_session.scalar(select(Note.title)) == title
    assert alchemy_sync_session.scalar(select(func.count()).select_from(AuditEntry)) == 1
    assert EVENTS == ["start"]
