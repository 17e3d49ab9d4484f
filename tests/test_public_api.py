"""The exported names are the public API: changing them is a decision, so this test pins them."""

from __future__ import annotations

import plugin


def test_plugin_exports() -> None:
    assert plugin.__all__ == (
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
    assert all(hasattr(plugin, name) for name in plugin.__all__)


def test_every_error_is_an_alchemy_error() -> None:
    errors = [getattr(plugin, name) for name in plugin.__all__ if name.endswith("Error")]
    assert all(issubclass(error, plugin.AlchemyError) for error in errors)
