"""Alembic's environment for the example: one script directory, a branch label per bind.

Pick the bind with ``-x bind=app`` or ``-x bind=logs``; its database is the example app's own (the
plugin's ``db check`` reads the state without running this file).

    alembic -c examples/migrations/alembic.ini -x bind=logs upgrade logs@head
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine

# Where examples/app.py keeps its databases (not imported from there: that would build the app).
DATA_DIR = Path(os.environ.get("EXAMPLE_DATA_DIR", Path(__file__).parents[1] / "data"))
bind = context.get_x_argument(as_dictionary=True).get("bind", "app")
engine = create_engine(f"sqlite:///{DATA_DIR / f'{bind}.db'}")
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
