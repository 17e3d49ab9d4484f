"""A Litestar plugin for SQLAlchemy: one engine per bind, bind-routed sessions, per-request transactions.

Example::

    from litestar import Litestar
    from plugin import SQLAlchemyAsyncConfig, SQLAlchemyPlugin

    config = SQLAlchemyAsyncConfig(binds={"default": "sqlite+aiosqlite:///app.db", "logs": "sqlite+aiosqlite:///logs.db"})
    app = Litestar(route_handlers=[...], plugins=[SQLAlchemyPlugin(config=config)])
"""

from __future__ import annotations

import logging

from plugin.binds import BIND_KEY, BindRouter
from plugin.config import BindConfig, SQLAlchemyAsyncConfig, SQLAlchemySyncConfig
from plugin.engines import EngineRegistry
from plugin.exceptions import (
    AlchemyError,
    BindConflictError,
    BindKeyError,
    CommitConflictError,
    CommitError,
    ConfigurationError,
    CrossBindError,
    DriverMismatchError,
    DriverNotInstalledError,
    DuplicateKeyError,
    LifecycleError,
    MigrationsError,
    SandboxError,
    StatementRefusedError,
)
from plugin.migrations import Migrations
from plugin.plugin import SQLAlchemyPlugin
from plugin.policy import TransactionPolicy
from plugin.sandbox import Sandbox
from plugin.sessions import AsyncRoutingSession, RoutingSession

__all__ = (
    "BIND_KEY",
    "AlchemyError",
    "AsyncRoutingSession",
    "BindConfig",
    "BindConflictError",
    "BindKeyError",
    "BindRouter",
    "CommitConflictError",
    "CommitError",
    "ConfigurationError",
    "CrossBindError",
    "DriverMismatchError",
    "DriverNotInstalledError",
    "DuplicateKeyError",
    "EngineRegistry",
    "LifecycleError",
    "Migrations",
    "MigrationsError",
    "RoutingSession",
    "SQLAlchemyAsyncConfig",
    "SQLAlchemyPlugin",
    "SQLAlchemySyncConfig",
    "Sandbox",
    "SandboxError",
    "StatementRefusedError",
    "TransactionPolicy",
)

# A library leaves logging configuration to the app; this keeps Python's last-resort handler from
# printing our ERROR lines to stderr when the app configured nothing (e.g. in the CLI).
logging.getLogger("plugin").addHandler(logging.NullHandler())
