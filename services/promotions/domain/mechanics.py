"""Wallet mechanics as Promotions hands them out: interest (APR, balance basis) or cashback tiers.

The default for a customer in no experiment is interest at 12 % a year on the average daily
balance (configurable, and changed over time by SetDefaultMechanic). Experiments assign a
variant's mechanic to their participants; `service_layer.mechanics.Mechanics.mechanics_for` looks
it up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.errors import InvalidArgument

MAX_APR_BPS = 1800  # "up to 18 % a year"
MAX_CASHBACK_BPS = 10_000
MAX_TIERS = 20


class InterestBasis(StrEnum):
    AVERAGE_DAILY = "AVERAGE_DAILY"
    MINIMUM_DAILY = "MINIMUM_DAILY"


@dataclass(frozen=True)
class Interest:
    apr_bps: int
    basis: InterestBasis


@dataclass(frozen=True)
class Cashback:
    tiers: tuple[tuple[int, int], ...]  # (min_balance_minor, rate_bps), ascending by balance
    monthly_cap_points: int  # 0: no cap


@dataclass(frozen=True)
class Mechanic:
    code: str
    name: str
    kind: Interest | Cashback


def validate_interest(apr_bps: int) -> None:
    if not 0 <= apr_bps <= MAX_APR_BPS:
        raise InvalidArgument.field(
            "mechanic.interest.apr_bps",
            f"must be between 0 and {MAX_APR_BPS} basis points (18 % a year), got {apr_bps}",
            "MECHANIC_APR_OUT_OF_RANGE",
        )


def validate_cashback(tiers: tuple[tuple[int, int], ...], cap: int) -> None:
    def bad(message: str) -> InvalidArgument:
        return InvalidArgument.field("mechanic.cashback", message, "INVALID_CASHBACK_TIERS")

    if not tiers:
        raise bad("needs at least one tier")
    if len(tiers) > MAX_TIERS:
        raise bad(f"at most {MAX_TIERS} tiers")
    balances = [minimum for minimum, _ in tiers]
    if len(set(balances)) != len(balances):
        raise bad("two tiers have the same min_balance_minor")
    if any(minimum < 0 for minimum in balances):
        raise bad("min_balance_minor must not be negative")
    if any(not 0 <= rate <= MAX_CASHBACK_BPS for _, rate in tiers):
        raise bad(f"rate_bps must be between 0 and {MAX_CASHBACK_BPS}")
    if cap < 0:
        raise bad("monthly_cap_points must not be negative")


def default_interest(apr_bps: int, basis: InterestBasis) -> Mechanic:
    """The configured default; code and name as the Wallet service names its own fallback."""
    validate_interest(apr_bps)
    words = "average" if basis is InterestBasis.AVERAGE_DAILY else "minimum"
    whole, rest = divmod(apr_bps, 100)
    shown = f"{whole}" if rest == 0 else f"{whole}.{rest:02d}"
    return Mechanic(
        code=f"interest-{apr_bps}-{words}",
        name=f"Interest {shown} % a year on the {words} daily balance",
        kind=Interest(apr_bps, basis),
    )
