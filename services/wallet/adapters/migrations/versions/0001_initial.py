"""Wallets, idempotency keys and outbox.

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
        "wallets",
        sa.Column("wallet_id", sa.String(36), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False, unique=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("balance_minor", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.CheckConstraint("balance_minor >= 0", name="ck_wallets_balance_not_negative"),
    )
    create_runtime_tables()


def downgrade() -> None:
    drop_runtime_tables()
    op.drop_table("wallets")
