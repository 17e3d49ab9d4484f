"""Schema operations per bind: create (and drop) only the tables routed to each bind."""

from __future__ import annotations

from collections.abc import Callable
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

__all__ = ("create_all", "create_all_sync", "drop_all", "drop_all_sync")

Operation = Callable[["Connection", "Sequence[Table]"], None]


def _create(connection: Connection, tables: Sequence[Table]) -> None:
    for group in _by_metadata(tables):
        group[0].metadata.create_all(connection, tables=group)


def _drop(connection: Connection, tables: Sequence[Table]) -> None:
    for group in _by_metadata(tables):
        group[0].metadata.drop_all(connection, tables=group)


def _by_metadata(tables: Iterable[Table]) -> list[list[Table]]:
    """Tables grouped per MetaData: create_all/drop_all work on one MetaData at a time."""
    ordered = sorted(tables, key=lambda t: id(t.metadata))
    return [list(group) for _, group in groupby(ordered, key=lambda t: id(t.metadata))]


def _plan(router: BindRouter, keys: Iterable[str] | None) -> list[tuple[str, list[Table]]]:
    wanted = set(router.keys if keys is None else keys)
    return [(key, tables) for key, tables in router.tables_by_bind().items() if key in wanted and tables]


def _on_sync_engine(engine: Engine, operation: Operation, tables: Sequence[Table]) -> None:
    with engine.begin() as connection:
        operation(connection, tables)


async def _apply(
    registry: EngineRegistry, router: BindRouter, operation: Operation, keys: Iterable[str] | None
) -> None:
    for key, tables in _plan(router, keys):
        engine = registry.engine(key)
        if isinstance(engine, AsyncEngine):
            async with engine.begin() as connection:
                await connection.run_sync(operation, tables)
        else:
            await anyio.to_thread.run_sync(_on_sync_engine, engine, operation, tables)


def _apply_sync(registry: EngineRegistry, router: BindRouter, operation: Operation, keys: Iterable[str] | None) -> None:
    for key, tables in _plan(router, keys):
        _on_sync_engine(registry.sync_engine(key), operation, tables)


async def create_all(registry: EngineRegistry, router: BindRouter, keys: Iterable[str] | None = None) -> None:
    """Create the missing tables of every bind (or of ``keys``), each on its own bind only."""
    await _apply(registry, router, _create, keys)


async def drop_all(registry: EngineRegistry, router: BindRouter, keys: Iterable[str] | None = None) -> None:
    """Drop the tables the models route to every bind (or to ``keys``)."""
    await _apply(registry, router, _drop, keys)


def create_all_sync(registry: EngineRegistry, router: BindRouter, keys: Iterable[str] | None = None) -> None:
    """:func:`create_all` for sync configs, without an event loop."""
    _apply_sync(registry, router, _create, keys)


def drop_all_sync(registry: EngineRegistry, router: BindRouter, keys: Iterable[str] | None = None) -> None:
    """:func:`drop_all` for sync configs, without an event loop."""
    _apply_sync(registry, router, _drop, keys)
