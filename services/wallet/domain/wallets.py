"""Wallet accounts."""

from __future__ import annotations

from enum import StrEnum

from shared.errors import InvalidArgument

SUPPORTED_CURRENCIES = frozenset({"RUB"})


class WalletStatus(StrEnum):
    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


MAX_AMOUNT_MINOR = 10**13  # 100 billion roubles: far above any real amount, guards typos


def currency_of(requested: str, field: str = "currency_code") -> str:
    """The wallet's currency: RUB unless asked otherwise, and only supported currencies."""
    currency = requested.strip().upper() or "RUB"
    if currency not in SUPPORTED_CURRENCIES:
        raise InvalidArgument.field(field, f"{currency!r} is not supported; wallets hold RUB", "UNSUPPORTED_CURRENCY")
    return currency


def positive_amount(amount_minor: int, currency_code: str, field: str = "amount") -> int:
    """A money amount a request moves: positive kopecks, in RUB."""
    currency_of(currency_code, f"{field}.currency_code")
    if amount_minor <= 0:
        raise InvalidArgument.field(f"{field}.amount_minor", "must be positive", "INVALID_AMOUNT")
    if amount_minor > MAX_AMOUNT_MINOR:
        raise InvalidArgument.field(f"{field}.amount_minor", f"must be at most {MAX_AMOUNT_MINOR}", "INVALID_AMOUNT")
    return amount_minor
