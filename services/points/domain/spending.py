"""How points are taken from lots and given back: pure rules, no storage.

- A hold takes the free part of available lots nearest expiry first (then oldest, then by id, so
  the order is total and deterministic).
- A capture spends the hold's allocations in the same order; the rest goes back.
- A return gives back captured points latest expiry first, so the customer keeps the longest-lived
  points; a lot that expired meanwhile writes the points off again at once (decided by the caller).
- A reversal takes back earned points from the reference's pending lots first, then from the
  reference's own free points, then from the customer's other free points nearest expiry first;
  what is left is the shortfall, recorded and never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.errors import FailedPrecondition


class HoldStatus(StrEnum):
    ACTIVE = "ACTIVE"
    CAPTURED = "CAPTURED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class Spendable:
    """The free part (remaining minus held) of an available, unexpired lot."""

    lot_id: str
    free: int
    expires_at: datetime
    created_at: datetime


@dataclass(frozen=True)
class Take:
    lot_id: str
    points: int


def spending_order(lots: Sequence[Spendable]) -> list[Spendable]:
    return sorted(lots, key=lambda lot: (lot.expires_at, lot.created_at, lot.lot_id))


def allocate(lots: Sequence[Spendable], points: int) -> list[Take]:
    """Take `points` from the lots nearest expiry first; INSUFFICIENT_POINTS if they do not cover it."""
    available = sum(lot.free for lot in lots if lot.free > 0)
    if points > available:
        raise FailedPrecondition(
            "INSUFFICIENT_POINTS",
            f"{points} points requested, {available} available",
            metadata={"requested": str(points), "available": str(available)},
        )
    return _take(spending_order(lots), points)


def _take(ordered: Sequence[Spendable], points: int) -> list[Take]:
    takes: list[Take] = []
    left = points
    for lot in ordered:
        if left == 0:
            break
        part = min(lot.free, left)
        if part > 0:
            takes.append(Take(lot.lot_id, part))
            left -= part
    return takes


def split_capture(allocations: Sequence[int], capture: int) -> list[int]:
    """Captured points per allocation (in hold order): the first allocations are spent first."""
    if not 0 <= capture <= sum(allocations):
        raise ValueError("capture outside the hold")
    captured: list[int] = []
    left = capture
    for points in allocations:
        part = min(points, left)
        captured.append(part)
        left -= part
    return captured


@dataclass(frozen=True)
class Returnable:
    """What of one allocation can still be given back."""

    lot_id: str
    captured: int
    returned: int
    expires_at: datetime
    position: int


def split_return(allocations: Sequence[Returnable], points: int) -> list[Take]:
    """Points to give back per lot, latest expiry first."""
    left = points
    takes: list[Take] = []
    for allocation in sorted(allocations, key=lambda a: (a.expires_at, a.position), reverse=True):
        part = min(allocation.captured - allocation.returned, left)
        if part > 0:
            takes.append(Take(allocation.lot_id, part))
            left -= part
    if left:
        raise ValueError("return exceeds what was captured")
    return takes


@dataclass(frozen=True)
class ReversalPlan:
    from_pending: list[Take]
    from_available: list[Take]
    unrecovered: int

    @property
    def points_from_pending(self) -> int:
        return sum(take.points for take in self.from_pending)

    @property
    def points_from_available(self) -> int:
        return sum(take.points for take in self.from_available)


def plan_reversal(
    points: int, pending: Sequence[Take], own: Sequence[Spendable], others: Sequence[Spendable]
) -> ReversalPlan:
    """Take back `points`: pending lots of the reference, its own free points, then other free points."""
    from_pending: list[Take] = []
    left = points
    for lot in pending:
        part = min(lot.points, left)
        if part > 0:
            from_pending.append(Take(lot.lot_id, part))
            left -= part
    from_available = _take(spending_order(own), left)
    left -= sum(take.points for take in from_available)
    more = _take(spending_order(others), left)
    left -= sum(take.points for take in more)
    return ReversalPlan(from_pending=from_pending, from_available=from_available + more, unrecovered=left)


def attribute(points: int, outstanding: Sequence[Take]) -> list[Take]:
    """Which earned lots a reversal withdraws (in the given order), up to each lot's outstanding earning."""
    takes: list[Take] = []
    left = points
    for lot in outstanding:
        part = min(lot.points, left)
        if part > 0:
            takes.append(Take(lot.lot_id, part))
            left -= part
    if left:
        raise ValueError("reversal exceeds what the reference earned")
    return takes
