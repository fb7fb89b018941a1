"""Wallet mechanics: how money kept in the wallet earns points."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.errors import InvalidArgument

MAX_APR_BPS = 1800  # the product promises "up to 18 % a year"


class InterestBasis(StrEnum):
    AVERAGE_DAILY = "AVERAGE_DAILY"
    MINIMUM_DAILY = "MINIMUM_DAILY"


@dataclass(frozen=True)
class InterestMechanic:
    """Monthly points = balance basis of the month x APR / 12."""

    apr_bps: int
    basis: InterestBasis
    code: str
    name: str

    def __post_init__(self) -> None:
        if not 0 <= self.apr_bps <= MAX_APR_BPS:
            raise InvalidArgument.field(
                "mechanic.interest.apr_bps", f"must be between 0 and {MAX_APR_BPS}", "MECHANIC_APR_OUT_OF_RANGE"
            )


@dataclass(frozen=True)
class CashbackTier:
    min_balance_minor: int
    rate_bps: int


@dataclass(frozen=True)
class CashbackMechanic:
    """Points for purchases paid from the wallet, at the rate of the balance tier."""

    tiers: tuple[CashbackTier, ...]
    monthly_cap_points: int
    code: str
    name: str

    def __post_init__(self) -> None:
        if self.monthly_cap_points < 0 or any(t.min_balance_minor < 0 or t.rate_bps < 0 for t in self.tiers):
            raise InvalidArgument.field(
                "mechanic.cashback", "tiers and cap must not be negative", "INVALID_CASHBACK_MECHANIC"
            )

    def rate_bps_for(self, balance_minor: int) -> int:
        """The rate of the highest tier not above the balance; 0 below every tier."""
        eligible = [t for t in self.tiers if t.min_balance_minor <= balance_minor]
        return max(eligible, key=lambda t: t.min_balance_minor).rate_bps if eligible else 0


Mechanic = InterestMechanic | CashbackMechanic


def default_interest(apr_bps: int, basis: InterestBasis) -> InterestMechanic:
    """The mechanic of customers in no experiment (configured; 12 % on the average daily balance)."""
    basis_words = "average" if basis is InterestBasis.AVERAGE_DAILY else "minimum"
    percent = f"{apr_bps // 100}" if apr_bps % 100 == 0 else f"{apr_bps // 100}.{apr_bps % 100:02d}"
    return InterestMechanic(
        apr_bps=apr_bps,
        basis=basis,
        code=f"interest-{apr_bps}-{basis_words}",
        name=f"Interest {percent} % a year on the {basis_words} daily balance",
    )
