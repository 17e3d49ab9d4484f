"""Apps for the CLI tests, built from environment variables by a factory Litestar calls per command.

``ALCHEMY_TEST_BINDS``: JSON ``{"key": "url", ...}`` (a value may also be an object of ``BindConfig`` fields,
e.g. ``{"url": ..., "replicas": [...]}``); ``ALCHEMY_TEST_MODELS``: comma-separated model sets
(``shop``, ``logs``, ``metrics``, ``archive``); ``ALCHEMY_TEST_SYNC=1`` for a sync config;
``ALCHEMY_TEST_POLICY=manual`` for the manual transaction policy; ``ALCHEMY_TEST_SHELL_CONTEXT`` names a
``shell_context`` hook below (``plain``, ``async``, ``broken``); ``ALCHEMY_TEST_MIGRATIONS``: JSON
``{"key": {Migrations fields}, ...}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from litestar import Litestar
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from plugin import (
    BindConfig,
    Migrations,
    SQLAlchemyAsyncConfig,
    SQLAlchemyPlugin,
    SQLAlchemySyncConfig,
    TransactionPolicy,
)


class ShopBase(DeclarativeBase):
    pass


class Customer(ShopBase):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    email: Mapped[str] = mapped_column(String(80))


class LogsBase(DeclarativeBase):
    pass


class AuditLog(LogsBase):
    __tablename__ = "audit_log"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)
    message: Mapped[str] = mapped_column(String(80))


class MetricsBase(DeclarativeBase):
    pass


class Metric(MetricsBase):
    __tablename__ = "metrics"
    __bind_key__ = "metrics"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int]


class ArchiveBase(DeclarativeBase):
    pass


class ArchivedOrder(ArchiveBase):
    __tablename__ = "archived_orders"
    __bind_key__ = "archive"
    id: Mapped[int] = mapped_column(primary_key=True)


class TaggedBase(DeclarativeBase):
    """advanced-alchemy's ``metadata_registry`` shape: one MetaData per bind, shared by its models, no key."""

    metadata = MetaData()


post_topics = Table(
    "post_topics",
    TaggedBase.metadata,
    Column("post_id", ForeignKey("posts.id"), primary_key=True),
    Column("topic_id", ForeignKey("topics.id"), primary_key=True),
)


class Post(TaggedBase):
    __tablename__ = "posts"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)
    topics: Mapped[list[Topic]] = relationship(secondary=post_topics)


class Topic(TaggedBase):
    __tablename__ = "topics"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)


class MixedBase(DeclarativeBase):
    """One MetaData shared by models of two binds, with a table no model maps: its bind cannot be told."""


class Visit(MixedBase):
    __tablename__ = "visits"
    id: Mapped[int] = mapped_column(primary_key=True)


class VisitLog(MixedBase):
    __tablename__ = "visit_log"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)


scratch = Table("scratch", MixedBase.metadata, Column("id", Integer, primary_key=True))

MODEL_SETS = {
    "shop": ShopBase,
    "logs": LogsBase,
    "metrics": MetricsBase,
    "archive": ArchiveBase,
    "tagged": TaggedBase,
    "mixed": MixedBase,
}


class CustomerDirectory:
    """A service of the app, built on the shell's session by the ``shell_context`` hooks."""

    def __init__(self, session: Any) -> None:
        self.session = session

    async def names(self) -> list[str]:
        return list((await self.session.scalars(select(Customer.name).order_by(Customer.id))).all())


def plain_hook(names: Mapping[str, Any]) -> dict[str, Any]:
    return {"directory": CustomerDirectory(names["session"]), "settings": {"region": "eu"}, "select": "mine"}


async def async_hook(names: Mapping[str, Any]) -> dict[str, Any]:
    return {"directory": CustomerDirectory(names["session"])}


def broken_hook(names: Mapping[str, Any]) -> dict[str, Any]:
    raise RuntimeError("settings file missing")


HOOKS = {"plain": plain_hook, "async": async_hook, "broken": broken_hook}


def create_app() -> Litestar:
    binds = {
        key: BindConfig(**value) if isinstance(value, dict) else value
        for key, value in json.loads(os.environ["ALCHEMY_TEST_BINDS"]).items()
    }
    bases = tuple(MODEL_SETS[name] for name in os.environ.get("ALCHEMY_TEST_MODELS", "shop").split(",") if name)
    config_class = SQLAlchemySyncConfig if os.environ.get("ALCHEMY_TEST_SYNC") == "1" else SQLAlchemyAsyncConfig
    policy = TransactionPolicy(mode="manual" if os.environ.get("ALCHEMY_TEST_POLICY") == "manual" else "autocommit")
    hook = HOOKS.get(os.environ.get("ALCHEMY_TEST_SHELL_CONTEXT", ""))
    migrations = {
        key: Migrations(**fields) for key, fields in json.loads(os.environ.get("ALCHEMY_TEST_MIGRATIONS", "{}")).items()
    }
    config = config_class(
        binds=binds,
        base=bases,
        transaction=policy,
        shell_context=hook,
        migrations=migrations,
        sticky_secret="cli-tests-sticky-secret",
    )
    return Litestar(plugins=[SQLAlchemyPlugin(config=config)])


def create_app_without_plugin() -> Litestar:
    return Litestar()
