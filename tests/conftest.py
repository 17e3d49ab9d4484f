from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from tests.databases import Database, new_database

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """Every Litestar app a test builds applies its logging config to the root logger; undo that after
    each test, so later tests do not log through handlers bound to streams pytest has since closed."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


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
