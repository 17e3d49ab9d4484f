"""Finding the app and its plugin, starting engines, and turning user errors into one line + exit code."""

from __future__ import annotations

from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from plugin import AlchemyError, SQLAlchemyPlugin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from litestar import Litestar

__all__ = ("Target", "engines_started", "fail", "load_target", "reported_errors")


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
        """``text`` with every configured bind password replaced by ``***`` (driver messages may echo them)."""
        for bind in self.plugin.config.bind_configs.values():
            password = bind.resolved_url.password
            if password:
                text = text.replace(str(password), "***")
        return text


def load_target(obj: object) -> Target:
    """Resolve Litestar's CLI context object into the app and its :class:`SQLAlchemyPlugin`."""
    from litestar.cli._utils import LitestarEnv

    try:
        env = obj if isinstance(obj, LitestarEnv) else obj() if callable(obj) else None
    except AlchemyError as exc:
        fail(f"the app could not be loaded: {exc}")
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


@asynccontextmanager
async def engines_started(plugin: SQLAlchemyPlugin[Any]) -> AsyncIterator[None]:
    """Start the plugin's engines as the app's startup does (no create_all); dispose them all at exit."""
    plugin.engines.start()
    try:
        yield
    finally:
        await plugin.engines.dispose()
