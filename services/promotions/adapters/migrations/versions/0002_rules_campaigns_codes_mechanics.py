"""Earning rules (with the seeded default rate), campaigns and their budgets, customer features,
promo codes and reservations, order accruals, monthly cashback, default mechanics.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The rule set every new database starts with: 1 % of the money paid, on every category.
SEED_TIME = datetime(2000, 1, 1, tzinfo=UTC)
SEED_DEFAULT_RULE_ID = "default-rate"
SEED_DEFAULT_RATE_BPS = 100


def _times() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    ]


def upgrade() -> None:
    rules = op.create_table(
        "earning_rules",
        sa.Column("rule_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("rate_bps", sa.Integer, nullable=False),
        sa.Column("min_order_minor", sa.BigInteger, nullable=False),
        sa.Column("start_at", UtcDateTime, nullable=False),
        sa.Column("end_at", UtcDateTime, nullable=True),
        sa.Column("ended", sa.Boolean, nullable=False),
        *_times(),
        sa.CheckConstraint("rate_bps >= 0", name="ck_earning_rules_rate"),
        sa.CheckConstraint("min_order_minor >= 0", name="ck_earning_rules_min_order"),
    )
    op.create_index("ix_earning_rules_listing", "earning_rules", ["created_at", "rule_id"])
    op.bulk_insert(
        rules,
        [
            {
                "rule_id": SEED_DEFAULT_RULE_ID,
                "name": "Default rate",
                "type": "DEFAULT_RATE",
                "category": "",
                "rate_bps": SEED_DEFAULT_RATE_BPS,
                "min_order_minor": 0,
                "start_at": SEED_TIME,
                "end_at": None,
                "ended": False,
                "created_at": SEED_TIME,
                "updated_at": SEED_TIME,
            }
        ],
    )

    op.create_table(
        "campaigns",
        sa.Column("campaign_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("start_at", UtcDateTime, nullable=False),
        sa.Column("end_at", UtcDateTime, nullable=False),
        sa.Column("categories", sa.Text, nullable=False),
        sa.Column("segment_kind", sa.String(16), nullable=False),
        sa.Column("condition", sa.Text, nullable=False),
        sa.Column("multiplier_bps", sa.Integer, nullable=False),
        sa.Column("bonus_points", sa.BigInteger, nullable=False),
        sa.Column("budget_points", sa.BigInteger, nullable=False),
        sa.Column("spent_points", sa.BigInteger, nullable=False),
        sa.Column("min_order_minor", sa.BigInteger, nullable=False),
        sa.Column("lifetime_seconds", sa.BigInteger, nullable=True),
        sa.Column("ended", sa.Boolean, nullable=False),
        *_times(),
        # The database itself refuses an over-issued budget, whatever the code does.
        sa.CheckConstraint("spent_points >= 0 AND spent_points <= budget_points", name="ck_campaigns_budget"),
    )
    op.create_index("ix_campaigns_listing", "campaigns", ["created_at", "campaign_id"])
    op.create_table(
        "campaign_customers",
        sa.Column("campaign_id", sa.String(36), primary_key=True),
        sa.Column("customer_id", sa.String(64), primary_key=True),
    )
    op.create_table(
        "customer_features",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("average_order_value_minor", sa.BigInteger, nullable=False),
        sa.Column("order_count", sa.BigInteger, nullable=False),
        sa.Column("lookback_days", sa.Integer, nullable=False),
        sa.Column("uses_financial_products", sa.Boolean, nullable=False),
        sa.Column("takes_part_in_points_activities", sa.Boolean, nullable=False),
        sa.Column("as_of", UtcDateTime, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
    )
    op.create_table(
        "promo_codes",
        sa.Column("code", sa.String(64), primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("fixed_points", sa.BigInteger, nullable=False),
        sa.Column("percent_bps", sa.Integer, nullable=False),
        sa.Column("max_points_per_use", sa.BigInteger, nullable=False),
        sa.Column("start_at", UtcDateTime, nullable=False),
        sa.Column("end_at", UtcDateTime, nullable=True),
        sa.Column("per_customer_limit", sa.Integer, nullable=False),
        sa.Column("usage_limit", sa.BigInteger, nullable=False),
        sa.Column("used_count", sa.BigInteger, nullable=False),
        sa.Column("reserved_count", sa.BigInteger, nullable=False),
        sa.Column("budget_points", sa.BigInteger, nullable=False),
        sa.Column("budget_used_points", sa.BigInteger, nullable=False),
        sa.Column("min_order_minor", sa.BigInteger, nullable=False),
        sa.Column("categories", sa.Text, nullable=False),
        sa.Column("lifetime_seconds", sa.BigInteger, nullable=True),
        sa.Column("ended", sa.Boolean, nullable=False),
        *_times(),
        sa.CheckConstraint("used_count >= 0 AND reserved_count >= 0", name="ck_promo_codes_counts"),
        sa.CheckConstraint(
            "usage_limit = 0 OR used_count + reserved_count <= usage_limit", name="ck_promo_codes_usage_limit"
        ),
        sa.CheckConstraint(
            "budget_used_points >= 0 AND (budget_points = 0 OR budget_used_points <= budget_points)",
            name="ck_promo_codes_budget",
        ),
    )
    op.create_index("ix_promo_codes_listing", "promo_codes", ["created_at", "code"])
    op.create_table(
        "promo_reservations",
        sa.Column("reservation_id", sa.String(36), primary_key=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(128), nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("awards", sa.Text, nullable=False),
        sa.Column("lifetime_seconds", sa.BigInteger, nullable=True),
        sa.Column("expire_at", UtcDateTime, nullable=False),
        *_times(),
    )
    op.create_index("ix_promo_reservations_customer", "promo_reservations", ["code", "customer_id"])
    op.create_index("ix_promo_reservations_due", "promo_reservations", ["status", "expire_at"])
    op.create_table(
        "order_accruals",
        sa.Column("order_id", sa.String(128), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("total_points", sa.BigInteger, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "cashback_months",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("paid_points", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "month"),
        sa.CheckConstraint("paid_points >= 0", name="ck_cashback_months_paid"),
    )
    op.create_table(
        "default_mechanics",
        sa.Column("mechanic_id", sa.String(36), primary_key=True),
        sa.Column("effective_at", UtcDateTime, nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("apr_bps", sa.Integer, nullable=False),
        sa.Column("basis", sa.String(16), nullable=False),
        sa.Column("tiers", sa.Text, nullable=False),
        sa.Column("monthly_cap_points", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("operator_id", sa.String(64), nullable=False),
        sa.Column("experiment_id", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.CheckConstraint("apr_bps >= 0 AND apr_bps <= 1800", name="ck_default_mechanics_apr"),
    )
    op.create_index("ix_default_mechanics_effective", "default_mechanics", ["effective_at"])


def downgrade() -> None:
    op.drop_index("ix_default_mechanics_effective", table_name="default_mechanics")
    op.drop_table("default_mechanics")
    op.drop_table("cashback_months")
    op.drop_table("order_accruals")
    op.drop_index("ix_promo_reservations_due", table_name="promo_reservations")
    op.drop_index("ix_promo_reservations_customer", table_name="promo_reservations")
    op.drop_table("promo_reservations")
    op.drop_index("ix_promo_codes_listing", table_name="promo_codes")
    op.drop_table("promo_codes")
    op.drop_table("customer_features")
    op.drop_table("campaign_customers")
    op.drop_index("ix_campaigns_listing", table_name="campaigns")
    op.drop_table("campaigns")
    op.drop_index("ix_earning_rules_listing", table_name="earning_rules")
    op.drop_table("earning_rules")
