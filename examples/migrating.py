"""The example app with its Alembic migrations configured, and the health routes.

``examples/migrations/`` is one Alembic script directory with a branch label per bind (``app`` and
``logs``); ``db check`` compares each database with its branch's head::

    alembic -c examples/migrations/alembic.ini -x bind=logs upgrade logs@head   # Alembic migrates
    litestar --app examples.migrating:app db check                              # the plugin reports
"""

from __future__ import annotations

from pathlib import Path

from examples.app import create_app
from plugin import Migrations

SCRIPTS = str(Path(__file__).parent / "migrations")

app = create_app(migrations={bind: Migrations(script_location=SCRIPTS, branch=bind) for bind in ("app", "logs")})
