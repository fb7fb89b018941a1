"""Decisions on a reference's pending points, applied to its lots credited later.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reference_decisions",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("reference", sa.String(128), primary_key=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("available_at", UtcDateTime, nullable=True),
        sa.Column("reason", sa.String(500), nullable=False, server_default=""),
        sa.Column("decided_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("reference_decisions")
