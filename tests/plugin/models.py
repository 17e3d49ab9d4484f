"""Models on three binds, used across the plugin tests.

``Account`` has no bind key (default bind); ``AuditEntry`` inherits ``__bind_key__ = "logs"`` from an
abstract base; ``events`` is a Core table whose MetaData carries the ``logs`` key. ``Metric`` names
``"metrics"`` itself and lives on its own base, so apps without that bind leave it out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Litestar
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from plugin import BIND_KEY, SQLAlchemyAsyncConfig, SQLAlchemyPlugin, SQLAlchemySyncConfig

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from tests.databases import Database


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)


class LogsModel(Base):
    __abstract__ = True
    __bind_key__ = "logs"


class AuditEntry(LogsModel):
    __tablename__ = "audit_entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    message: Mapped[str] = mapped_column(String(80))


class MetricsBase(DeclarativeBase):
    pass


class Metric(MetricsBase):
    __tablename__ = "metrics"
    __bind_key__ = "metrics"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


logs_metadata = MetaData(info={BIND_KEY: "logs"})
events = Table("events", logs_metadata, Column("id", Integer, primary_key=True), Column("kind", String(20)))


def make_plugin(
    databases: Mapping[str, Database], *, sync: bool = False, password: str | None = None, **options: Any
) -> SQLAlchemyPlugin[Any]:
    """A plugin whose binds are ``databases`` (bind key -> database), tables created at startup."""
    binds = {key: db.url(sync=sync, password=password) for key, db in databases.items()}
    config_class = SQLAlchemySyncConfig if sync else SQLAlchemyAsyncConfig
    options.setdefault("create_all", True)
    options.setdefault("base", (Base, logs_metadata, *((MetricsBase,) if "metrics" in databases else ())))
    return SQLAlchemyPlugin(config=config_class(binds=binds, **options))


def make_app(plugin: SQLAlchemyPlugin[Any], handlers: Sequence[Any], **app_options: Any) -> Litestar:
    return Litestar(route_handlers=list(handlers), plugins=[plugin], **app_options)
