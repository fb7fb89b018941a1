"""End-of-day balances from the statement: the basis of interest and of statistics."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import datetime


def end_of_day_balances(
    opening_minor: int, changes: Sequence[tuple[datetime, int]], day_ends: Sequence[datetime]
) -> list[int]:
    """The balance at each of `day_ends` (ascending), given the balance before the first day and
    the balance after each change, in booking order.

    A day's balance is the one after the last change of the longest run of changes, from the
    first in booking order, booked before the day's end; so a change booked with an earlier time
    than one before it counts from the day that one counts from. Each change finds its first day
    by bisection, and the days before it take the balance before it: the work grows with the
    changes, not with changes x days (the posting runs this for every wallet)."""
    balances: list[int] = []
    balance = opening_minor
    for at, after in changes:
        first_day = bisect_right(day_ends, at)  # day_ends[first_day:] are after `at`
        if first_day > len(balances):  # not before a day already given an earlier change's balance
            balances.extend([balance] * (first_day - len(balances)))
        balance = after
    balances.extend([balance] * (len(day_ends) - len(balances)))
    return balances
