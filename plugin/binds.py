"""Bind keys: which database each model, table and statement belongs to.

A model names its bind with ``__bind_key__ = "logs"`` (on the model or any base class); a table names it
with ``MetaData(info={"bind_key": "logs"})``; everything else goes to the default bind. The same
:class:`BindRouter` answers for request sessions, scripts, the CLI and ``create_all``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect
from sqlalchemy.orm import DeclarativeBase, Mapper, registry
from sqlalchemy.orm.mapper import _mapper_registries
from sqlalchemy.sql.schema import MetaData, Table
from sqlalchemy.sql.util import find_tables

from plugin.exceptions import BindKeyError, quote_keys, unknown_binds

if TYPE_CHECKING:
    from sqlalchemy.sql.expression import ClauseElement

    from plugin.config import ModelSource

__all__ = ("BIND_KEY", "BindRouter", "UnknownBindKey")

BIND_KEY = "bind_key"
"""The ``MetaData.info`` entry that routes a metadata's tables: ``MetaData(info={BIND_KEY: "logs"})``."""


@dataclass(frozen=True)
class UnknownBindKey:
    """A model or table whose bind key is not configured."""

    kind: str
    """``"model"`` or ``"table"``."""
    name: str
    """The model's class name or the table's name."""
    key: str
    """The bind key it asks for."""

    def describe(self, configured: Iterable[str]) -> str:
        """One line naming the model or table, the key, and the configured keys."""
        source = "__bind_key__" if self.kind == "model" else f"MetaData.info[{BIND_KEY!r}]"
        return (
            f"{self.kind} {self.name!r} has {source} = {self.key!r}, which is not a configured bind "
            f"(configured: {quote_keys(configured)}); add {self.key!r} to binds= or fix the {self.kind}"
        )


def _declared_key(obj: Any) -> str | None:
    key = getattr(obj, "__bind_key__", None)
    return key if isinstance(key, str) else None


def _metadata_key(table: Any) -> str | None:
    metadata = getattr(table, "metadata", None)
    key = metadata.info.get(BIND_KEY) if isinstance(metadata, MetaData) else None
    return key if isinstance(key, str) else None


def _mapper_key(mapper: Mapper[Any]) -> str | None:
    """The key a model asks for: its ``__bind_key__``, else its table's MetaData key, else ``None``."""
    return _declared_key(mapper.class_) or _metadata_key(mapper.local_table)


