"""Monthly interest paid as points, and the yield projection: one function for both.

Monthly points = balance basis of the month (in roubles) x APR / 12. With the basis in kopecks
and the rate in basis points, the exact amount in micro-points (1,000,000 = 1 point) is
`basis_minor x apr_bps / 12`, since 100 kopecks x 10,000 bps = 1,000,000. The average daily
basis is kept as the exact fraction `sum of end-of-day balances / days`, so the only rounding is
down to a whole micro-point; whole points are posted and the remaining micro-points carried into
the next month. Nothing compounds: points are not money and never join the basis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from services.wallet.domain.mechanics import CashbackMechanic, InterestBasis, InterestMechanic, Mechanic
from shared.calendar import Month

MICRO_POINTS = 1_000_000


class MonthlyInterest(NamedTuple):
    """The interest of one month of one wallet. A named tuple, immutable and made in a third of a
    frozen dataclass's time: the posting makes one per wallet."""

    basis_minor: int  # the basis shown: the minimum, or the average rounded down to a kopeck
    carry_in_micro: int
    accrued_micro: int  # this month's interest alone, exact to the micro-point
    points: int  # whole points posted
    carry_out_micro: int  # fraction left for the next month, 0 <= carry < 1,000,000


def monthly_interest(
    daily_balances_minor: Sequence[int], mechanic: InterestMechanic, carry_in_micro: int
) -> MonthlyInterest:
    """Interest of a month from its end-of-day balances (one per day of the month, in kopecks)."""
    if not daily_balances_minor:
        raise ValueError("a month has at least one day")
    if min(daily_balances_minor) < 0:
        raise ValueError("a wallet balance is never negative")
    if not 0 <= carry_in_micro < MICRO_POINTS:
        raise ValueError("a carried fraction is less than one point")
    if mechanic.basis is InterestBasis.AVERAGE_DAILY:
        numerator, days = sum(daily_balances_minor), len(daily_balances_minor)
    else:
        numerator, days = min(daily_balances_minor), 1
    accrued = numerator * mechanic.apr_bps // (12 * days)
    total = carry_in_micro + accrued
    return MonthlyInterest(
        basis_minor=numerator // days,
        carry_in_micro=carry_in_micro,
        accrued_micro=accrued,
        points=total // MICRO_POINTS,
        carry_out_micro=total % MICRO_POINTS,
    )


@dataclass(frozen=True)
class YieldMonth:
    number: int
    month: Month
    points: int
    carry_micro: int


def cashback_points(balance_minor: int, monthly_spend_minor: int, mechanic: CashbackMechanic) -> int:
    """Cashback of a month of wallet-paid purchases at the balance's tier, rounded down, capped.

    `rate_bps` of the money paid: points = spend (roubles) x rate / 10,000 = spend_minor x rate
    micro-points."""
    points = monthly_spend_minor * mechanic.rate_bps_for(balance_minor) // MICRO_POINTS
    return min(points, mechanic.monthly_cap_points) if mechanic.monthly_cap_points else points


def project_yield(
    amount_minor: int, first: Month, months: int, mechanic: Mechanic, monthly_spend_minor: int = 0
) -> list[YieldMonth]:
    """Points `amount_minor` kept for `months` whole months earns, month by month: for interest,
    exactly what `monthly_interest` would post for a balance that never moves."""
    projection: list[YieldMonth] = []
    month, carry = first, 0
    for number in range(1, months + 1):
        if isinstance(mechanic, InterestMechanic):
            result = monthly_interest([amount_minor] * len(month.days()), mechanic, carry)
            points, carry = result.points, result.carry_out_micro
        else:
            points = cashback_points(amount_minor, monthly_spend_minor, mechanic)
        projection.append(YieldMonth(number=number, month=month, points=points, carry_micro=carry))
        month = month.next()
    return projection
