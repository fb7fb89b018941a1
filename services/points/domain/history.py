"""Why a line of history changed a balance, and how each line reads to a person."""

from __future__ import annotations

from datetime import datetime, tzinfo
from enum import StrEnum


class EntryType(StrEnum):
    CREDITED = "CREDITED"
    CREDITED_PENDING = "CREDITED_PENDING"
    ACTIVATED = "ACTIVATED"
    PENDING_CANCELLED = "PENDING_CANCELLED"
    HELD = "HELD"
    SPENT = "SPENT"
    HOLD_RELEASED = "HOLD_RELEASED"
    RETURNED = "RETURNED"
    REVERSED = "REVERSED"
    REVERSAL_SHORTFALL = "REVERSAL_SHORTFALL"
    EXPIRED = "EXPIRED"


def _ref(reference: str) -> str:
    return f" ({reference})" if reference else ""


def _points(points: int) -> str:
    return f"{points} point" if points == 1 else f"{points} points"


def credited(points: int, source: str, reference: str, pending: bool) -> str:
    state = "pending until the order is received" if pending else "available"
    return f"Credited {_points(points)} for {source.lower().replace('_', ' ')}{_ref(reference)}, {state}"


def activated(points: int, reference: str) -> str:
    return f"{_points(points).capitalize()} became available{_ref(reference)}"


def pending_cancelled(points: int, reference: str, reason: str) -> str:
    return f"Pending {_points(points)} cancelled{_ref(reference)}" + (f": {reason}" if reason else "")


def held(points: int, reference: str) -> str:
    return f"{_points(points).capitalize()} held for checkout{_ref(reference)}"


def spent(points: int, reference: str) -> str:
    return f"{_points(points).capitalize()} spent{_ref(reference)}"


def hold_released(points: int, reference: str, why: str) -> str:
    return f"{_points(points).capitalize()} released from hold{_ref(reference)}: {why}"


def returned(points: int, reference: str, reason: str) -> str:
    return f"{_points(points).capitalize()} returned{_ref(reference)}" + (f": {reason}" if reason else "")


def reversed_(points: int, reference: str, reason: str, pending: bool) -> str:
    where = "pending" if pending else "available"
    text = f"{_points(points).capitalize()} taken back from {where} points{_ref(reference)}"
    return text + (f": {reason}" if reason else "")


def shortfall(points: int, reference: str) -> str:
    return f"{_points(points).capitalize()} earned{_ref(reference)} could not be taken back: already spent"


def expired(points: int, created_at: datetime, zone: tzinfo, *, on_return: bool = False) -> str:
    day = created_at.astimezone(zone).date().isoformat()
    tail = ", returned after the lot's expiry" if on_return else ""
    return f"Expired: lot of {day}, {_points(points)}{tail}"
