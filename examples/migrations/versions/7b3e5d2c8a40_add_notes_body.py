"""add notes.body

Revision ID: 7b3e5d2c8a40
Revises: 1f0c2a9d4e11
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "7b3e5d2c8a40"
down_revision = "1f0c2a9d4e11"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("notes", sa.Column("body", sa.String(2000), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("notes", "body")
