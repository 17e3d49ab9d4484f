from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.databases import Database, new_database

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def new_db(tmp_path: Path) -> Iterator[Callable[[str], Database]]:
    """Factory of fresh databases (``new_db("postgresql")``), all dropped after the test."""
    created: list[Database] = []

    def make(kind: str) -> Database:
        database = new_database(kind, tmp_path)
        created.append(database)
        return database

    yield make
    for database in created:
        database.drop()
