"""Points lots: every credit is a lot with its own amount, remaining part and expiry."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from shared.errors import InvalidArgument
from shared.validation import validate_customer_id

MAX_CREDIT = 100_000_000  # points in one credit; far above any real reward, guards typos
MAX_REFERENCE = 128


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


# Purchase and cashback points wait for the order to be received; the rest are spendable at once.
PENDING_SOURCES = frozenset({PointsSource.PURCHASE, PointsSource.CASHBACK})


class LotStatus(StrEnum):
    PENDING = "PENDING"
    AVAILABLE = "AVAILABLE"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class CreditRequest:
    customer_id: str
    points: int
    source: PointsSource
    reference: str
    pending: bool
    expires_at: datetime | None
    reason: str
    operator_id: str


@dataclass(frozen=True)
class LotView:
    """What the balance rules need of a lot."""

    remaining: int
    status: LotStatus
    expires_at: datetime


@dataclass(frozen=True)
class Balance:
    available: int
    pending: int
    held: int
    expiring: tuple[tuple[datetime, int], ...]


def validate_credit(request: CreditRequest, now: datetime) -> None:
    """Every reason a credit is refused, checked before anything is written."""
    validate_customer_id(request.customer_id)
    if request.points <= 0:
        raise InvalidArgument.field("points", "must be positive", "INVALID_POINTS")
    if request.points > MAX_CREDIT:
        raise InvalidArgument.field("points", f"must be at most {MAX_CREDIT}", "INVALID_POINTS")
    if len(request.reference) > MAX_REFERENCE:
        raise InvalidArgument.field("reference", f"must be at most {MAX_REFERENCE} characters", "INVALID_REFERENCE")
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


def expiry_of(request: CreditRequest, credited_at: datetime, default_lifetime: timedelta) -> datetime:
    """An explicit expiry wins (promo codes and campaigns set their own); else the default."""
    return request.expires_at if request.expires_at is not None else credited_at + default_lifetime


def balance_of(lots: Iterable[LotView], now: datetime, expiring_within: timedelta) -> Balance:
    """Available, pending and expiring-soon points of live lots at `now` (no holds yet)."""
    available = pending = 0
    expiring: dict[datetime, int] = {}
    for lot in lots:
        if lot.remaining <= 0 or lot.expires_at <= now:
            continue
        if lot.status is LotStatus.PENDING:
            pending += lot.remaining
        elif lot.status is LotStatus.AVAILABLE:
            available += lot.remaining
            if lot.expires_at <= now + expiring_within:
                expiring[lot.expires_at] = expiring.get(lot.expires_at, 0) + lot.remaining
    return Balance(available=available, pending=pending, held=0, expiring=tuple(sorted(expiring.items())))
