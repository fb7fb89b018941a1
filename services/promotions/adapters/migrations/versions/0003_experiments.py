"""Experiments: customer features keyed by customer and as_of (history), experiments and their
assignments.

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

FEATURE_COLUMNS = (
    "customer_id, average_order_value_minor, order_count, lookback_days, uses_financial_products, "
    "takes_part_in_points_activities, as_of, source"
)


def _features_table(name: str, key: sa.schema.SchemaItem) -> None:
    op.create_table(
        name,
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("average_order_value_minor", sa.BigInteger, nullable=False),
        sa.Column("order_count", sa.BigInteger, nullable=False),
        sa.Column("lookback_days", sa.Integer, nullable=False),
        sa.Column("uses_financial_products", sa.Boolean, nullable=False),
        sa.Column("takes_part_in_points_activities", sa.Boolean, nullable=False),
        sa.Column("as_of", UtcDateTime, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        key,
    )


def upgrade() -> None:
    # customer_features was keyed by customer alone; now by customer and as_of. Copy, then swap.
    _features_table("customer_features_new", sa.PrimaryKeyConstraint("customer_id", "as_of", name="pk_customer_features"))
    op.execute(f"INSERT INTO customer_features_new ({FEATURE_COLUMNS}) SELECT {FEATURE_COLUMNS} FROM customer_features")
    op.drop_table("customer_features")
    op.rename_table("customer_features_new", "customer_features")

    op.create_table(
        "experiments",
        sa.Column("experiment_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("lookback_days", sa.Integer, nullable=False),
        sa.Column("strata", sa.Text, nullable=False),
        sa.Column("eligibility", sa.Text, nullable=False),
        sa.Column("sample_size", sa.BigInteger, nullable=False),
        sa.Column("variants", sa.Text, nullable=False),
        sa.Column("salt", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start_at", UtcDateTime, nullable=True),
        sa.Column("end_at", UtcDateTime, nullable=True),
        sa.Column("stopped_at", UtcDateTime, nullable=True),
        sa.Column("eligible_count", sa.BigInteger, nullable=False),
        sa.Column("sampled_count", sa.BigInteger, nullable=False),
        sa.Column("draw_summary", sa.Text, nullable=False),
        sa.Column("rolled_out_variant_id", sa.String(64), nullable=False),
        sa.Column("end_reason", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_experiments_listing", "experiments", ["created_at", "experiment_id"])
    op.create_table(
        "experiment_assignments",
        sa.Column("experiment_id", sa.String(36), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("variant_id", sa.String(64), nullable=False),
        sa.Column("stratum", sa.String(100), nullable=False),
        sa.Column("assigned_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("experiment_id", "customer_id", name="pk_experiment_assignments"),
    )
    op.create_index("ix_experiment_assignments_customer", "experiment_assignments", ["customer_id"])


def downgrade() -> None:
    op.drop_index("ix_experiment_assignments_customer", table_name="experiment_assignments")
    op.drop_table("experiment_assignments")
    op.drop_index("ix_experiments_listing", table_name="experiments")
    op.drop_table("experiments")
    # Back to one row per customer: the latest.
    _features_table("customer_features_old", sa.PrimaryKeyConstraint("customer_id"))
    op.execute(
        f"INSERT INTO customer_features_old ({FEATURE_COLUMNS}) SELECT {FEATURE_COLUMNS} FROM customer_features f "
        "WHERE f.as_of = (SELECT max(g.as_of) FROM customer_features g WHERE g.customer_id = f.customer_id)"
    )
    op.drop_table("customer_features")
    op.rename_table("customer_features_old", "customer_features")
