"""End-of-day balances from the statement: the basis of interest and of statistics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime


def end_of_day_balances(
    opening_minor: int, changes: Sequence[tuple[datetime, int]], day_ends: Sequence[datetime]
) -> list[int]:
    """The balance at each of `day_ends` (ascending), given the balance before the first day and
    the balance after each change, in booking order."""
    balances: list[int] = []
    balance, index = opening_minor, 0
    for end in day_ends:
        while index < len(changes) and changes[index][0] < end:
            balance = changes[index][1]
            index += 1
        balances.append(balance)
    return balances
