"""Wallet accounts."""

from __future__ import annotations

from enum import StrEnum

from shared.errors import InvalidArgument

SUPPORTED_CURRENCIES = frozenset({"RUB"})
MAX_CUSTOMER_ID = 64


class WalletStatus(StrEnum):
    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


def validate_customer_id(customer_id: str) -> None:
    if not customer_id.strip():
        raise InvalidArgument.field("customer_id", "is required", "CUSTOMER_ID_REQUIRED")
    if len(customer_id) > MAX_CUSTOMER_ID:
        raise InvalidArgument.field(
            "customer_id", f"must be at most {MAX_CUSTOMER_ID} characters", "INVALID_CUSTOMER_ID"
        )


def currency_of(requested: str) -> str:
    """The wallet's currency: RUB unless asked otherwise, and only supported currencies."""
    currency = requested.strip().upper() or "RUB"
    if currency not in SUPPORTED_CURRENCIES:
        raise InvalidArgument.field(
            "currency_code", f"{currency!r} is not supported; wallets hold RUB", "UNSUPPORTED_CURRENCY"
        )
    return currency
