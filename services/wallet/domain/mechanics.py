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
        if not 0 < self.apr_bps <= MAX_APR_BPS:
            raise InvalidArgument.field("apr_bps", f"must be between 1 and {MAX_APR_BPS}", "INVALID_APR")


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
