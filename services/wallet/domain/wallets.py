"""Wallet accounts."""

from __future__ import annotations

from enum import StrEnum

from shared.errors import InvalidArgument

SUPPORTED_CURRENCIES = frozenset({"RUB"})


class WalletStatus(StrEnum):
    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


def currency_of(requested: str) -> str:
    """The wallet's currency: RUB unless asked otherwise, and only supported currencies."""
    currency = requested.strip().upper() or "RUB"
    if currency not in SUPPORTED_CURRENCIES:
        raise InvalidArgument.field(
            "currency_code", f"{currency!r} is not supported; wallets hold RUB", "UNSUPPORTED_CURRENCY"
        )
    return currency