class BindRouter:
    """Resolves bind keys and lists what lives on each bind.

    Lookups are cached per mapper and per table, so routing a statement costs a dictionary lookup after
    the first time. Unknown keys raise :class:`~plugin.exceptions.BindKeyError` naming the model.
    """

    def __init__(self, keys: Sequence[str], default: str, sources: ModelSource | Sequence[ModelSource] | None) -> None:
        self.keys: tuple[str, ...] = tuple(keys)
        """Configured bind keys, default first, then config order (the commit order)."""
        self.default = default
        self._sources = sources
        self._by_mapper: dict[Any, str] = {}
        self._by_table: dict[Any, str] = {}

    def require(self, key: str) -> str:
        """``key`` itself when it is a configured bind, else :class:`BindKeyError` naming the configured ones."""
        if key not in self.keys:
            raise unknown_binds([key], self.keys)
        return key

    # -- routing -------------------------------------------------------------------------------------

    def key_for(self, mapper: Any = None, clause: ClauseElement | None = None) -> str:
        """The bind key for a session's ``get_bind(mapper, clause=...)`` call."""
        if mapper is not None:
            return self.key_for_mapper(mapper)
        if clause is not None:
            return self.key_for_clause(clause)
        return self.default

    def requested_key(self, mapper: Mapper[Any]) -> str:
        """The bind key a model asks for, configured or not (``__bind_key__``, MetaData, else default)."""
        return _mapper_key(mapper) or self.default

    def key_for_mapper(self, mapper: Any) -> str:
        """The bind key of a mapped class (or its mapper)."""
        try:
            return self._by_mapper[mapper]
        except KeyError:
            pass
        resolved: Mapper[Any] = inspect(mapper).mapper
        key = self.requested_key(resolved)
        if key not in self.keys:
            raise BindKeyError(UnknownBindKey("model", resolved.class_.__name__, key).describe(self.keys))
        self._by_mapper[mapper] = key
        return key

    def key_for_table(self, table: Any) -> str:
        """The bind key of a table: its model's key when it is mapped, else its MetaData's, else default."""
        try:
            return self._by_table[table]
        except KeyError:
            pass
        owner = next((m for m in self.mappers() if table in m.tables), None)
        if owner is not None:
            key = self.key_for_mapper(owner)
        else:
            key = _metadata_key(table) or self.default
            if key not in self.keys:
                raise BindKeyError(UnknownBindKey("table", table.name, key).describe(self.keys))
        self._by_table[table] = key
        return key

    def key_for_clause(self, clause: ClauseElement) -> str:
        """The bind key of a Core statement: that of the first table it names; ``text()`` goes to default."""
        tables = find_tables(clause, include_crud=True, include_joins=True)
        return self.key_for_table(tables[0]) if tables else self.default

    # -- inventory -----------------------------------------------------------------------------------

    def _registries_and_metadata(self) -> tuple[list[registry], list[MetaData]]:
        sources = self._sources
        if sources is None:
            # Every registry SQLAlchemy knows in this process; the mapping is weak, so dead ones drop out.
            return list(_mapper_registries), []
        items = [sources] if not isinstance(sources, Sequence) else list(sources)
        registries: list[registry] = []
        metadatas: list[MetaData] = []
        for item in items:
            if isinstance(item, type) and issubclass(item, DeclarativeBase):
                registries.append(item.registry)
            elif isinstance(item, registry):
                registries.append(item)
            elif isinstance(item, MetaData):
                metadatas.append(item)
            else:
                raise TypeError(f"base= takes declarative bases, registries or MetaData, not {item!r}")
        return registries, metadatas

    def mappers(self) -> list[Mapper[Any]]:
        """Every mapped class of the configured sources, sorted by class name."""
        registries, _ = self._registries_and_metadata()
        found = {m for reg in registries for m in reg.mappers}
        return sorted(found, key=lambda m: (m.class_.__name__, m.class_.__module__))

    def tables(self) -> list[Table]:
        """Every table of the configured sources (mapped or not), sorted by name."""
        registries, metadatas = self._registries_and_metadata()
        metadatas += [reg.metadata for reg in registries]
        found = {t for md in metadatas for t in md.tables.values()}
        found |= {t for m in self.mappers() for t in m.tables if isinstance(t, Table)}
        return sorted(found, key=lambda t: (t.schema or "", t.name))

    def unknown_keys(self) -> list[UnknownBindKey]:
        """Models, and tables no model maps, whose bind key is not configured."""
        mappers = self.mappers()
        mapped = {t for m in mappers for t in m.tables}
        problems = [
            UnknownBindKey("model", m.class_.__name__, key)
            for m in mappers
            if (key := _mapper_key(m)) is not None and key not in self.keys
        ]
        problems += [
            UnknownBindKey("table", t.name, key)
            for t in self.tables()
            if t not in mapped and (key := _metadata_key(t)) is not None and key not in self.keys
        ]
        return problems

    def validate(self) -> None:
        """Raise :class:`~plugin.exceptions.BindKeyError` listing every unknown bind key, if any."""
        if problems := self.unknown_keys():
            raise BindKeyError("; ".join(p.describe(self.keys) for p in problems))

    def models_by_bind(self) -> dict[str, list[Mapper[Any]]]:
        """Mapped classes grouped by bind key, in bind order; models with unknown keys are left out."""
        grouped: dict[str, list[Mapper[Any]]] = {key: [] for key in self.keys}
        for mapper in self.mappers():
            grouped.get(self.requested_key(mapper), []).append(mapper)
        return grouped

    def tables_by_bind(self) -> dict[str, list[Table]]:
        """Tables grouped by the bind they route to, in bind order; unknown keys are left out."""
        owners = {t: m for m in self.mappers() for t in m.tables}
        grouped: dict[str, list[Table]] = {key: [] for key in self.keys}
        for table in self.tables():
            owner = owners.get(table)
            key = (_mapper_key(owner) if owner is not None else _metadata_key(table)) or self.default
            grouped.get(key, []).append(table)
        return grouped
