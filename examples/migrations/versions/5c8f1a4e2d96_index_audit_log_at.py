"""index audit_log.at

Revision ID: 5c8f1a4e2d96
Revises: 2a6d9e1b7c35
"""

from __future__ import annotations

from alembic import op

revision = "5c8f1a4e2d96"
down_revision = "2a6d9e1b7c35"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_at", table_name="audit_log")
