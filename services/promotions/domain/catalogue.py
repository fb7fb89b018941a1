"""Operator-managed rules, campaigns and promo codes: their specifications, checks and status.

Each check raises INVALID_ARGUMENT with the field and its own reason, so a bad request changes
nothing and says exactly what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.promotions.domain.segments import Condition
from shared.errors import InvalidArgument

MAX_NAME = 200
MAX_CATEGORY = 100
MAX_CODE = 64
MAX_RATE_BPS = 100_000  # 1000 %: far above any real rate, guards typos
MAX_SEGMENT_CUSTOMERS = 100_000


class RuleType(StrEnum):
    DEFAULT_RATE = "DEFAULT_RATE"
    CATEGORY_RATE = "CATEGORY_RATE"
    ORDER_AMOUNT_TIER = "ORDER_AMOUNT_TIER"


class Status(StrEnum):
    SCHEDULED = "SCHEDULED"
    ACTIVE = "ACTIVE"
    EXHAUSTED = "EXHAUSTED"
    ENDED = "ENDED"


def status_of(now: datetime, start_at: datetime, end_at: datetime | None, exhausted: bool = False) -> Status:
    if end_at is not None and now >= end_at:
        return Status.ENDED
    if now < start_at:
        return Status.SCHEDULED
    return Status.EXHAUSTED if exhausted else Status.ACTIVE


def in_force(now: datetime, start_at: datetime, end_at: datetime | None) -> bool:
    return start_at <= now and (end_at is None or now < end_at)


def overlaps(a_start: datetime, a_end: datetime | None, b_start: datetime, b_end: datetime | None) -> bool:
    return (b_end is None or a_start < b_end) and (a_end is None or b_start < a_end)


@dataclass(frozen=True)
class RuleSpec:
    name: str
    type: RuleType
    category: str
    rate_bps: int
    min_order_minor: int
    start_at: datetime
    end_at: datetime | None


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    description: str
    start_at: datetime | None
    end_at: datetime | None
    categories: tuple[str, ...]
    segment_kind: str  # "", "LIST", "CONDITION"
    customers: tuple[str, ...]
    condition: Condition
    multiplier_bps: int
    bonus_points: int
    budget_points: int
    min_order_minor: int
    lifetime_seconds: int | None


@dataclass(frozen=True)
class CodeSpec:
    code: str
    description: str
    fixed_points: int
    percent_bps: int
    max_points_per_use: int
    start_at: datetime
    end_at: datetime | None
    per_customer_limit: int
    usage_limit: int
    budget_points: int
    min_order_minor: int
    categories: tuple[str, ...]
    lifetime_seconds: int | None


def _name(field: str, name: str) -> None:
    if not name.strip():
        raise InvalidArgument.field(field, "is required", "NAME_REQUIRED")
    if len(name) > MAX_NAME:
        raise InvalidArgument.field(field, f"must be at most {MAX_NAME} characters", "NAME_TOO_LONG")


def _window(prefix: str, start_at: datetime | None, end_at: datetime | None) -> None:
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise InvalidArgument.field(f"{prefix}.end_time", "must be after start_time", "WINDOW_ENDS_BEFORE_START")


def _rate(field: str, rate_bps: int) -> None:
    if rate_bps < 0:
        raise InvalidArgument.field(field, f"must not be negative, got {rate_bps}", "NEGATIVE_RATE")
    if rate_bps > MAX_RATE_BPS:
        raise InvalidArgument.field(field, f"must be at most {MAX_RATE_BPS} basis points", "RATE_TOO_HIGH")


def _categories(field: str, categories: tuple[str, ...]) -> None:
    for category in categories:
        if not category.strip() or len(category) > MAX_CATEGORY:
            raise InvalidArgument.field(
                field, f"each category must be 1 to {MAX_CATEGORY} characters", "INVALID_CATEGORY"
            )


def validate_rule(spec: RuleSpec) -> None:
    _name("rule.name", spec.name)
    _rate("rule.rate_bps", spec.rate_bps)
    _window("rule", spec.start_at, spec.end_at)
    if spec.type is RuleType.CATEGORY_RATE and not spec.category.strip():
        raise InvalidArgument.field("rule.category", "is required for a category rate", "CATEGORY_REQUIRED")
    if spec.type is not RuleType.CATEGORY_RATE and spec.category:
        raise InvalidArgument.field("rule.category", f"must be empty for {spec.type.value}", "CATEGORY_NOT_ALLOWED")
    if len(spec.category) > MAX_CATEGORY:
        raise InvalidArgument.field("rule.category", f"must be at most {MAX_CATEGORY} characters", "INVALID_CATEGORY")
    if spec.type is RuleType.ORDER_AMOUNT_TIER and spec.min_order_minor <= 0:
        raise InvalidArgument.field(
            "rule.min_order_amount", "is required (above zero) for an order-amount tier", "TIER_AMOUNT_REQUIRED"
        )
    if spec.type is not RuleType.ORDER_AMOUNT_TIER and spec.min_order_minor:
        raise InvalidArgument.field(
            "rule.min_order_amount", f"must be unset for {spec.type.value}", "MIN_ORDER_AMOUNT_NOT_ALLOWED"
        )


def validate_campaign(spec: CampaignSpec) -> None:
    _name("campaign.name", spec.name)
    if spec.start_at is None:
        raise InvalidArgument.field("campaign.start_time", "is required", "START_TIME_REQUIRED")
    if spec.end_at is None:
        raise InvalidArgument.field("campaign.end_time", "is required", "END_TIME_REQUIRED")
    _window("campaign", spec.start_at, spec.end_at)
    _categories("campaign.categories", spec.categories)
    if spec.multiplier_bps < 0:
        raise InvalidArgument.field("campaign.multiplier_bps", "must not be negative", "NEGATIVE_RATE")
    if spec.bonus_points < 0:
        raise InvalidArgument.field("campaign.bonus_points", "must not be negative", "NEGATIVE_BONUS")
    if spec.multiplier_bps == 0 and spec.bonus_points == 0:
        raise InvalidArgument.field("campaign.reward", "set multiplier_bps or bonus_points", "REWARD_REQUIRED")
    if spec.multiplier_bps and spec.multiplier_bps <= 10_000:
        raise InvalidArgument.field(
            "campaign.multiplier_bps", "must be above 10000 (x1 pays nothing extra)", "MULTIPLIER_TOO_LOW"
        )
    _rate("campaign.multiplier_bps", spec.multiplier_bps)
    if spec.budget_points < 0:
        raise InvalidArgument.field("campaign.budget_points", "must not be negative", "NEGATIVE_BUDGET")
    if spec.min_order_minor < 0:
        raise InvalidArgument.field("campaign.min_order_amount", "must not be negative", "NEGATIVE_AMOUNT")
    if len(spec.customers) > MAX_SEGMENT_CUSTOMERS:
        raise InvalidArgument.field(
            "campaign.segment.customers", f"at most {MAX_SEGMENT_CUSTOMERS} customers", "SEGMENT_TOO_LARGE"
        )
    if spec.lifetime_seconds is not None and spec.lifetime_seconds <= 0:
        raise InvalidArgument.field("campaign.points_lifetime", "must be positive", "INVALID_LIFETIME")


def normalise_code(code: str) -> str:
    return code.strip().upper()


def validate_code(spec: CodeSpec) -> None:
    if not spec.code or len(spec.code) > MAX_CODE or not spec.code.replace("-", "").replace("_", "").isalnum():
        raise InvalidArgument.field(
            "promo_code.code", f"must be 1 to {MAX_CODE} letters, digits, '-' or '_'", "INVALID_PROMO_CODE"
        )
    _window("promo_code", spec.start_at, spec.end_at)
    if spec.fixed_points < 0:
        raise InvalidArgument.field("promo_code.fixed_points", "must not be negative", "NEGATIVE_REWARD")
    _rate("promo_code.percent_bps", spec.percent_bps)
    if spec.fixed_points == 0 and spec.percent_bps == 0:
        raise InvalidArgument.field("promo_code.reward", "set fixed_points or percent_bps", "REWARD_REQUIRED")
    if spec.max_points_per_use < 0:
        raise InvalidArgument.field("promo_code.max_points_per_use", "must not be negative", "NEGATIVE_LIMIT")
    if spec.per_customer_limit < 0:
        raise InvalidArgument.field("promo_code.per_customer_limit", "must not be negative", "NEGATIVE_LIMIT")
    if spec.usage_limit < 0:
        raise InvalidArgument.field("promo_code.usage_limit", "must not be negative", "NEGATIVE_LIMIT")
    if spec.budget_points < 0:
        raise InvalidArgument.field("promo_code.budget_points", "must not be negative", "NEGATIVE_BUDGET")
    if spec.min_order_minor < 0:
        raise InvalidArgument.field("promo_code.min_order_amount", "must not be negative", "NEGATIVE_AMOUNT")
    _categories("promo_code.categories", spec.categories)
    if spec.lifetime_seconds is not None and spec.lifetime_seconds <= 0:
        raise InvalidArgument.field("promo_code.points_lifetime", "must be positive", "INVALID_LIFETIME")
