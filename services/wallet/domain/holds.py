"""Holds of money (two-phase movement), top-ups and refunds: states and the rules between them."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from shared.errors import FailedPrecondition, InvalidArgument

MAX_HOLD_TTL = timedelta(days=30)
MAX_REFERENCE = 128


class PaymentMethod(StrEnum):
    WALLET = "WALLET"
    CARD = "CARD"


class HoldStatus(StrEnum):
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    CAPTURED = "CAPTURED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


class TopUpStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    DECLINED = "DECLINED"


class RefundDestination(StrEnum):
    ORIGINAL_METHOD = "ORIGINAL_METHOD"
    WALLET = "WALLET"


class RefundStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


def validate_ttl(ttl: timedelta | None, default: timedelta) -> timedelta:
    if ttl is None:
        return default
    if not timedelta(seconds=1) <= ttl <= MAX_HOLD_TTL:
        raise InvalidArgument.field("ttl", f"must be between 1 second and {MAX_HOLD_TTL.days} days", "INVALID_TTL")
    return ttl


def validate_reference(reference: str, field: str = "reference") -> str:
    if len(reference) > MAX_REFERENCE:
        raise InvalidArgument.field(field, f"must be at most {MAX_REFERENCE} characters", "INVALID_REFERENCE")
    return reference


def check_capture(status: HoldStatus, expire_at: datetime, now: datetime, amount: int, held: int) -> None:
    """A hold is captured once, while active and not expired, for at most its amount."""
    if status is HoldStatus.CAPTURED:
        raise FailedPrecondition("HOLD_ALREADY_CAPTURED", "the hold was captured already")
    if status is HoldStatus.EXPIRED or (status is HoldStatus.ACTIVE and now >= expire_at):
        raise FailedPrecondition("HOLD_EXPIRED", "the hold expired before it was captured")
    if status is HoldStatus.RELEASED:
        raise FailedPrecondition("HOLD_ALREADY_RELEASED", "the hold was released")
    if status is HoldStatus.PENDING:
        raise FailedPrecondition("HOLD_PENDING", "the card authorisation is not settled yet; retry HoldMoney")
    if amount > held:
        raise FailedPrecondition(
            "CAPTURE_EXCEEDS_HOLD",
            f"cannot capture {amount} of a hold of {held}",
            metadata={"hold_amount_minor": str(held), "amount_minor": str(amount)},
        )


def check_refund(status: HoldStatus, captured: int, refunded: int, amount: int) -> None:
    if status is not HoldStatus.CAPTURED:
        raise FailedPrecondition("HOLD_NOT_CAPTURED", "only captured money can be refunded")
    if amount > captured - refunded:
        raise FailedPrecondition(
            "REFUND_EXCEEDS_CAPTURED",
            f"{captured - refunded} kopecks are left to refund",
            metadata={"refundable_minor": str(captured - refunded), "amount_minor": str(amount)},
        )
