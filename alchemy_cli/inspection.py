"""What ``litestar db binds`` reports, as plain data: the same facts feed the table and the JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from plugin.exceptions import BindConflictError, BindKeyError, mask_url
from plugin.migrations import locate

if TYPE_CHECKING:
    from plugin import SQLAlchemyPlugin

__all__ = ("BindFacts", "ModelFacts", "PoolFacts", "ReplicaFacts", "as_json", "describe")


@dataclass(frozen=True)
class PoolFacts:
    kind: str
    """The pool class, e.g. ``AsyncAdaptedQueuePool``, ``StaticPool``, ``NullPool``."""
    size: int | None
    """Connections kept open (queue pools only)."""
    max_overflow: int | None
    """Extra connections allowed under load (queue pools only)."""


@dataclass(frozen=True)
class BindFacts:
    key: str
    default: bool
    dialect: str
    driver: str
    url: str
    """Password masked."""
    is_async: bool
    pool: PoolFacts
    session_dependency: str
    engine_dependency: str
    models: int
    tables: int
    migrations: dict[str, Any] | None = None
    """Where the bind's Alembic migrations live (``None``: not configured)."""
    replicas: ReplicaFacts | None = None
    """The bind's read replicas (``None``: it has none)."""


@dataclass(frozen=True)
class ReplicaFacts:
    selection: str
    """``round_robin`` or ``random``."""
    cooldown_s: float
    sticky_seconds: float | None
    engines: tuple[tuple[str, PoolFacts], ...]
    """Each replica's URL (password masked) and pool, in config order."""


@dataclass(frozen=True)
class ModelFacts:
    model: str
    module: str
    bind: str
    """The bind the model routes to; when it cannot be routed, the key it asks for."""
    table: str | None
    error: str | None
    """Why the model cannot be routed: its bind key is not configured, or its hierarchy spans binds."""


def _pool(engine: Any) -> PoolFacts:
    pool = engine.pool
    size = pool.size() if hasattr(pool, "size") else None
    # QueuePool keeps max_overflow privately; there is no public accessor.
    overflow = getattr(pool, "_max_overflow", None)
    return PoolFacts(kind=type(pool).__name__, size=size, max_overflow=overflow if size is not None else None)


def _replicas(plugin: SQLAlchemyPlugin[Any], key: str) -> ReplicaFacts | None:
    engines = plugin.engines.replicas(key)
    if not engines:
        return None
    bind = plugin.config.bind_configs[key]
    return ReplicaFacts(
        selection=bind.replica_selection,
        cooldown_s=bind.replica_cooldown,
        sticky_seconds=bind.sticky_seconds,
        engines=tuple((mask_url(engine.url), _pool(engine)) for engine in engines),
    )


def describe(plugin: SQLAlchemyPlugin[Any]) -> tuple[list[BindFacts], list[ModelFacts]]:
    """Facts about every bind (engines must be started) and every model of the plugin's sources."""
    config, router = plugin.config, plugin.router
    models_by_bind = router.models_by_bind()
    tables_by_bind = router.tables_by_bind()
    migrations = config.migration_configs
    binds = []
    for key in router.keys:
        engine = plugin.engines.engine(key)
        binds.append(
            BindFacts(
                key=key,
                default=key == config.default_bind,
                dialect=engine.dialect.name,
                driver=engine.dialect.driver,
                url=mask_url(engine.url),
                is_async=config.is_async,
                pool=_pool(engine),
                session_dependency=config.session_key_for(None if key == config.default_bind else key),
                engine_dependency=config.engine_key_for(key),
                models=len(models_by_bind[key]),
                tables=len(tables_by_bind[key]),
                migrations=locate(migrations[key]) if key in migrations else None,
                replicas=_replicas(plugin, key),
            )
        )
    models = []
    for mapper in router.mappers():
        try:
            key, error = router.key_for_mapper(mapper), None
        except (BindKeyError, BindConflictError) as exc:  # the same rule routing uses, and its own words
            key, error = router.requested_key(mapper), str(exc)
        models.append(
            ModelFacts(
                model=mapper.class_.__name__,
                module=mapper.class_.__module__,
                bind=key,
                table=getattr(mapper.local_table, "fullname", None),
                error=error,
            )
        )
    return binds, models


def as_json(app_path: str, default_bind: str, binds: list[BindFacts], models: list[ModelFacts]) -> dict[str, Any]:
    """The ``db binds --json`` document. Its shape is documented in the README and pinned by tests."""
    return {
        "app": app_path,
        "default_bind": default_bind,
        "binds": [
            {
                "key": b.key,
                "default": b.default,
                "dialect": b.dialect,
                "driver": b.driver,
                "url": b.url,
                "async": b.is_async,
                "pool": {"class": b.pool.kind, "size": b.pool.size, "max_overflow": b.pool.max_overflow},
                "dependencies": {"session": b.session_dependency, "engine": b.engine_dependency},
                "models": b.models,
                "tables": b.tables,
                "migrations": b.migrations,
                "replicas": None
                if b.replicas is None
                else {
                    "selection": b.replicas.selection,
                    "cooldown_s": b.replicas.cooldown_s,
                    "sticky_seconds": b.replicas.sticky_seconds,
                    "engines": [
                        {"url": url, "pool": {"class": p.kind, "size": p.size, "max_overflow": p.max_overflow}}
                        for url, p in b.replicas.engines
                    ],
                },
            }
            for b in binds
        ],
        "models": [
            {"model": m.model, "module": m.module, "bind": m.bind, "table": m.table, "error": m.error} for m in models
        ],
    }
