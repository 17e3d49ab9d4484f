"""Apps for the CLI tests, built from environment variables by a factory Litestar calls per command.

``ALCHEMY_TEST_BINDS``: JSON ``{"key": "url", ...}``; ``ALCHEMY_TEST_MODELS``: comma-separated model sets
(``shop``, ``logs``, ``metrics``, ``archive``); ``ALCHEMY_TEST_SYNC=1`` for a sync config;
``ALCHEMY_TEST_POLICY=manual`` for the manual transaction policy; ``ALCHEMY_TEST_MIGRATIONS``: JSON
``{"key": {Migrations fields}, ...}``.
"""

from __future__ import annotations

import json
import os

from litestar import Litestar
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from plugin import Migrations, SQLAlchemyAsyncConfig, SQLAlchemyPlugin, SQLAlchemySyncConfig, TransactionPolicy


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


MODEL_SETS = {"shop": ShopBase, "logs": LogsBase, "metrics": MetricsBase, "archive": ArchiveBase}


def create_app() -> Litestar:
    binds = json.loads(os.environ["ALCHEMY_TEST_BINDS"])
    bases = tuple(MODEL_SETS[name] for name in os.environ.get("ALCHEMY_TEST_MODELS", "shop").split(",") if name)
    config_class = SQLAlchemySyncConfig if os.environ.get("ALCHEMY_TEST_SYNC") == "1" else SQLAlchemyAsyncConfig
    policy = TransactionPolicy(mode="manual" if os.environ.get("ALCHEMY_TEST_POLICY") == "manual" else "autocommit")
    migrations = {
        key: Migrations(**fields) for key, fields in json.loads(os.environ.get("ALCHEMY_TEST_MIGRATIONS", "{}")).items()
    }
    config = config_class(binds=binds, base=bases, transaction=policy, migrations=migrations)
    return Litestar(plugins=[SQLAlchemyPlugin(config=config)])


def create_app_without_plugin() -> Litestar:
    return Litestar()
