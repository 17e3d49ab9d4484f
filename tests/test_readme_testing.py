"""Tests of the example app, isolated by the plugin's pytest fixtures (the README's "Testing your app")."""

from pathlib import Path

import pytest
from litestar import Litestar
from sqlalchemy import func, select

from examples.app import AuditEntry, Note, create_app

pytestmark = pytest.mark.anyio  # async tests run with anyio's pytest plugin


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")  # one pair of databases for every test of this module


@pytest.fixture(scope="module")
def alchemy_app(data_dir: Path) -> Litestar:
    """The app under test: module scope, so it starts once and each test only opens a sandbox."""
    return create_app(data_dir)  # creates its tables at startup (create_all=True)


async def test_a_note_and_its_audit_entry(alchemy_client, alchemy_session) -> None:
    created = await alchemy_client.post("/notes", json={"title": "Buy milk", "tags": ["errands"]})
    duplicate = await alchemy_client.post("/notes", json={"title": "Buy milk"})

    assert (created.status_code, duplicate.status_code) == (201, 409)
    # the request "committed" into the test's sandbox: the test's own session sees it, on both binds
    assert await alchemy_session.scalar(select(Note.title)) == "Buy milk"
    assert await alchemy_session.scalar(select(func.count()).select_from(AuditEntry)) == 1


async def test_the_next_test_starts_empty(alchemy_client) -> None:
    assert (await alchemy_client.get("/stats")).json() == {"notes": 0, "audit_entries": 0}


def test_sync_tests_use_the_sync_client(alchemy_sync_client) -> None:
    assert alchemy_sync_client.post("/notes", json={"title": "Call the plumber"}).status_code == 201
    assert alchemy_sync_client.get("/stats").json() == {"notes": 1, "audit_entries": 1}
