"""Finding the app and its plugin, starting engines, and turning user errors into one line + exit code."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from plugin import AlchemyError, SQLAlchemyPlugin
from plugin.exceptions import unknown_binds

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from litestar import Litestar

__all__ = ("Target", "engines_started", "fail", "load_target", "reported_errors", "require_binds")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as one error line on stderr and exit with ``code``."""
    from alchemy_cli import render

    render.error(message)
    raise typer.Exit(code)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn the plugin's errors (bad config, unknown bind, ...) into one line and exit code 1."""
    try:
        yield
    except AlchemyError as exc:
        fail(str(exc))


@dataclass(frozen=True)
class Target:
    """The app a command works on."""

    app_path: str
    app: Litestar
    plugin: SQLAlchemyPlugin[Any]

    def redact(self, text: str) -> str:
        """``text`` with every secret of every bind replaced by ``***`` (driver messages may echo them)."""
        for bind in self.plugin.config.bind_configs.values():
            for secret in bind.secrets():
                text = text.replace(secret, "***")
        return text


def load_target(obj: object) -> Target:
    """Resolve Litestar's CLI context object into the app and its :class:`SQLAlchemyPlugin`."""
    from litestar.cli._utils import LitestarEnv

    # Litestar's root command loads the app before any subcommand runs; ``obj`` is a loader only when
    # that first attempt found no app. An app that raises while it is imported fails there, in Litestar.
    try:
        env = obj if isinstance(obj, LitestarEnv) else obj() if callable(obj) else None
    except Exception as exc:
        fail(
            f"the app could not be loaded ({type(exc).__name__}: {exc}); pass --app module.path:app or set LITESTAR_APP"
        )
    if env is None:
        fail("no app to work on; pass --app module.path:app or set LITESTAR_APP")
    plugin = next((p for p in env.app.plugins if isinstance(p, SQLAlchemyPlugin)), None)
    if plugin is None:
        fail(
            f"the app {env.app_path} does not register SQLAlchemyPlugin; add "
            "plugins=[SQLAlchemyPlugin(config=...)] to Litestar(...)"
        )
    return Target(app_path=env.app_path, app=env.app, plugin=plugin)


def require_binds(target: Target, keys: list[str], option: str = "--bind") -> None:
    """Usage error (exit 2) for ``--bind`` values that are not configured binds."""
    configured = target.plugin.router.keys
    if unknown := [key for key in keys if key not in configured]:
        raise typer.BadParameter(str(unknown_binds(unknown, configured)), param_hint=f"'{option}'")


@asynccontextmanager
async def engines_started(plugin: SQLAlchemyPlugin[Any], connect_timeout: float | None = None) -> AsyncIterator[None]:
    """Start the plugin's engines as the app's startup does (no create_all); dispose them all at exit.

    With ``connect_timeout``, every new connection must be made within that many seconds
    (:mod:`alchemy_cli.timeouts`). Meanwhile the plugin's own loggers are muted: a command reports
    failures itself, in one line, and the app's logging config would print the same failure again.
    """
    from alchemy_cli.timeouts import connect_timeouts

    plugin.engines.start()
    plugin_logger = logging.getLogger("plugin")
    level = plugin_logger.level
    plugin_logger.setLevel(logging.CRITICAL + 1)  # children inherit it; `disabled` would not carry over
    try:
        if connect_timeout is None:
            yield
        else:
            with connect_timeouts(plugin, connect_timeout):
                yield
    finally:
        await plugin.engines.dispose()
        plugin_logger.setLevel(level)
