"""Creating tables per bind: only the tables routed to each bind are created on it."""

from __future__ import annotations

from itertools import groupby
from typing import TYPE_CHECKING

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.sql.schema import Table

    from plugin.binds import BindRouter
    from plugin.engines import EngineRegistry

__all__ = ("create_all", "create_all_sync")


def _create(connection: Connection, tables: Sequence[Table]) -> None:
    """Create the missing ``tables``, one MetaData at a time (that is how create_all works)."""
    ordered = sorted(tables, key=lambda t: id(t.metadata))
    for _, group in groupby(ordered, key=lambda t: id(t.metadata)):
        same_metadata = list(group)
        same_metadata[0].metadata.create_all(connection, tables=same_metadata)


def _create_on(engine: Engine, tables: Sequence[Table]) -> None:
    with engine.begin() as connection:
        _create(connection, tables)


def _plan(router: BindRouter, keys: Iterable[str] | None) -> list[tuple[str, list[Table]]]:
    wanted = set(router.keys if keys is None else keys)
    return [(key, tables) for key, tables in router.tables_by_bind().items() if key in wanted and tables]


async def create_all(registry: EngineRegistry, router: BindRouter, keys: Iterable[str] | None = None) -> None:
    """Create the missing tables of every bind (or of ``keys``), each on its own bind only."""
    for key, tables in _plan(router, keys):
        engine = registry.engine(key)
        if isinstance(engine, AsyncEngine):
            async with engine.begin() as connection:
                await connection.run_sync(_create, tables)
        else:
            await anyio.to_thread.run_sync(_create_on, engine, tables)


def create_all_sync(registry: EngineRegistry, router: BindRouter, keys: Iterable[str] | None = None) -> None:
    """:func:`create_all` for sync configs, without an event loop."""
    for key, tables in _plan(router, keys):
        _create_on(registry.sync_engine(key), tables)
