"""Lots, history entries, idempotency keys and outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime
from shared.runtime_tables import create_runtime_tables, drop_runtime_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lots",
        sa.Column("lot_id", sa.String(36), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("remaining", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("available_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False, server_default=""),
        sa.Column("operator_id", sa.String(64), nullable=False),
        sa.CheckConstraint("remaining >= 0 AND remaining <= amount", name="ck_lots_remaining"),
        sa.CheckConstraint("amount > 0", name="ck_lots_amount"),
    )
    op.create_index("ix_lots_customer_status_expiry", "lots", ["customer_id", "status", "expires_at"])
    op.create_index("ix_lots_reference", "lots", ["reference"])
    op.create_table(
        "entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("lot_id", sa.String(36), sa.ForeignKey("lots.lot_id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("delta", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
    )
    op.create_index("ix_entries_customer_time", "entries", ["customer_id", "created_at"])
    create_runtime_tables()


def downgrade() -> None:
    drop_runtime_tables()
    op.drop_index("ix_entries_customer_time", table_name="entries")
    op.drop_table("entries")
    op.drop_index("ix_lots_reference", table_name="lots")
    op.drop_index("ix_lots_customer_status_expiry", table_name="lots")
    op.drop_table("lots")
