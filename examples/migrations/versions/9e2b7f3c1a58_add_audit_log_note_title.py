"""add audit_log.note_title

Revision ID: 9e2b7f3c1a58
Revises: 5c8f1a4e2d96
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "9e2b7f3c1a58"
down_revision = "5c8f1a4e2d96"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("note_title", sa.String(200), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("audit_log", "note_title")
