"""Points lots: every credit is a lot with its own amount, remaining part and expiry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum
from typing import NamedTuple

from shared.errors import InvalidArgument
from shared.validation import validate_customer_id

MAX_CREDIT = 100_000_000  # points in one credit; far above any real reward, guards typos
MAX_REFERENCE = 128
MAX_TEXT = 500
MAX_OPERATOR = 64
MAX_LIFETIME_DAYS = 36_500


class PointsSource(StrEnum):
    PURCHASE = "PURCHASE"
    PROMO_CODE = "PROMO_CODE"
    CAMPAIGN = "CAMPAIGN"
    PROFILE_ACTION = "PROFILE_ACTION"
    SURVEY = "SURVEY"
    WALLET_INTEREST = "WALLET_INTEREST"
    CASHBACK = "CASHBACK"
    REFUND_RETURN = "REFUND_RETURN"
    MANUAL_ADJUSTMENT = "MANUAL_ADJUSTMENT"


# Points earned by an order (purchase, cashback, and the promo-code and campaign rewards of that
# order) may wait for it to be received; interest, profile and operator points are spendable at once.
PENDING_SOURCES = frozenset(
    {PointsSource.PURCHASE, PointsSource.CASHBACK, PointsSource.PROMO_CODE, PointsSource.CAMPAIGN}
)
# Returned points go back into the lots they came from; no lot is ever credited with this source.
NOT_CREDITABLE = frozenset({PointsSource.REFUND_RETURN})
# The "takes part in points activities" feature of experiments.
ACTIVITY_SOURCES = frozenset(
    {PointsSource.PROMO_CODE, PointsSource.CAMPAIGN, PointsSource.PROFILE_ACTION, PointsSource.SURVEY}
)


class LotStatus(StrEnum):
    PENDING = "PENDING"
    AVAILABLE = "AVAILABLE"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    SPENT = "SPENT"


class CreditRequest(NamedTuple):
    """A credit asked for. A named tuple, immutable as a frozen dataclass is, and made in a third
    of its time: a batch makes one per credit (1,000 a `BatchCreditPoints`)."""

    customer_id: str
    points: int
    source: PointsSource
    reference: str
    pending: bool
    expires_at: datetime | None
    reason: str
    operator_id: str


@dataclass(frozen=True)
class Lifetimes:
    """How long points of each source live once available (configuration)."""

    default: timedelta
    by_source: Mapping[PointsSource, timedelta]

    def of(self, source: PointsSource) -> timedelta:
        return self.by_source.get(source, self.default)

    @classmethod
    def parse(cls, default_days: int, overrides: str) -> Lifetimes:
        """`overrides` is "SOURCE=days,SOURCE=days", for example "PROMO_CODE=90,CAMPAIGN=60"."""
        by_source: dict[PointsSource, timedelta] = {}
        for item in filter(None, (part.strip() for part in overrides.split(","))):
            name, sep, days = item.partition("=")
            try:
                source = PointsSource(name.strip().upper())
                value = int(days)
            except ValueError:
                raise ValueError(f"lifetime override {item!r} is not SOURCE=days") from None
            if not sep or not 1 <= value <= MAX_LIFETIME_DAYS:
                raise ValueError(f"lifetime override {item!r} must be SOURCE=days with 1..{MAX_LIFETIME_DAYS} days")
            by_source[source] = timedelta(days=value)
        return cls(default=timedelta(days=default_days), by_source=by_source)


def validate_credit(request: CreditRequest, now: datetime) -> None:
    """Every reason a credit is refused, checked before anything is written."""
    validate_customer_id(request.customer_id)
    if request.points <= 0:
        raise InvalidArgument.field("points", "must be positive", "INVALID_POINTS_AMOUNT")
    if request.points > MAX_CREDIT:
        raise InvalidArgument.field("points", f"must be at most {MAX_CREDIT}", "INVALID_POINTS_AMOUNT")
    if request.source in NOT_CREDITABLE:
        raise InvalidArgument.field(
            "source", "REFUND_RETURN points come back through ReturnPoints, not as a credit", "SOURCE_NOT_CREDITABLE"
        )
    validate_reference(request.reference)
    validate_text("reason", request.reason)
    if len(request.operator_id) > MAX_OPERATOR:
        raise InvalidArgument.field("operator_id", f"must be at most {MAX_OPERATOR} characters", "INVALID_OPERATOR")
    if request.pending and request.source not in PENDING_SOURCES:
        raise InvalidArgument.field(
            "pending", f"only {', '.join(sorted(PENDING_SOURCES))} points can be pending", "PENDING_NOT_ALLOWED"
        )
    if request.source is PointsSource.MANUAL_ADJUSTMENT:
        if not request.reason.strip():
            raise InvalidArgument.field("reason", "is required for a manual adjustment", "REASON_REQUIRED")
        if not request.operator_id.strip():
            raise InvalidArgument.field("operator_id", "is required for a manual adjustment", "OPERATOR_REQUIRED")
    if request.expires_at is not None and request.expires_at <= now:
        raise InvalidArgument.field("expires_at", "must be in the future", "EXPIRY_IN_PAST")


def validate_reference(reference: str, *, required: bool = False) -> None:
    if required and not reference.strip():
        raise InvalidArgument.field("reference", "is required", "REFERENCE_REQUIRED")
    if len(reference) > MAX_REFERENCE:
        raise InvalidArgument.field("reference", f"must be at most {MAX_REFERENCE} characters", "INVALID_REFERENCE")


def validate_text(field: str, value: str) -> None:
    if len(value) > MAX_TEXT:
        raise InvalidArgument.field(field, f"must be at most {MAX_TEXT} characters", "TEXT_TOO_LONG")


def validate_points(field: str, points: int, *, zero_means_all: bool = False) -> None:
    if points < 0 or (points == 0 and not zero_means_all):
        raise InvalidArgument.field(field, "must be positive", "INVALID_POINTS_AMOUNT")
    if points > MAX_CREDIT:
        raise InvalidArgument.field(field, f"must be at most {MAX_CREDIT}", "INVALID_POINTS_AMOUNT")


def expiry_at_activation(explicit: datetime | None, available_at: datetime, lifetime: timedelta) -> datetime:
    """An explicit expiry wins (promo codes and campaigns set their own); else the source's lifetime,
    counted from when the points become available."""
    return explicit if explicit is not None else available_at + lifetime


def group_expiring(items: Iterable[tuple[datetime, int]], zone: tzinfo) -> list[tuple[str, datetime, int]]:
    """Points expiring, grouped by calendar day in the programme's zone: (day, earliest, points), soonest first."""
    days: dict[str, tuple[datetime, int]] = {}
    for expires_at, points in items:
        if points <= 0:
            continue
        day = expires_at.astimezone(zone).date().isoformat()
        earliest, total = days.get(day, (expires_at, 0))
        days[day] = (min(earliest, expires_at), total + points)
    return [(day, earliest, total) for day, (earliest, total) in sorted(days.items())]
