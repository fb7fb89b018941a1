"""One customer's points ledger inside one transaction.

`Book.open` locks the customer's account row first, so every change of a customer's points is
serialised (on PostgreSQL by the row lock, on SQLite by the database lock), and reads what it
decides on only after the lock. Every change goes through `_line`, which writes the history line
and moves the account's balances by the same deltas: the history always sums to the balances, and
the database refuses a negative one.

What time makes due (holds past their expiry, lots past theirs, scheduled activations) is settled
by `settle`, on every touch of the customer and by the operator jobs, so a balance never shows
points that are no longer there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from sqlmodel import Session

from services.points.adapters.repository import PointsRepository
from services.points.adapters.tables import Account, HistoryLine, Hold, HoldAllocation, Lot
from services.points.domain import history
from services.points.domain.history import EntryType
from services.points.domain.lots import (
    CreditRequest,
    Lifetimes,
    LotStatus,
    PointsSource,
    expiry_at_activation,
)
from services.points.domain.spending import (
    HoldStatus,
    Returnable,
    ReversalPlan,
    Spendable,
    Take,
    allocate,
    attribute,
    plan_reversal,
    split_capture,
    split_return,
)
from shared.errors import FailedPrecondition
from shared.ids import new_id


@dataclass
class Settlement:
    """What `settle` did."""

    holds_released: int = 0
    points_released: int = 0
    lots_expired: int = 0
    points_expired: int = 0
    lots_activated: int = 0
    points_activated: int = 0

    def add(self, other: Settlement) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class HoldView:
    """A hold with its allocations in hold order, each with its lot's expiry (the answer's)."""

    hold: Hold
    allocations: list[tuple[HoldAllocation, datetime]]


@dataclass
class Returned:
    points: int
    expired: int
    takes: list[tuple[Take, datetime]] = field(default_factory=list)


def spendable(lot: Lot) -> Spendable:
    assert lot.expires_at is not None
    return Spendable(lot.lot_id, lot.remaining - lot.held, lot.expires_at, lot.created_at)


class Book:
    def __init__(
        self, repo: PointsRepository, account: Account, now: datetime, lifetimes: Lifetimes, zone: tzinfo
    ) -> None:
        self.repo = repo
        self.account = account
        self.customer_id = account.customer_id
        self.now = now
        self._lifetimes = lifetimes
        self._zone = zone
        # Each hold's allocations with their lots, as loaded or made in this transaction: the
        # rows are the session's own, so they stay current as the book changes them.
        self._parts: dict[str, list[tuple[HoldAllocation, Lot]]] = {}

    @classmethod
    def open(cls, session: Session, customer_id: str, now: datetime, lifetimes: Lifetimes, zone: tzinfo) -> Book:
        repo = PointsRepository(session)
        return cls(repo, repo.lock_account(customer_id, now), now, lifetimes, zone)

    def settle_if_due(self) -> Settlement:
        """`settle`, after one statement that says whether anything is due at all."""
        return self.settle() if self.repo.has_due(self.customer_id, self.now) else Settlement()

    def parts(self, hold: Hold) -> list[tuple[HoldAllocation, Lot]]:
        """The hold's allocations in hold order, each with its lot (loaded once per book)."""
        parts = self._parts.get(hold.hold_id)
        if parts is None:
            parts = self._parts[hold.hold_id] = self.repo.allocations_with_lots(hold.hold_id)
        return parts

    def remember(self, hold: Hold, parts: list[tuple[HoldAllocation, Lot]]) -> None:
        self._parts[hold.hold_id] = parts

    def view(self, hold: Hold) -> HoldView:
        pairs = []
        for allocation, lot in self.parts(hold):
            assert lot.expires_at is not None
            pairs.append((allocation, lot.expires_at))
        return HoldView(hold, pairs)

    # --- history and balances -------------------------------------------------------------

    def _line(
        self,
        kind: EntryType,
        description: str,
        *,
        available: int = 0,
        pending: int = 0,
        held: int = 0,
        lot: Lot | None = None,
        hold: Hold | None = None,
        source: str = "",
        reference: str = "",
        unrecovered: int = 0,
        operator_id: str = "",
    ) -> None:
        self.account.available += available
        self.account.pending += pending
        self.account.held += held
        self.account.updated_at = self.now
        self.repo.add(self.account)
        self.repo.add(
            HistoryLine(
                customer_id=self.customer_id,
                type=kind.value,
                available_delta=available,
                pending_delta=pending,
                held_delta=held,
                unrecovered_points=unrecovered,
                lot_id=lot.lot_id if lot is not None else "",
                hold_id=hold.hold_id if hold is not None else "",
                source=source or (lot.source if lot is not None else ""),
                reference=reference or (lot.reference if lot is not None else ""),
                description=description[:500],
                operator_id=operator_id,
                created_at=self.now,
            )
        )

    def _expired(self, lot: Lot) -> bool:
        return lot.expires_at is not None and lot.expires_at <= self.now

    def _write_off(self, lot: Lot, points: int, *, hold: Hold | None = None, on_return: bool = False) -> int:
        """Write off `points` of an expired lot's free part."""
        if points <= 0:
            return 0
        lot.remaining -= points
        if lot.remaining == 0:
            lot.status = LotStatus.EXPIRED.value
        self.repo.add(lot)
        self._line(
            EntryType.EXPIRED,
            history.expired(points, lot.created_at, self._zone, on_return=on_return),
            available=-points,
            lot=lot,
            hold=hold,
        )
        return points

    # --- credits and pending points -------------------------------------------------------

    def credit(self, request: CreditRequest) -> Lot:
        pending = request.pending
        lot = Lot(
            lot_id=new_id(),
            customer_id=self.customer_id,
            amount=request.points,
            remaining=request.points,
            source=request.source.value,
            reference=request.reference,
            status=(LotStatus.PENDING if pending else LotStatus.AVAILABLE).value,
            available_at=None if pending else self.now,
            expires_at=(
                request.expires_at
                if pending
                else expiry_at_activation(request.expires_at, self.now, self._lifetimes.of(request.source))
            ),
            created_at=self.now,
            reason=request.reason,
            operator_id=request.operator_id,
        )
        self.repo.add(lot)
        self._line(
            EntryType.CREDITED_PENDING if pending else EntryType.CREDITED,
            history.credited(request.points, request.source.value, request.reference, pending)
            + (f": {request.reason}" if request.reason else ""),
            available=0 if pending else request.points,
            pending=request.points if pending else 0,
            lot=lot,
            operator_id=request.operator_id,
        )
        return lot

    def activate(self, lot: Lot, at: datetime) -> bool:
        """Make a pending lot available at `at`: now if due, else schedule it. True if activated now."""
        if lot.status != LotStatus.PENDING.value:
            return False
        lot.available_at = at
        self.repo.add(lot)
        if at > self.now:
            return False
        lot.status = LotStatus.AVAILABLE.value
        lot.expires_at = expiry_at_activation(lot.expires_at, at, self._lifetimes.of(PointsSource(lot.source)))
        points = lot.remaining
        self._line(
            EntryType.ACTIVATED, history.activated(points, lot.reference), pending=-points, available=points, lot=lot
        )
        if self._expired(lot):
            self._write_off(lot, points)
        return True

    def cancel_pending(self, lot: Lot, reason: str) -> int:
        if lot.status != LotStatus.PENDING.value:
            return 0
        points = lot.remaining
        lot.withdrawn += points
        lot.remaining = 0
        lot.status = LotStatus.CANCELLED.value
        self.repo.add(lot)
        self._line(
            EntryType.PENDING_CANCELLED,
            history.pending_cancelled(points, lot.reference, reason),
            pending=-points,
            lot=lot,
        )
        return points

    # --- holds ----------------------------------------------------------------------------

    def hold(self, points: int, reference: str, ttl: timedelta, lots: list[Lot] | None = None) -> Hold:
        """Hold `points` of the free parts of spendable lots; `lots` are those to take from
        (`PointsRepository.lots_to_spend`), loaded here when not given."""
        if lots is None:
            lots = self.repo.lots_to_spend(self.customer_id, self.now, points)[0]
        by_id = {lot.lot_id: lot for lot in lots}
        takes = allocate([spendable(lot) for lot in lots], points)
        hold = Hold(
            hold_id=new_id(),
            customer_id=self.customer_id,
            reference=reference,
            points=points,
            status=HoldStatus.ACTIVE.value,
            expire_time=self.now + ttl,
            created_at=self.now,
            updated_at=self.now,
        )
        self.repo.add(hold)
        self.repo.session.flush()
        parts = []
        for position, take in enumerate(takes):
            lot = by_id[take.lot_id]
            lot.held += take.points
            self.repo.add(lot)
            allocation = HoldAllocation(hold_id=hold.hold_id, lot_id=lot.lot_id, position=position, points=take.points)
            self.repo.add(allocation)
            parts.append((allocation, lot))
        self.remember(hold, parts)
        self._line(EntryType.HELD, history.held(points, reference), available=-points, held=points, hold=hold)
        return hold

    def _unhold(self, hold: Hold, pairs: list[tuple[Lot, int]], why: str) -> int:
        """Give held points back to their lots; those of expired lots are written off. Returns written off."""
        total = sum(points for _, points in pairs)
        if total == 0:
            return 0
        for lot, points in pairs:
            lot.held -= points
            self.repo.add(lot)
        self._line(
            EntryType.HOLD_RELEASED,
            history.hold_released(total, hold.reference, why),
            held=-total,
            available=total,
            hold=hold,
        )
        return sum(self._write_off(lot, points, hold=hold) for lot, points in pairs if self._expired(lot))

    def capture(self, hold: Hold, points: int) -> int:
        """Spend `points` of an active hold; the rest goes back. Returns points written off on the way."""
        parts = self.parts(hold)
        captured = split_capture([a.points for a, _ in parts], points)
        rest: list[tuple[Lot, int]] = []
        for (allocation, lot), part in zip(parts, captured, strict=True):
            allocation.captured = part
            self.repo.add(allocation)
            lot.held -= part
            lot.remaining -= part
            if lot.remaining == 0:
                lot.status = LotStatus.SPENT.value
            self.repo.add(lot)
            if allocation.points > part:
                rest.append((lot, allocation.points - part))
        hold.captured = points
        hold.status = HoldStatus.CAPTURED.value
        hold.updated_at = self.now
        self.repo.add(hold)
        self._line(EntryType.SPENT, history.spent(points, hold.reference), held=-points, hold=hold)
        return self._unhold(hold, rest, "not captured")

    def release(self, hold: Hold, status: HoldStatus, why: str) -> int:
        """Release an active hold in full. Returns points written off because their lot had expired."""
        parts = self.parts(hold)
        hold.status = status.value
        hold.updated_at = self.now
        self.repo.add(hold)
        return self._unhold(hold, [(lot, a.points) for a, lot in parts], why)

    def return_points(self, hold: Hold, points: int, reference: str, reason: str) -> Returned:
        parts = self.parts(hold)
        allocations = {a.lot_id: a for a, _ in parts}
        lots = {lot.lot_id: lot for _, lot in parts}
        returnable = []
        for a in allocations.values():
            expires_at = lots[a.lot_id].expires_at
            assert expires_at is not None
            returnable.append(Returnable(a.lot_id, a.captured, a.returned, expires_at, a.position))
        result = Returned(points=points, expired=0)
        for take in split_return(returnable, points):
            lot, allocation = lots[take.lot_id], allocations[take.lot_id]
            allocation.returned += take.points
            self.repo.add(allocation)
            lot.remaining += take.points
            lot.status = LotStatus.AVAILABLE.value
            self.repo.add(lot)
            self._line(
                EntryType.RETURNED,
                history.returned(take.points, reference or hold.reference, reason),
                available=take.points,
                lot=lot,
                hold=hold,
                source=PointsSource.REFUND_RETURN.value,
                reference=reference or hold.reference,
            )
            assert lot.expires_at is not None
            result.takes.append((take, lot.expires_at))
            if self._expired(lot):
                result.expired += self._write_off(lot, take.points, hold=hold, on_return=True)
        hold.returned += points
        hold.updated_at = self.now
        self.repo.add(hold)
        return result

    # --- reversals ------------------------------------------------------------------------

    def _take_back(self, lot: Lot, points: int, reference: str, reason: str, *, pending: bool) -> None:
        """Take reversed points out of a lot: a pending lot emptied is cancelled, an available one spent."""
        lot.remaining -= points
        if lot.remaining == 0:
            lot.status = (LotStatus.CANCELLED if pending else LotStatus.SPENT).value
        self.repo.add(lot)
        self._line(
            EntryType.REVERSED,
            history.reversed_(points, reference, reason, pending=pending),
            pending=-points if pending else 0,
            available=0 if pending else -points,
            lot=lot,
            reference=reference,
        )

    def reverse(self, earned: list[Lot], points: int, reason: str, reference: str) -> ReversalPlan:
        pending = [lot for lot in earned if lot.status == LotStatus.PENDING.value]
        earned_ids = {lot.lot_id for lot in earned}
        free = self.repo.spendable_lots(self.customer_id, self.now)
        own = [spendable(lot) for lot in free if lot.lot_id in earned_ids]
        others = [spendable(lot) for lot in free if lot.lot_id not in earned_ids]
        plan = plan_reversal(points, [Take(lot.lot_id, lot.remaining) for lot in pending], own, others)
        lots = {lot.lot_id: lot for lot in [*earned, *free]}
        for take in plan.from_pending:
            self._take_back(lots[take.lot_id], take.points, reference, reason, pending=True)
        for take in plan.from_available:
            self._take_back(lots[take.lot_id], take.points, reference, reason, pending=False)
        if plan.unrecovered:
            self._line(
                EntryType.REVERSAL_SHORTFALL,
                history.shortfall(plan.unrecovered, reference),
                unrecovered=plan.unrecovered,
                reference=reference,
            )
        # The earning withdrawn: pending lots first (what was taken from them), then the others.
        pending_ids = {lot.lot_id for lot in pending}
        ordered = pending + [lot for lot in earned if lot.lot_id not in pending_ids]
        for take in attribute(points, [Take(lot.lot_id, lot.amount - lot.withdrawn) for lot in ordered]):
            lots[take.lot_id].withdrawn += take.points
            self.repo.add(lots[take.lot_id])
        return plan

    # --- what time made due ---------------------------------------------------------------

    def expire(self, lot: Lot) -> int:
        """Write off the free part of a lot past its expiry (the held part waits for its hold)."""
        if lot.status != LotStatus.AVAILABLE.value or not self._expired(lot):
            return 0
        return self._write_off(lot, lot.remaining - lot.held)

    def settle(self) -> Settlement:
        done = Settlement()
        for hold in self.repo.expired_holds(self.customer_id, self.now):
            done.holds_released += 1
            done.points_released += hold.points
            done.points_expired += self.release(hold, HoldStatus.EXPIRED, "the hold expired")
        for lot in self.repo.due_pending_lots(self.customer_id, self.now):
            assert lot.available_at is not None
            points = lot.remaining
            if self.activate(lot, lot.available_at):
                done.lots_activated += 1
                done.points_activated += points
        for lot in self.repo.expired_lots(self.customer_id, self.now):
            written_off = self.expire(lot)
            if written_off:
                done.lots_expired += 1
                done.points_expired += written_off
        return done


def earned_outstanding(lots: list[Lot]) -> int:
    return sum(lot.amount - lot.withdrawn for lot in lots)


def require_active(hold: Hold, now: datetime) -> None:
    """Why a hold cannot be captured, if it cannot."""
    if hold.status == HoldStatus.CAPTURED.value:
        raise FailedPrecondition("ALREADY_CAPTURED", f"hold {hold.hold_id} was already captured")
    if hold.status == HoldStatus.RELEASED.value:
        raise FailedPrecondition("HOLD_RELEASED", f"hold {hold.hold_id} was released")
    if hold.status == HoldStatus.EXPIRED.value or hold.expire_time <= now:
        raise FailedPrecondition("HOLD_EXPIRED", f"hold {hold.hold_id} expired at {hold.expire_time.isoformat()}")
