"""create audit_log

Revision ID: 2a6d9e1b7c35
Revises: (none, the first of its branch)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2a6d9e1b7c35"
down_revision = None
branch_labels = ("logs",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_log")
