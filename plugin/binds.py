"""Bind keys: which database each model, table and statement belongs to.

A model names its bind with ``__bind_key__ = "logs"`` (on the model or any base class), or through its
table's ``MetaData(info={"bind_key": "logs"})``. A table no model maps follows, in order: its MetaData's
key; the models it joins as ``relationship(secondary=...)``; the models sharing its MetaData (one
MetaData per bind, as advanced-alchemy's ``metadata_registry`` builds it); else the default bind. Each
answer comes from one method, :meth:`BindRouter.owner`, used by request sessions, scripts, ``create_all``,
``db binds``, ``db check`` and the shell, so they cannot disagree.

A class hierarchy must live on one bind (a flush writes through the base class's bind), and an unmapped
table on a MetaData shared by models of several binds must say where it belongs: both are rejected at
startup by :meth:`BindRouter.validate` and reported by ``db check``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect
from sqlalchemy.orm import DeclarativeBase, Mapper, registry
from sqlalchemy.sql.schema import MetaData, Table

from plugin._sqlalchemy import registries
from plugin.exceptions import BindConflictError, BindKeyError, quote_keys, unknown_binds
from plugin.routing import StatementRouter

if TYPE_CHECKING:
    from sqlalchemy.sql.expression import ClauseElement, TableClause

    from plugin.config import ModelSource

__all__ = ("BIND_KEY", "BindConflict", "BindRouter", "UnknownBindKey")

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


@dataclass(frozen=True)
class BindConflict:
    """A model hierarchy or a table whose bind cannot be told; :attr:`message` says how to fix it."""

    kind: str
    """``"inheritance"`` or ``"ambiguous table"``."""
    name: str
    """The subclass's or the table's name."""
    message: str

    def describe(self, configured: Iterable[str] = ()) -> str:
        """The message (same signature as :meth:`UnknownBindKey.describe`)."""
        return self.message


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


def _inheritance(mapper: Mapper[Any]) -> str:
    if mapper.concrete:
        return "concrete"
    return "single-table" if mapper.single else "joined-table"


def _names(mappers: Iterable[Mapper[Any]]) -> str:
    return ", ".join(sorted({m.class_.__name__ for m in mappers}))


class BindRouter:
    """Resolves bind keys and lists what lives on each bind.

    :meth:`owner` is the one rule for "which bind owns this table"; models, statements, ``create_all``
    and the CLI listings all go through it. Lookups are cached per mapper, per table and per statement
    structure, so routing a statement costs a dictionary lookup after the first time.
    """

    def __init__(self, keys: Sequence[str], default: str, sources: ModelSource | Sequence[ModelSource] | None) -> None:
        self.keys: tuple[str, ...] = tuple(keys)
        """Configured bind keys, default first, then config order (the commit order)."""
        self.rank: dict[str, int] = {key: index for index, key in enumerate(self.keys)}
        """Each bind key's place in :attr:`keys`: the sort key of the commit order."""
        self.default = default
        self._sources = sources
        self._by_mapper: dict[Any, str] = {}
        self._by_table: dict[Any, str] = {}
        self._statements = StatementRouter(self.owner)

    def require(self, key: str) -> str:
        """``key`` itself when it is a configured bind, else :class:`BindKeyError` naming the configured ones."""
        if key not in self.keys:
            raise unknown_binds([key], self.keys)
        return key

    # -- routing -------------------------------------------------------------------------------------

    def key_for(self, mapper: Any = None, clause: ClauseElement | None = None) -> str:
        """The bind key for a session's ``get_bind(mapper, clause=...)`` call.

        A statement goes to the bind owning every table it uses (:mod:`plugin.routing`); a statement
        naming no table (``text()``) to its mapper's bind, else the default bind.
        """
        if clause is not None:
            key = self._statements.key_for(clause)
            if key is not None:
                return key
        if mapper is not None:
            return self.key_for_mapper(mapper)
        return self.default

    def requested_key(self, mapper: Mapper[Any]) -> str:
        """The bind key a model asks for, configured or not (``__bind_key__``, MetaData, else default)."""
        return _mapper_key(mapper) or self.default

    def key_for_mapper(self, mapper: Any) -> str:
        """The bind key of a mapped class (or its mapper): the owner of its table."""
        try:
            return self._by_mapper[mapper]
        except KeyError:
            pass
        resolved: Mapper[Any] = inspect(mapper).mapper
        table = resolved.local_table
        if isinstance(table, Table):
            key = self._by_table.get(table) or self._resolve(table, also=resolved)
            self._by_table[table] = key
        else:  # mapped against a join or a select: the model's own key
            key = self._configured(self.requested_key(resolved), "model", resolved.class_.__name__)
        self._by_mapper[mapper] = key
        return key

    def owner(self, table: TableClause) -> str:
        """The bind that owns ``table``: the one rule behind routing, ``create_all`` and the listings.

        Raises :class:`BindKeyError` when that bind is not configured and :class:`BindConflictError` when
        the bind cannot be told (see the module docstring).
        """
        try:
            return self._by_table[table]
        except KeyError:
            pass
        key = self._resolve(table)
        self._by_table[table] = key
        return key

    def _configured(self, key: str, kind: str, name: str) -> str:
        if key not in self.keys:
            raise BindKeyError(UnknownBindKey(kind, name, key).describe(self.keys))
        return key

    def _resolve(self, table: TableClause, also: Mapper[Any] | None = None) -> str:
        mappers = self.mappers()
        if also is not None and also not in mappers:
            mappers.append(also)
        owners = [m for m in mappers if table in m.tables]
        if not owners and self._sources is not None:
            # A model left out of base= still routes by its own key, as it would with base=None.
            owners = [m for reg in registries() for m in reg.mappers if table in m.tables]
        if owners:
            keys = {self.requested_key(m) for m in owners}
            if len(keys) > 1:
                raise BindConflictError(self._mapped_conflict(table, owners))
            return self._configured(keys.pop(), "model", owners[0].class_.__name__)
        if (key := _metadata_key(table)) is not None:
            return self._configured(key, "table", table.name)
        # `==`, not `is`: tables found in a statement may be SQLAlchemy's annotated copies (equal, not same)
        linked = {
            self.requested_key(side)
            for m in mappers
            for rel in m.relationships
            if rel.secondary is not None and rel.secondary == table
            for side in (rel.parent, rel.mapper)
        }
        if len(linked) == 1:
            return self.require(linked.pop())
        metadata = getattr(table, "metadata", None)
        sharing: dict[str, list[Mapper[Any]]] = {}
        for m in mappers if metadata is not None else ():  # a lightweight table() has no MetaData
            if getattr(m.local_table, "metadata", None) is metadata:
                sharing.setdefault(self.requested_key(m), []).append(m)
        if len(sharing) > 1:
            order = {key: index for index, key in enumerate(self.keys)}
            ordered = sorted(sharing.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))
            binds = "; ".join(f"{key!r} ({_names(ms)})" for key, ms in ordered)
            raise BindConflictError(
                f"table {table.name!r} is not mapped and its MetaData is shared by models of several binds "
                f"({binds}), so its bind cannot be told; give it a MetaData of its own with "
                f"info={{{BIND_KEY!r}: ...}}, or one MetaData per bind shared by that bind's models"
            )
        return self.require(next(iter(sharing), self.default))

    def _mapped_conflict(self, table: TableClause, owners: Sequence[Mapper[Any]]) -> str:
        for mapper in owners:
            if (conflict := self._hierarchy_conflict(mapper)) is not None:
                return conflict.message
        keys = "; ".join(f"{m.class_.__name__!r} (bind {self.requested_key(m)!r})" for m in owners)
        return f"table {table.name!r} is mapped by models of different binds: {keys}; map it on one bind"

    def _hierarchy_conflict(self, mapper: Mapper[Any]) -> BindConflict | None:
        base = mapper.inherits
        if base is None or (key := self.requested_key(mapper)) == (base_key := self.requested_key(base)):
            return None
        sub, parent = mapper.class_.__name__, base.class_.__name__
        return BindConflict(
            "inheritance",
            sub,
            f"model {sub!r} (bind {key!r}) inherits from {parent!r} (bind {base_key!r}) with "
            f"{_inheritance(mapper)} inheritance, but a class hierarchy lives on one bind (its rows are "
            f"flushed through the base class's bind); give {sub!r} and {parent!r} the same __bind_key__",
        )

    # -- inventory -----------------------------------------------------------------------------------

    def _registries_and_metadata(self) -> tuple[list[registry], list[MetaData]]:
        sources = self._sources
        if sources is None:
            return registries(), []
        items = [sources] if not isinstance(sources, Sequence) else list(sources)
        found: list[registry] = []
        metadatas: list[MetaData] = []
        for item in items:
            if isinstance(item, type) and issubclass(item, DeclarativeBase):
                found.append(item.registry)
            elif isinstance(item, registry):
                found.append(item)
            elif isinstance(item, MetaData):
                metadatas.append(item)
            else:
                raise TypeError(f"base= takes declarative bases, registries or MetaData, not {item!r}")
        return found, metadatas

    def mappers(self) -> list[Mapper[Any]]:
        """Every mapped class of the configured sources, sorted by class name."""
        found_registries, _ = self._registries_and_metadata()
        found = {m for reg in found_registries for m in reg.mappers}
        return sorted(found, key=lambda m: (m.class_.__name__, m.class_.__module__))

    def tables(self) -> list[Table]:
        """Every table of the configured sources (mapped or not), sorted by name."""
        found_registries, metadatas = self._registries_and_metadata()
        metadatas += [reg.metadata for reg in found_registries]
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

    def conflicts(self) -> list[BindConflict]:
        """Class hierarchies that span binds, and unmapped tables whose bind cannot be told."""
        mappers = self.mappers()
        found = [c for m in mappers if (c := self._hierarchy_conflict(m)) is not None]
        mapped = {t for m in mappers for t in m.tables}
        for table in self.tables():
            if table in mapped:
                continue
            try:
                self.owner(table)
            except BindConflictError as exc:
                found.append(BindConflict("ambiguous table", table.name, str(exc)))
            except BindKeyError:
                pass  # listed by unknown_keys()
        return found

    def validate(self) -> None:
        """Raise :class:`BindKeyError` or :class:`BindConflictError` listing every problem, if any."""
        unknown, conflicts = self.unknown_keys(), self.conflicts()
        message = "; ".join([*(p.describe(self.keys) for p in unknown), *(c.message for c in conflicts)])
        if conflicts:
            raise BindConflictError(message)
        if unknown:
            raise BindKeyError(message)

    def models_by_bind(self) -> dict[str, list[Mapper[Any]]]:
        """Mapped classes grouped by bind key, in bind order; models that cannot be routed are left out."""
        grouped: dict[str, list[Mapper[Any]]] = {key: [] for key in self.keys}
        for mapper in self.mappers():
            try:
                grouped[self.key_for_mapper(mapper)].append(mapper)
            except (BindKeyError, BindConflictError):
                continue  # listed by unknown_keys() / conflicts()
        return grouped

    def tables_by_bind(self) -> dict[str, list[Table]]:
        """Tables grouped by their :meth:`owner`, in bind order; tables that cannot be routed are left out."""
        grouped: dict[str, list[Table]] = {key: [] for key in self.keys}
        for table in self.tables():
            try:
                grouped[self.owner(table)].append(table)
            except (BindKeyError, BindConflictError):
                continue  # listed by unknown_keys() / conflicts()
        return grouped
