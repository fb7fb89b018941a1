"""Tables of the Promotions database (its own metadata, apart from every other service)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, PrimaryKeyConstraint, String, Text, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.db import UtcDateTime
from shared.runtime_tables import add_runtime_tables


class PromotionsTable(SQLModel, registry=registry()):
    pass


class ProfileReward(PromotionsTable, table=True):
    __tablename__ = "profile_rewards"
    __table_args__ = (UniqueConstraint("customer_id", "action", "survey_id", name="uq_profile_rewards_once"),)

    reward_id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(max_length=64)
    action: str = Field(max_length=32)
    survey_id: str = Field(max_length=64)
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class EarningRuleRow(PromotionsTable, table=True):
    __tablename__ = "earning_rules"
    __table_args__ = (Index("ix_earning_rules_listing", "created_at", "rule_id"),)

    rule_id: str = Field(primary_key=True, max_length=36)
    name: str = Field(max_length=200)
    type: str = Field(max_length=32)
    category: str = Field(max_length=100)
    rate_bps: int = Field(sa_column=Column(Integer, nullable=False))
    min_order_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    start_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    end_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime, nullable=True))
    ended: bool = Field(sa_column=Column(Boolean, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class CampaignRow(PromotionsTable, table=True):
    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_listing", "created_at", "campaign_id"),)

    campaign_id: str = Field(primary_key=True, max_length=36)
    name: str = Field(max_length=200)
    description: str = Field(sa_column=Column(Text, nullable=False))
    start_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    end_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    categories: str = Field(sa_column=Column(Text, nullable=False))  # newline-separated; empty: all
    segment_kind: str = Field(max_length=16)  # "", "LIST" or "CONDITION"
    condition: str = Field(sa_column=Column(Text, nullable=False))  # JSON of the feature condition
    multiplier_bps: int = Field(sa_column=Column(Integer, nullable=False))
    bonus_points: int = Field(sa_column=Column(BigInteger, nullable=False))
    budget_points: int = Field(sa_column=Column(BigInteger, nullable=False))
    spent_points: int = Field(sa_column=Column(BigInteger, nullable=False))
    min_order_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    lifetime_seconds: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    ended: bool = Field(sa_column=Column(Boolean, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class CampaignCustomer(PromotionsTable, table=True):
    __tablename__ = "campaign_customers"

    campaign_id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(primary_key=True, max_length=64)


class CustomerFeaturesRow(PromotionsTable, table=True):
    """Features of a customer over a look-back window ending at as_of; one row per customer and
    as_of (imports and computations upsert on that key). The latest as_of is the one in use."""

    __tablename__ = "customer_features"
    __table_args__ = (PrimaryKeyConstraint("customer_id", "as_of", name="pk_customer_features"),)

    customer_id: str = Field(max_length=64)
    average_order_value_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    order_count: int = Field(sa_column=Column(BigInteger, nullable=False))
    lookback_days: int = Field(sa_column=Column(Integer, nullable=False))
    uses_financial_products: bool = Field(sa_column=Column(Boolean, nullable=False))
    takes_part_in_points_activities: bool = Field(sa_column=Column(Boolean, nullable=False))
    as_of: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    source: str = Field(max_length=16)


class PromoCodeRow(PromotionsTable, table=True):
    __tablename__ = "promo_codes"
    __table_args__ = (Index("ix_promo_codes_listing", "created_at", "code"),)

    code: str = Field(primary_key=True, max_length=64)
    description: str = Field(sa_column=Column(Text, nullable=False))
    fixed_points: int = Field(sa_column=Column(BigInteger, nullable=False))
    percent_bps: int = Field(sa_column=Column(Integer, nullable=False))
    max_points_per_use: int = Field(sa_column=Column(BigInteger, nullable=False))
    start_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    end_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime, nullable=True))
    per_customer_limit: int = Field(sa_column=Column(Integer, nullable=False))
    usage_limit: int = Field(sa_column=Column(BigInteger, nullable=False))
    used_count: int = Field(sa_column=Column(BigInteger, nullable=False))
    reserved_count: int = Field(sa_column=Column(BigInteger, nullable=False))
    budget_points: int = Field(sa_column=Column(BigInteger, nullable=False))
    budget_used_points: int = Field(sa_column=Column(BigInteger, nullable=False))
    min_order_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    categories: str = Field(sa_column=Column(Text, nullable=False))
    lifetime_seconds: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    ended: bool = Field(sa_column=Column(Boolean, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class PromoReservationRow(PromotionsTable, table=True):
    __tablename__ = "promo_reservations"
    __table_args__ = (
        Index("ix_promo_reservations_customer", "code", "customer_id"),
        Index("ix_promo_reservations_due", "status", "expire_at"),
    )

    reservation_id: str = Field(primary_key=True, max_length=36)
    code: str = Field(max_length=64)
    customer_id: str = Field(max_length=64)
    order_id: str = Field(max_length=128)
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    status: str = Field(max_length=16)
    awards: str = Field(sa_column=Column(Text, nullable=False))  # JSON of the explanation
    lifetime_seconds: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    expire_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class OrderAccrual(PromotionsTable, table=True):
    __tablename__ = "order_accruals"

    order_id: str = Field(primary_key=True, max_length=128)
    customer_id: str = Field(max_length=64)
    total_points: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class CashbackMonth(PromotionsTable, table=True):
    __tablename__ = "cashback_months"
    __table_args__ = (PrimaryKeyConstraint("customer_id", "month"),)

    customer_id: str = Field(max_length=64)
    month: str = Field(sa_column=Column(String(7), nullable=False))
    paid_points: int = Field(sa_column=Column(BigInteger, nullable=False))


class DefaultMechanicRow(PromotionsTable, table=True):
    __tablename__ = "default_mechanics"
    __table_args__ = (Index("ix_default_mechanics_effective", "effective_at"),)

    mechanic_id: str = Field(primary_key=True, max_length=36)
    effective_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    code: str = Field(max_length=64)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=16)  # "INTEREST" or "CASHBACK"
    apr_bps: int = Field(sa_column=Column(Integer, nullable=False))
    basis: str = Field(max_length=16)
    tiers: str = Field(sa_column=Column(Text, nullable=False))  # "min:rate,min:rate"
    monthly_cap_points: int = Field(sa_column=Column(BigInteger, nullable=False))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    operator_id: str = Field(max_length=64)
    experiment_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class ExperimentRow(PromotionsTable, table=True):
    """An experiment. Strata, eligibility, variants (with their mechanics) and the drawn sample's
    per-stratum summary are JSON: they are read and written whole."""

    __tablename__ = "experiments"
    __table_args__ = (Index("ix_experiments_listing", "created_at", "experiment_id"),)

    experiment_id: str = Field(primary_key=True, max_length=36)
    name: str = Field(max_length=200)
    description: str = Field(sa_column=Column(Text, nullable=False))
    lookback_days: int = Field(sa_column=Column(Integer, nullable=False))
    strata: str = Field(sa_column=Column(Text, nullable=False))
    eligibility: str = Field(sa_column=Column(Text, nullable=False))
    sample_size: int = Field(sa_column=Column(BigInteger, nullable=False))
    variants: str = Field(sa_column=Column(Text, nullable=False))
    salt: str = Field(max_length=128)
    status: str = Field(max_length=16)
    start_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime, nullable=True))
    end_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime, nullable=True))
    # When participants went back to the default (ended) or the rollout took over; None while running.
    stopped_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime, nullable=True))
    eligible_count: int = Field(sa_column=Column(BigInteger, nullable=False))
    sampled_count: int = Field(sa_column=Column(BigInteger, nullable=False))
    draw_summary: str = Field(sa_column=Column(Text, nullable=False))
    rolled_out_variant_id: str = Field(max_length=64)
    end_reason: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class AssignmentRow(PromotionsTable, table=True):
    __tablename__ = "experiment_assignments"
    __table_args__ = (
        PrimaryKeyConstraint("experiment_id", "customer_id", name="pk_experiment_assignments"),
        Index("ix_experiment_assignments_customer", "customer_id"),
    )

    experiment_id: str = Field(max_length=36)
    customer_id: str = Field(max_length=64)
    variant_id: str = Field(max_length=64)
    stratum: str = Field(max_length=100)
    assigned_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


metadata = PromotionsTable.metadata
runtime_tables = add_runtime_tables(metadata)
