"""Profile-action rewards, idempotency keys and outbox.

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
        "profile_rewards",
        sa.Column("reward_id", sa.String(36), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("survey_id", sa.String(64), nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("customer_id", "action", "survey_id", name="uq_profile_rewards_once"),
        sa.CheckConstraint("points >= 0", name="ck_profile_rewards_points"),
    )
    create_runtime_tables()


def downgrade() -> None:
    drop_runtime_tables()
    op.drop_table("profile_rewards")
