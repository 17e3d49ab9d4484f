"""Set-ups for README transcripts that are not about the example app (see tests/test_readme.py).

A transcript block preceded by ``<!-- transcript: NAME -->`` runs in a fresh directory prepared by
``NAME(directory)``, with the environment variables it returns, instead of on the seeded example app.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

__all__ = ("SERVED", "health", "migrations")

SERVED = {"health"}
"""Set-ups whose transcript talks to the app over HTTP: the test serves ``app:app`` with uvicorn on a free
port for the block, and ``127.0.0.1:8000`` in its commands means that port."""

APP = """\
from litestar import Litestar

from plugin import Migrations, SQLAlchemyAsyncConfig, SQLAlchemyPlugin

config = SQLAlchemyAsyncConfig(
    binds={"app": "sqlite+aiosqlite:///app.db", "logs": "sqlite+aiosqlite:///logs.db"},
    default_bind="app",
    migrations={"app": Migrations(ini="app.ini"), "logs": Migrations(ini="logs.ini")},
)
app = Litestar(plugins=[SQLAlchemyPlugin(config=config)])
"""

CHAINS = {
    "app": [("7b3e5d2c8a40", "create notes")],
    "logs": [
        ("1f0d3c5a7b92", "create audit_log"),
        ("5c8f1a4e2d96", "index audit_log.created_at"),
        ("9e2b7f3c1a58", "add audit_log.actor"),
    ],
}
STAMPED = {"app": "7b3e5d2c8a40", "logs": "1f0d3c5a7b92"}


def migrations(directory: Path) -> dict[str, str]:
    """The README's Migrations section: one ``alembic.ini`` per bind; ``app`` at head, ``logs`` two behind."""
    (directory / "app.py").write_text(APP)
    for bind, chain in CHAINS.items():
        ini = directory / f"{bind}.ini"
        with contextlib.redirect_stdout(io.StringIO()):  # Alembic's "Generating ..." lines
            command.init(Config(str(ini)), str(directory / f"migrations_{bind}"), template="generic")
            config = Config(str(ini))
            head = "base"
            for rev_id, message in chain:
                command.revision(config, message=message, rev_id=rev_id, head=head)
                head = rev_id
        engine = create_engine(f"sqlite:///{directory / f'{bind}.db'}")
        try:
            with engine.begin() as connection:
                MigrationContext.configure(connection).stamp(ScriptDirectory.from_config(config), STAMPED[bind])
        finally:
            engine.dispose()
    return {"LITESTAR_APP": "app:app"}


HEALTH_APP = APP.replace(
    "app = Litestar(plugins=[SQLAlchemyPlugin(config=config)])",
    "plugin = SQLAlchemyPlugin(config=config)\n"
    'app = Litestar(route_handlers=[plugin.health_route("/health/db")], plugins=[plugin])',
)


def health(directory: Path) -> dict[str, str]:
    """The README's health section: the Migrations section's app with ``plugin.health_route("/health/db")``."""
    env = migrations(directory)
    (directory / "app.py").write_text(HEALTH_APP)
    return env
