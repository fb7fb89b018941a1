"""Random sequences of every Points operation against a simple reference model.

Hypothesis drives credit / activate / cancel / hold / capture / release / return / reverse /
expire / release-expired / clock moves / replays against the real gRPC service, and keeps a plain
in-memory model of the customer's lots and holds. After every step it checks: the service's
balances equal the model's; none is negative; available + held = remaining of live lots; the
history sums to the balance. Where the rules leave the service a choice to verify (which lots a
hold takes), the model computes the answer itself and compares.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from loyalty.points.v1 import points_pb2 as pb

from shared.clock import ManualClock
from tests.clients import PointsClient, refused, rid
from tests.harness import RunningService

LIFETIME = timedelta(days=365)
HOLD_TTL = timedelta(minutes=15)
REFERENCES = ("order-1", "order-2", "order-3")
START = datetime(2026, 3, 1, tzinfo=UTC)


@dataclass
class MLot:
    lot_id: str
    amount: int
    remaining: int
    created: datetime
    reference: str
    pending: bool
    expires: datetime | None  # None: pending with the default lifetime
    scheduled: datetime | None = None
    held: int = 0
    dead: bool = False  # cancelled, or expired to nothing

    def key(self) -> tuple[datetime, datetime, str]:
        assert self.expires is not None
        return (self.expires, self.created, self.lot_id)


@dataclass
class MHold:
    hold_id: str
    points: int
    expire_time: datetime
    allocations: list[tuple[str, int]]
    status: str = "ACTIVE"
    captured: list[int] = field(default_factory=list)
    returned: dict[str, int] = field(default_factory=dict)


class Model:
    def __init__(self) -> None:
        self.lots: dict[str, MLot] = {}
        self.holds: dict[str, MHold] = {}
        self.earned: dict[str, int] = {}
        # What each reference was told: "CANCEL" (final) or the activation time; later pending
        # credits of the reference follow it.
        self.decisions: dict[str, datetime | str] = {}

    def live(self, now: datetime) -> list[MLot]:
        return [lot for lot in self.lots.values() if not lot.dead and not lot.pending]

    def spendable(self, now: datetime) -> list[MLot]:
        lots = [
            lot for lot in self.live(now) if lot.expires is not None and lot.expires > now and lot.remaining > lot.held
        ]
        return sorted(lots, key=MLot.key)

    def balance(self) -> tuple[int, int, int]:
        available = sum(lot.remaining - lot.held for lot in self.lots.values() if not lot.dead and not lot.pending)
        pending = sum(lot.remaining for lot in self.lots.values() if not lot.dead and lot.pending)
        held = sum(lot.held for lot in self.lots.values())
        return available, pending, held

    def write_off_if_expired(self, lot: MLot, points: int, now: datetime) -> int:
        if lot.expires is not None and lot.expires <= now and points > 0:
            lot.remaining -= points
            lot.dead = lot.remaining == 0
            return points
        return 0

    def unhold(self, pairs: list[tuple[str, int]], now: datetime) -> None:
        for lot_id, points in pairs:
            lot = self.lots[lot_id]
            lot.held -= points
            self.write_off_if_expired(lot, points, now)

    def activate(self, lot: MLot, at: datetime, now: datetime) -> None:
        lot.pending = False
        lot.scheduled = None
        lot.expires = lot.expires or at + LIFETIME
        self.write_off_if_expired(lot, lot.remaining, now)

    def settle(self, now: datetime) -> None:
        for hold in self.holds.values():
            if hold.status == "ACTIVE" and hold.expire_time <= now:
                hold.status = "EXPIRED"
                self.unhold(hold.allocations, now)
        for lot in sorted(self.lots.values(), key=lambda lot: (lot.created, lot.lot_id)):
            if lot.pending and not lot.dead and lot.scheduled is not None and lot.scheduled <= now:
                self.activate(lot, lot.scheduled, now)
        for lot in self.live(now):
            if lot.expires is not None and lot.expires <= now:
                self.write_off_if_expired(lot, lot.remaining - lot.held, now)


class PointsMachine(RuleBasedStateMachine):
    api: PointsClient
    clock: ManualClock

    def __init__(self) -> None:
        super().__init__()
        self.customer = f"c-{uuid.uuid4().hex[:12]}"
        # Each run starts at the same instant (runs are apart by customer), so a replayed run
        # draws and decides exactly as it did the first time.
        self.clock.set(START)
        self.model = Model()
        self.replays: list[tuple[Callable[[], Any], Any]] = []

    @property
    def now(self) -> datetime:
        return self.clock.now()

    def remember(self, call: Callable[[], Any]) -> Any:
        """Make a mutating call and keep it, so a later step can replay it."""
        answer = call()
        self.replays.append((call, answer))
        return answer

    # --- credits and pending points -----------------------------------------------------

    @initialize(
        lots=st.lists(
            st.tuples(st.integers(min_value=1, max_value=300), st.integers(min_value=1, max_value=40)),
            min_size=1,
            max_size=4,
        ),
        pending=st.integers(min_value=0, max_value=200),
    )
    def some_points(self, lots: list[tuple[int, int]], pending: int) -> None:
        """Every run starts with a few lots of different lives, and maybe pending purchase points."""
        for points, days in lots:
            self.credit(points, "CAMPAIGN", days, "promo")
        if pending:
            self.credit(pending, "PURCHASE", None, REFERENCES[0])

    @rule(
        points=st.integers(min_value=1, max_value=300),
        source=st.sampled_from(["CAMPAIGN", "PROMO_CODE", "WALLET_INTEREST", "PURCHASE", "CASHBACK"]),
        expires_in_days=st.one_of(st.none(), st.integers(min_value=1, max_value=60)),
        reference=st.sampled_from(REFERENCES),
    )
    def credit(self, points: int, source: str, expires_in_days: int | None, reference: str) -> None:
        pending = source in ("PURCHASE", "CASHBACK")
        expires = self.now + timedelta(days=expires_in_days) if expires_in_days else None
        request_id = rid()
        lot = self.remember(
            lambda: self.api.credit(
                self.customer,
                points,
                source,
                reference=reference,
                pending=pending,
                expires_at=expires,
                request_id=request_id,
            )
        )
        self.model.settle(self.now)
        self.model.lots[lot.lot_id] = MLot(
            lot_id=lot.lot_id,
            amount=points,
            remaining=points,
            created=lot.create_time.ToDatetime(tzinfo=self.now.tzinfo),
            reference=reference,
            pending=pending,
            expires=expires if pending else (expires or self.now + LIFETIME),
        )
        self.model.earned[reference] = self.model.earned.get(reference, 0) + points
        decision = self.model.decisions.get(reference) if pending else None
        mlot = self.model.lots[lot.lot_id]
        if decision == "CANCEL":  # the reference was cancelled before: the lot is born cancelled
            self.model.earned[reference] -= points
            mlot.remaining, mlot.dead = 0, True
        elif isinstance(decision, datetime):  # activated before: the lot follows the decision
            if decision <= self.now:
                self.model.activate(mlot, decision, self.now)
            else:
                mlot.scheduled = decision
        assert (lot.status == pb.LOT_STATUS_CANCELLED) == (decision == "CANCEL")

    @rule(reference=st.sampled_from(REFERENCES), later_hours=st.sampled_from([0, 0, 1, 48]))
    def activate(self, reference: str, later_hours: int) -> None:
        self.model.settle(self.now)
        pending = [
            lot for lot in self.model.lots.values() if lot.pending and not lot.dead and lot.reference == reference
        ]
        at = self.now + timedelta(hours=later_hours)
        request_id = rid()
        call = lambda: self.api.activate(self.customer, reference, at, request_id=request_id)  # noqa: E731
        answer = self.remember(call)
        if self.model.decisions.get(reference) != "CANCEL":
            self.model.decisions[reference] = at
        total = sum(lot.remaining for lot in pending)
        assert (answer.points_activated, answer.points_scheduled) == ((total, 0) if later_hours == 0 else (0, total))
        for lot in pending:
            if later_hours == 0:
                self.model.activate(lot, at, self.now)
            else:
                lot.scheduled = at

    @rule(reference=st.sampled_from(REFERENCES))
    def cancel(self, reference: str) -> None:
        self.model.settle(self.now)
        pending = [
            lot for lot in self.model.lots.values() if lot.pending and not lot.dead and lot.reference == reference
        ]
        request_id = rid()
        answer = self.remember(lambda: self.api.cancel(self.customer, reference, request_id=request_id))
        assert answer.points_cancelled == sum(lot.remaining for lot in pending)
        self.model.decisions[reference] = "CANCEL"
        for lot in pending:
            self.model.earned[reference] -= lot.remaining
            lot.remaining = 0
            lot.dead = True

    # --- holds ----------------------------------------------------------------------------

    @rule(points=st.integers(min_value=1, max_value=200), ttl_minutes=st.sampled_from([None, 5, 120, 60 * 24 * 3]))
    def hold(self, points: int, ttl_minutes: int | None) -> None:
        self.model.settle(self.now)
        ttl = timedelta(minutes=ttl_minutes) if ttl_minutes else None
        request_id = rid()
        call = lambda: self.api.hold(self.customer, points, ttl=ttl, request_id=request_id)  # noqa: E731
        spendable = self.model.spendable(self.now)
        if points > sum(lot.remaining - lot.held for lot in spendable):
            assert refused(call).reason == "INSUFFICIENT_POINTS"
            return
        hold = self.remember(call)
        expected: list[tuple[str, int]] = []
        left = points
        for lot in spendable:
            part = min(left, lot.remaining - lot.held)
            if part:
                expected.append((lot.lot_id, part))
                left -= part
        assert [(a.lot_id, a.points) for a in hold.allocations] == expected
        for lot_id, part in expected:
            self.model.lots[lot_id].held += part
        self.model.holds[hold.hold_id] = MHold(hold.hold_id, points, self.now + (ttl or HOLD_TTL), expected)

    def _a_hold(self, data: st.DataObject, active: bool) -> MHold | None:
        """Mostly an active hold (the interesting case), else any, for the refusals."""
        holds = list(self.model.holds.values())
        live = [hold for hold in holds if hold.status == "ACTIVE"]
        return data.draw(st.sampled_from(live if active and live else holds)) if holds else None

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), whole=st.booleans(), active=st.booleans())
    def capture(self, data: st.DataObject, whole: bool, active: bool) -> None:
        self.model.settle(self.now)
        hold = self._a_hold(data, active)
        assert hold is not None
        points = 0 if whole else data.draw(st.integers(min_value=1, max_value=hold.points + 5))
        request_id = rid()
        call = lambda: self.api.capture(hold.hold_id, points, request_id=request_id)  # noqa: E731
        expected_refusal = {
            "CAPTURED": "ALREADY_CAPTURED",
            "RELEASED": "HOLD_RELEASED",
            "EXPIRED": "HOLD_EXPIRED",
        }.get(hold.status) or ("CAPTURE_EXCEEDS_HOLD" if points > hold.points else None)
        if expected_refusal:
            assert refused(call).reason == expected_refusal
            return
        answer = self.remember(call)
        capture = points or hold.points
        assert (answer.captured, answer.status) == (capture, pb.HOLD_STATUS_CAPTURED)
        hold.status = "CAPTURED"
        left = capture
        rest = []
        for lot_id, part in hold.allocations:
            taken = min(part, left)
            left -= taken
            hold.captured.append(taken)
            lot = self.model.lots[lot_id]
            lot.held -= taken
            lot.remaining -= taken
            rest.append((lot_id, part - taken))
        self.model.unhold(rest, self.now)

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), active=st.booleans())
    def release(self, data: st.DataObject, active: bool) -> None:
        self.model.settle(self.now)
        hold = self._a_hold(data, active)
        assert hold is not None
        request_id = rid()
        call = lambda: self.api.release(hold.hold_id, request_id=request_id)  # noqa: E731
        if hold.status == "CAPTURED":
            assert refused(call).reason == "ALREADY_CAPTURED"
            return
        answer = self.remember(call)
        if hold.status == "ACTIVE":
            hold.status = "RELEASED"
            self.model.unhold(hold.allocations, self.now)
        assert answer.hold.status == getattr(pb, f"HOLD_STATUS_{hold.status}")

    @precondition(lambda self: any(h.status == "CAPTURED" for h in self.model.holds.values()))
    @rule(data=st.data(), everything=st.booleans())
    def give_back(self, data: st.DataObject, everything: bool) -> None:
        self.model.settle(self.now)
        hold = data.draw(st.sampled_from([h for h in self.model.holds.values() if h.status == "CAPTURED"]))
        left = sum(hold.captured) - sum(hold.returned.values())
        points = 0 if everything else data.draw(st.integers(min_value=1, max_value=left + 3))
        request_id = rid()
        call = lambda: self.api.give_back(hold.hold_id, points, request_id=request_id)  # noqa: E731
        if points > left or left == 0:
            assert refused(call).reason == "RETURN_EXCEEDS_CAPTURED"
            return
        answer = self.remember(call)
        amount = points or left
        assert answer.points_returned == amount
        positions = sorted(
            range(len(hold.allocations)),
            key=lambda i: (self.model.lots[hold.allocations[i][0]].expires, i),
            reverse=True,
        )
        remaining = amount
        takes = []
        for i in positions:
            lot_id = hold.allocations[i][0]
            part = min(hold.captured[i] - hold.returned.get(lot_id, 0), remaining)
            if part <= 0:
                continue
            remaining -= part
            takes.append((lot_id, part))
            hold.returned[lot_id] = hold.returned.get(lot_id, 0) + part
            lot = self.model.lots[lot_id]
            lot.remaining += part
            lot.dead = False
            self.model.write_off_if_expired(lot, part, self.now)
        assert [(a.lot_id, a.points) for a in answer.allocations] == takes  # latest expiry first

    # --- reversals ------------------------------------------------------------------------

    @rule(reference=st.sampled_from(REFERENCES), points=st.integers(min_value=0, max_value=400))
    def reverse(self, reference: str, points: int) -> None:
        self.model.settle(self.now)
        outstanding = self.model.earned.get(reference)
        request_id = rid()
        call = lambda: self.api.reverse(self.customer, reference, points, request_id=request_id)  # noqa: E731
        if outstanding is None or (outstanding == 0 and points == 0):
            assert refused(call).reason == "NOTHING_TO_REVERSE"
            return
        if points > outstanding:
            assert refused(call).reason == "REVERSAL_EXCEEDS_EARNED"
            return
        answer = self.remember(call)
        amount = points or outstanding
        self.model.earned[reference] = outstanding - amount
        left = amount
        from_pending = 0
        for lot in sorted(self.model.lots.values(), key=lambda lot: (lot.created, lot.lot_id)):
            if lot.pending and not lot.dead and lot.reference == reference and left:
                part = min(lot.remaining, left)
                lot.remaining -= part
                lot.dead = lot.remaining == 0
                from_pending += part
                left -= part
        spendable = self.model.spendable(self.now)
        own = [lot for lot in spendable if lot.reference == reference]
        others = [lot for lot in spendable if lot.reference != reference]
        from_available = 0
        for lot in own + others:
            part = min(lot.remaining - lot.held, left)
            lot.remaining -= part
            from_available += part
            left -= part
        assert (answer.points_from_pending, answer.points_from_available, answer.points_unrecovered) == (
            from_pending,
            from_available,
            left,
        )

    # --- time and jobs --------------------------------------------------------------------

    @rule(minutes=st.sampled_from([1, 10, 60, 60 * 24, 60 * 24 * 20]))
    def time_passes(self, minutes: int) -> None:
        self.clock.advance(timedelta(minutes=minutes))

    @rule()
    def expiry_job(self) -> None:
        self.api.expire()

    @rule()
    def release_expired_holds_job(self) -> None:
        self.api.release_expired()

    @rule()
    def activation_job(self) -> None:
        self.api.activate_due()

    @precondition(lambda self: self.replays)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        call, answer = data.draw(st.sampled_from(self.replays))
        before = self.api.history(self.customer)
        assert call() == answer
        assert self.api.history(self.customer) == before

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def ledger_agrees_with_the_model(self) -> None:
        self.model.settle(self.now)
        balance = self.api.balance(self.customer)
        assert (balance.available, balance.pending, balance.held) == self.model.balance()
        assert min(balance.available, balance.pending, balance.held) >= 0
        lots = self.api.lots(self.customer)
        live = [lot for lot in lots if lot.status == pb.LOT_STATUS_AVAILABLE]
        assert balance.available + balance.held == sum(lot.remaining for lot in live)
        assert all(0 <= lot.held <= lot.remaining <= lot.amount for lot in lots)
        lines = self.api.history(self.customer)
        sums = tuple(
            sum(getattr(line, f) for line in lines) for f in ("available_delta", "pending_delta", "held_delta")
        )
        assert sums == (balance.available, balance.pending, balance.held)


# Many examples of many RPCs each, with no timing asserted: on a loaded CI machine the run has taken
# more than the suite's default 120 s (a timeout mid-example then surfaced as hypothesis' flaky
# replay), so it gets the 300 s the kill chains have. Fifty examples; twenty-five in CI (CI set),
# where on a slow machine fifty on PostgreSQL ran for over five minutes at the suite's end.
@pytest.mark.timeout(300)
def test_random_sequences_keep_the_points_ledger_consistent(points: RunningService, clock: ManualClock) -> None:
    PointsMachine.api = PointsClient(points.channel())
    PointsMachine.clock = clock
    run_state_machine_as_test(
        PointsMachine,
        settings=settings(
            max_examples=25 if os.environ.get("CI") else 50,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
