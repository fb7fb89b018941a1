"""The Points service through its real gRPC server: every rule of the ledger, on SQLite or PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from loyalty.points.v1 import points_pb2 as pb
from sqlalchemy import event

from services.points.domain.spending import Spendable, allocate
from shared.clock import ManualClock
from tests.clients import PointsClient, refused, rid
from tests.harness import Harness, RunningService

DAY = timedelta(days=1)


@pytest.fixture
def api(points: RunningService) -> PointsClient:
    return PointsClient(points.channel())


def totals(api: PointsClient, customer: str) -> tuple[int, int, int]:
    lines = api.history(customer)
    return (
        sum(line.available_delta for line in lines),
        sum(line.pending_delta for line in lines),
        sum(line.held_delta for line in lines),
    )


def assert_consistent(api: PointsClient, customer: str) -> pb.GetBalanceResponse:
    """The invariants: history sums to the balance; available + held = remaining of live lots."""
    balance = api.balance(customer)
    assert totals(api, customer) == (balance.available, balance.pending, balance.held)
    lots = api.lots(customer)
    live = [lot for lot in lots if lot.status == pb.LOT_STATUS_AVAILABLE]
    assert balance.available + balance.held == sum(lot.remaining for lot in live)
    assert balance.pending == sum(lot.remaining for lot in lots if lot.status == pb.LOT_STATUS_PENDING)
    assert balance.held == sum(lot.held for lot in lots)
    assert min(balance.available, balance.pending, balance.held) >= 0
    return balance


# --- credits ------------------------------------------------------------------------------


def test_every_source_credits_a_lot_with_its_expiry(api: PointsClient, clock: ManualClock) -> None:
    now = clock.now()
    for source in ("PROMO_CODE", "CAMPAIGN", "PROFILE_ACTION", "SURVEY", "WALLET_INTEREST"):
        lot = api.credit("c-1", 10, source, reference=f"ref-{source}")
        assert lot.status == pb.LOT_STATUS_AVAILABLE and lot.remaining == 10
        assert lot.expires_at.ToDatetime(tzinfo=now.tzinfo) == now + 365 * DAY
    explicit = api.credit("c-1", 5, "PROMO_CODE", expires_at=now + 30 * DAY)
    assert explicit.expires_at.ToDatetime(tzinfo=now.tzinfo) == now + 30 * DAY
    assert assert_consistent(api, "c-1").available == 55


def test_per_source_lifetimes_come_from_configuration(harness: Harness, clock: ManualClock) -> None:
    service = harness.start("points", POINTS_EXPIRY_DAYS_BY_SOURCE="WALLET_INTEREST=180")
    api = PointsClient(service.channel())
    lot = api.credit("c-1", 10, "WALLET_INTEREST")
    assert lot.expires_at.ToDatetime(tzinfo=clock.now().tzinfo) == clock.now() + 180 * DAY


def test_a_manual_adjustment_needs_an_operator_and_a_reason_and_records_both(api: PointsClient) -> None:
    assert refused(lambda: api.credit("c-1", 10, "MANUAL_ADJUSTMENT", operator_id="op-7")).reason == "REASON_REQUIRED"
    assert refused(lambda: api.credit("c-1", 10, "MANUAL_ADJUSTMENT", reason="goodwill")).reason == "OPERATOR_REQUIRED"
    lot = api.credit("c-1", 10, "MANUAL_ADJUSTMENT", reason="goodwill for late delivery", operator_id="op-7")
    assert (lot.reason, lot.operator_id) == ("goodwill for late delivery", "op-7")
    [line] = api.history("c-1")
    assert line.operator_id == "op-7" and "goodwill for late delivery" in line.description


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"points": 0}, "INVALID_POINTS_AMOUNT"),
        ({"points": -3}, "INVALID_POINTS_AMOUNT"),
        ({"points": 10, "source": "REFUND_RETURN"}, "SOURCE_NOT_CREDITABLE"),
        ({"points": 10, "source": "SURVEY", "pending": True}, "PENDING_NOT_ALLOWED"),
        ({"points": 10, "source": "WALLET_INTEREST", "pending": True}, "PENDING_NOT_ALLOWED"),
        ({"points": 10, "reference": "x" * 129}, "INVALID_REFERENCE"),
    ],
)
def test_a_bad_credit_is_refused_with_its_reason_and_changes_nothing(
    api: PointsClient, kwargs: dict[str, object], reason: str
) -> None:
    points = kwargs.pop("points")
    assert refused(lambda: api.credit("c-1", points, **kwargs)).reason == reason  # type: ignore[arg-type]
    assert api.history("c-1") == [] and api.balance("c-1").available == 0


def test_a_credit_without_a_source_is_refused(api: PointsClient) -> None:
    request = pb.CreditPointsRequest(request_id=rid(), customer_id="c-1", points=5)
    assert refused(lambda: api.stub.CreditPoints(request)).reason == "SOURCE_REQUIRED"


def test_an_expiry_in_the_past_is_refused(api: PointsClient, clock: ManualClock) -> None:
    assert refused(lambda: api.credit("c-1", 5, expires_at=clock.now())).reason == "EXPIRY_IN_PAST"


def test_a_replayed_credit_returns_the_first_lot_and_credits_once(api: PointsClient) -> None:
    first = api.credit("c-1", 10, request_id="same")
    again = api.credit("c-1", 10, request_id="same")
    assert first == again
    assert refused(lambda: api.credit("c-1", 11, request_id="same")).reason == "IDEMPOTENCY_KEY_REUSED"
    assert assert_consistent(api, "c-1").available == 10


def test_a_batch_credits_items_independently_each_idempotent_by_its_own_key(api: PointsClient) -> None:
    def item(request_id: str, customer: str, points: int) -> pb.CreditPointsRequest:
        return pb.CreditPointsRequest(
            request_id=request_id, customer_id=customer, points=points, source=pb.POINTS_SOURCE_WALLET_INTEREST
        )

    api.credit("c-2", 7, "WALLET_INTEREST", request_id="interest:w2:2026-01")  # sent alone before
    batch = pb.BatchCreditPointsRequest(
        request_id=rid(),
        requests=[
            item("interest:w1:2026-01", "c-1", 100),
            item("interest:w2:2026-01", "c-2", 7),
            item("interest:w3:2026-01", "c-3", -1),
            item("interest:w1:2026-01", "c-1", 100),  # the same item twice in one batch
        ],
    )
    results = api.stub.BatchCreditPoints(batch, timeout=10).results
    assert [r.request_id for r in results] == [i.request_id for i in batch.requests]
    assert results[0].lot.amount == 100 and results[0].error_code == 0
    assert results[1].lot.amount == 7  # the lot credited earlier under the same key
    assert (results[2].error_code, results[2].error_reason) == (3, "INVALID_POINTS_AMOUNT")
    assert not results[2].HasField("lot")
    assert results[3].lot == results[0].lot
    assert api.balance("c-1").available == 100 and api.balance("c-2").available == 7
    assert api.balance("c-3").available == 0
    # A retried batch under a new id changes nothing either.
    again = api.stub.BatchCreditPoints(pb.BatchCreditPointsRequest(request_id=rid(), requests=batch.requests[:2]))
    assert [r.lot for r in again.results] == [results[0].lot, results[1].lot]
    assert api.balance("c-1").available == 100


def test_a_batch_must_hold_one_to_a_thousand_items(api: PointsClient) -> None:
    empty = pb.BatchCreditPointsRequest(request_id=rid())
    assert refused(lambda: api.stub.BatchCreditPoints(empty)).reason == "BATCH_EMPTY"
    item = pb.CreditPointsRequest(request_id="x", customer_id="c-1", points=1, source=pb.POINTS_SOURCE_CAMPAIGN)
    big = pb.BatchCreditPointsRequest(request_id=rid(), requests=[item] * 1001)
    assert refused(lambda: api.stub.BatchCreditPoints(big)).reason == "BATCH_TOO_LARGE"


# --- pending points -----------------------------------------------------------------------


def test_pending_points_are_not_spendable_until_activated(api: PointsClient, clock: ManualClock) -> None:
    api.credit("c-1", 100, "PURCHASE", reference="order-1", pending=True)
    lot = api.lots("c-1")[0]
    assert lot.status == pb.LOT_STATUS_PENDING and not lot.HasField("available_at") and not lot.HasField("expires_at")
    assert refused(lambda: api.hold("c-1", 1)).reason == "INSUFFICIENT_POINTS"
    response = api.activate("c-1", "order-1")
    assert (response.points_activated, response.points_scheduled) == (100, 0)
    lot = api.lots("c-1")[0]
    assert lot.status == pb.LOT_STATUS_AVAILABLE
    assert lot.expires_at.ToDatetime(tzinfo=clock.now().tzinfo) == clock.now() + 365 * DAY
    assert assert_consistent(api, "c-1").available == 100


def test_activation_can_be_scheduled_for_the_end_of_the_return_window(api: PointsClient, clock: ManualClock) -> None:
    api.credit("c-1", 60, "CASHBACK", reference="order-1", pending=True)
    at = clock.now() + 14 * DAY
    response = api.activate("c-1", "order-1", at)
    assert (response.points_activated, response.points_scheduled) == (0, 60)
    clock.advance(13 * DAY)
    assert api.activate_due().lots_activated == 0
    assert api.balance("c-1").pending == 60
    clock.advance(DAY)
    done = api.activate_due()
    assert (done.lots_activated, done.points_activated) == (1, 60)
    assert api.activate_due().lots_activated == 0  # idempotent
    lot = api.lots("c-1")[0]
    assert lot.available_at.ToDatetime(tzinfo=at.tzinfo) == at
    assert lot.expires_at.ToDatetime(tzinfo=at.tzinfo) == at + 365 * DAY  # counted from activation
    assert assert_consistent(api, "c-1").available == 60


def test_a_due_activation_shows_in_the_balance_even_before_the_job_runs(api: PointsClient, clock: ManualClock) -> None:
    api.credit("c-1", 60, "PURCHASE", reference="order-1", pending=True)
    api.activate("c-1", "order-1", clock.now() + DAY)
    clock.advance(2 * DAY)
    assert assert_consistent(api, "c-1").available == 60
    assert api.activate_due().lots_activated == 0


def test_each_mutation_settles_what_time_made_due_before_its_own_change(api: PointsClient, clock: ManualClock) -> None:
    """HoldPoints, CaptureHold and a pending CreditPoints read whether anything is due together
    with what they need: whatever the path, what is due is settled first, in the same call."""
    # A hold of points that only a due activation makes available: with no free lot at all, ...
    api.credit("c-1", 60, "PURCHASE", reference="order-1", pending=True)
    api.activate("c-1", "order-1", clock.now() + DAY)
    # ... and with free lots that do not cover it.
    api.credit("c-2", 10)
    api.credit("c-2", 40, "PURCHASE", reference="order-2", pending=True)
    api.activate("c-2", "order-2", clock.now() + DAY)
    # A capture while another hold of the customer has expired.
    api.credit("c-3", 100)
    short = api.hold("c-3", 30, ttl=timedelta(minutes=5))
    long = api.hold("c-3", 20, ttl=timedelta(days=7))
    # A pending credit for a reference activated before, while a lot has expired.
    api.credit("c-4", 10, expires_at=clock.now() + timedelta(hours=1))
    api.activate("c-4", "order-4")
    clock.advance(2 * DAY)
    assert api.hold("c-1", 50).points == 50
    assert api.hold("c-2", 45).points == 45
    assert api.capture(long.hold_id).status == pb.HOLD_STATUS_CAPTURED
    lot = api.credit("c-4", 30, "PURCHASE", reference="order-4", pending=True)
    assert lot.status == pb.LOT_STATUS_AVAILABLE
    kinds = {customer: [line.type for line in api.history(customer)] for customer in ("c-1", "c-2", "c-3", "c-4")}
    assert kinds["c-1"][:2] == [pb.HISTORY_ENTRY_TYPE_HELD, pb.HISTORY_ENTRY_TYPE_ACTIVATED]
    assert kinds["c-2"][:2] == [pb.HISTORY_ENTRY_TYPE_HELD, pb.HISTORY_ENTRY_TYPE_ACTIVATED]
    assert kinds["c-3"][:2] == [pb.HISTORY_ENTRY_TYPE_SPENT, pb.HISTORY_ENTRY_TYPE_HOLD_RELEASED]
    assert kinds["c-4"][:3] == [
        pb.HISTORY_ENTRY_TYPE_ACTIVATED,
        pb.HISTORY_ENTRY_TYPE_CREDITED_PENDING,
        pb.HISTORY_ENTRY_TYPE_EXPIRED,
    ]
    assert api.get_hold(short.hold_id).status == pb.HOLD_STATUS_EXPIRED
    assert [assert_consistent(api, c).available for c in ("c-1", "c-2", "c-3", "c-4")] == [10, 5, 80, 30]


def test_a_decision_on_a_reference_applies_to_its_pending_points_credited_later(
    api: PointsClient, clock: ManualClock
) -> None:
    """Another service's outbox may deliver an order's pending points after the order was
    delivered or cancelled: they follow what was decided."""
    answer = api.activate("c-1", "order-late", clock.now() + DAY)
    assert (answer.points_activated, answer.points_scheduled) == (0, 0)
    lot = api.credit("c-1", 70, "PURCHASE", reference="order-late", pending=True)
    assert lot.status == pb.LOT_STATUS_PENDING
    assert assert_consistent(api, "c-1").pending == 70
    clock.advance(2 * DAY)
    assert assert_consistent(api, "c-1").available == 70

    api.activate("c-1", "order-now")  # now: later credits are available at once
    api.credit("c-1", 5, "CASHBACK", reference="order-now", pending=True)
    assert assert_consistent(api, "c-1").available == 75

    assert api.cancel("c-1", "order-gone", "order cancelled").points_cancelled == 0
    lot = api.credit("c-1", 30, "PURCHASE", reference="order-gone", pending=True)
    assert lot.status == pb.LOT_STATUS_CANCELLED
    api.activate("c-1", "order-gone")  # a cancellation is final
    balance = assert_consistent(api, "c-1")
    assert (balance.available, balance.pending) == (75, 0)


def test_cancelled_pending_points_never_become_available(api: PointsClient) -> None:
    api.credit("c-1", 40, "PURCHASE", reference="order-1", pending=True)
    api.credit("c-1", 10, "CASHBACK", reference="order-1", pending=True)
    response = api.cancel("c-1", "order-1", "order cancelled")
    assert response.points_cancelled == 50
    assert {lot.status for lot in response.lots} == {pb.LOT_STATUS_CANCELLED}
    assert api.cancel("c-1", "order-1").points_cancelled == 0
    assert api.activate("c-1", "order-1").points_activated == 0
    balance = assert_consistent(api, "c-1")
    assert (balance.available, balance.pending) == (0, 0)
    assert "order cancelled" in api.history("c-1")[0].description


# --- holds --------------------------------------------------------------------------------


def test_a_hold_takes_lots_nearest_expiry_first(api: PointsClient, clock: ManualClock) -> None:
    late = api.credit("c-1", 100, expires_at=clock.now() + 300 * DAY)
    soon = api.credit("c-1", 30, expires_at=clock.now() + 10 * DAY)
    middle = api.credit("c-1", 50, expires_at=clock.now() + 100 * DAY)
    hold = api.hold("c-1", 60)
    assert [(a.lot_id, a.points) for a in hold.allocations] == [(soon.lot_id, 30), (middle.lot_id, 30)]
    assert hold.status == pb.HOLD_STATUS_ACTIVE
    balance = assert_consistent(api, "c-1")
    assert (balance.available, balance.held) == (120, 60)
    assert late.lot_id not in {a.lot_id for a in hold.allocations}


def test_a_hold_takes_what_the_spending_rule_takes_from_all_free_lots(api: PointsClient, clock: ManualClock) -> None:
    """A hold reads only the lots it may take from (those with less than its points free before
    them in spending order, each tie of expiry and creation time whole): what it takes is what
    the rule takes from every free lot, ties of expiry and creation time included (then by lot
    id), partly held lots included, and a refusal reports every free point."""
    soon = clock.now() + 10 * DAY
    for points in (5, 7, 3, 9, 4, 6):  # one instant, one expiry: a tie broken by lot id
        api.credit("c-1", points, expires_at=soon)
    api.credit("c-1", 8, expires_at=soon + DAY)
    clock.advance(timedelta(minutes=1))
    for points in (2, 11):  # same expiry, created later
        api.credit("c-1", points, expires_at=soon)
    api.credit("c-1", 50)  # the default lifetime: last
    for wanted in (4, 10, 17, 1, 30, 9, 12):
        free = [lot for lot in api.lots("c-1", pb.LOT_STATUS_AVAILABLE) if lot.remaining > lot.held]
        expected = allocate(
            [
                Spendable(
                    lot.lot_id, lot.remaining - lot.held, lot.expires_at.ToDatetime(), lot.create_time.ToDatetime()
                )
                for lot in free
            ],
            wanted,
        )
        hold = api.hold("c-1", wanted, reference=f"order-{wanted}")
        assert [(a.lot_id, a.points) for a in hold.allocations] == [(t.lot_id, t.points) for t in expected]
    available = assert_consistent(api, "c-1").available
    error = refused(lambda: api.hold("c-1", available + 1))
    assert error.reason == "INSUFFICIENT_POINTS" and error.metadata["available"] == str(available)


def test_a_hold_beyond_the_balance_is_refused_and_changes_nothing(api: PointsClient) -> None:
    api.credit("c-1", 50)
    error = refused(lambda: api.hold("c-1", 51))
    assert error.reason == "INSUFFICIENT_POINTS" and error.metadata["available"] == "50"
    assert assert_consistent(api, "c-1").available == 50
    assert refused(lambda: api.hold("c-1", 0)).reason == "INVALID_POINTS_AMOUNT"


def test_capture_in_part_spends_that_much_and_gives_the_rest_back(api: PointsClient) -> None:
    api.credit("c-1", 100)
    hold = api.hold("c-1", 80)
    captured = api.capture(hold.hold_id, 50)
    assert (captured.status, captured.captured) == (pb.HOLD_STATUS_CAPTURED, 50)
    balance = assert_consistent(api, "c-1")
    assert (balance.available, balance.held) == (50, 0)
    assert refused(lambda: api.capture(hold.hold_id)).reason == "ALREADY_CAPTURED"
    assert refused(lambda: api.release(hold.hold_id)).reason == "ALREADY_CAPTURED"


def test_capture_errors_each_have_their_reason(api: PointsClient, clock: ManualClock) -> None:
    api.credit("c-1", 100)
    assert refused(lambda: api.capture("no-such-hold")).reason == "HOLD_NOT_FOUND"
    hold = api.hold("c-1", 10)
    assert refused(lambda: api.capture(hold.hold_id, 11)).reason == "CAPTURE_EXCEEDS_HOLD"
    api.release(hold.hold_id)
    assert refused(lambda: api.capture(hold.hold_id)).reason == "HOLD_RELEASED"
    short = api.hold("c-1", 10, ttl=timedelta(minutes=5))
    clock.advance(timedelta(minutes=6))
    assert refused(lambda: api.capture(short.hold_id)).reason == "HOLD_EXPIRED"
    assert api.get_hold(short.hold_id).status == pb.HOLD_STATUS_EXPIRED
    assert assert_consistent(api, "c-1").available == 100


def test_release_gives_everything_back_and_is_idempotent(api: PointsClient) -> None:
    api.credit("c-1", 100)
    hold = api.hold("c-1", 70)
    response = api.release(hold.hold_id, "payment failed")
    assert response.hold.status == pb.HOLD_STATUS_RELEASED and response.points_expired == 0
    assert api.release(hold.hold_id).hold.status == pb.HOLD_STATUS_RELEASED  # as is
    assert assert_consistent(api, "c-1").available == 100
    assert "payment failed" in api.history("c-1")[0].description


def test_expired_holds_are_released_by_the_sweeper(api: PointsClient, clock: ManualClock) -> None:
    api.credit("c-1", 100)
    api.hold("c-1", 30)  # default TTL: 15 minutes
    clock.advance(timedelta(minutes=16))
    done = api.release_expired()
    assert (done.holds_released, done.points_released) == (1, 30)
    assert api.release_expired().holds_released == 0
    assert assert_consistent(api, "c-1").available == 100


def test_a_lot_that_expires_under_a_hold_is_written_off_when_the_hold_is_released(
    api: PointsClient, clock: ManualClock
) -> None:
    api.credit("c-1", 40, expires_at=clock.now() + timedelta(minutes=10))
    api.credit("c-1", 100, expires_at=clock.now() + 100 * DAY)
    hold = api.hold("c-1", 60, ttl=timedelta(hours=1))
    clock.advance(timedelta(minutes=20))
    assert api.expire().points_expired == 0  # the held part waits for its hold
    balance = assert_consistent(api, "c-1")
    assert (balance.available, balance.held) == (80, 60)
    response = api.release(hold.hold_id)
    assert response.points_expired == 40
    balance = assert_consistent(api, "c-1")
    assert (balance.available, balance.held) == (100, 0)
    kinds = [line.type for line in api.history("c-1")[:2]]
    assert kinds == [pb.HISTORY_ENTRY_TYPE_EXPIRED, pb.HISTORY_ENTRY_TYPE_HOLD_RELEASED]


# --- returns ------------------------------------------------------------------------------


def test_returned_points_go_back_to_their_lots_with_their_expiry(api: PointsClient, clock: ManualClock) -> None:
    soon = api.credit("c-1", 30, expires_at=clock.now() + 10 * DAY)
    late = api.credit("c-1", 100, expires_at=clock.now() + 200 * DAY)
    hold = api.hold("c-1", 80)
    api.capture(hold.hold_id)
    assert assert_consistent(api, "c-1").available == 50
    part = api.give_back(hold.hold_id, 20, reference="return-1", reason="1 unit returned")
    assert [(a.lot_id, a.points) for a in part.allocations] == [(late.lot_id, 20)]  # latest expiry first
    assert (part.points_returned, part.hold.returned) == (20, 20)
    rest = api.give_back(hold.hold_id)
    assert rest.points_returned == 60
    assert {a.lot_id: a.points for a in rest.allocations} == {late.lot_id: 30, soon.lot_id: 30}
    assert refused(lambda: api.give_back(hold.hold_id, 1)).reason == "RETURN_EXCEEDS_CAPTURED"
    lots = {lot.lot_id: lot for lot in api.lots("c-1")}
    assert lots[soon.lot_id].remaining == 30 and lots[soon.lot_id].expires_at == soon.expires_at
    assert lots[late.lot_id].remaining == 100
    assert assert_consistent(api, "c-1").available == 130
    returned = [line for line in api.history("c-1") if line.type == pb.HISTORY_ENTRY_TYPE_RETURNED]
    assert {line.source for line in returned} == {pb.POINTS_SOURCE_REFUND_RETURN}


def test_returned_points_whose_lot_expired_expire_again_at_once(api: PointsClient, clock: ManualClock) -> None:
    api.credit("c-1", 30, expires_at=clock.now() + 10 * DAY)
    hold = api.hold("c-1", 30)
    api.capture(hold.hold_id)
    clock.advance(11 * DAY)
    response = api.give_back(hold.hold_id)
    assert (response.points_returned, response.points_expired) == (30, 30)
    assert assert_consistent(api, "c-1").available == 0
    latest = api.history("c-1")[0]
    assert latest.type == pb.HISTORY_ENTRY_TYPE_EXPIRED and "returned after the lot's expiry" in latest.description


def test_return_errors(api: PointsClient) -> None:
    api.credit("c-1", 30)
    hold = api.hold("c-1", 10)
    assert refused(lambda: api.give_back(hold.hold_id)).reason == "HOLD_NOT_CAPTURED"
    assert refused(lambda: api.give_back("missing")).reason == "HOLD_NOT_FOUND"
    api.capture(hold.hold_id, 5)
    assert refused(lambda: api.give_back(hold.hold_id, 6)).reason == "RETURN_EXCEEDS_CAPTURED"


# --- reversals ----------------------------------------------------------------------------


def test_a_reversal_takes_pending_points_first(api: PointsClient) -> None:
    api.credit("c-1", 100, "PURCHASE", reference="order-1", pending=True)
    api.credit("c-1", 50)
    response = api.reverse("c-1", "order-1", 30, reason="return R-1")
    assert (response.points_from_pending, response.points_from_available, response.points_unrecovered) == (30, 0, 0)
    balance = assert_consistent(api, "c-1")
    assert (balance.available, balance.pending) == (50, 70)
    assert api.reverse("c-1", "order-1").points_from_pending == 70
    assert refused(lambda: api.reverse("c-1", "order-1")).reason == "NOTHING_TO_REVERSE"
    assert api.lots("c-1", pb.LOT_STATUS_CANCELLED)[0].remaining == 0


def test_a_reversal_of_spent_points_records_the_shortfall_and_never_goes_negative(api: PointsClient) -> None:
    api.credit("c-1", 100, "PURCHASE", reference="order-1", pending=True)
    api.activate("c-1", "order-1")
    hold = api.hold("c-1", 90, reference="order-2")
    api.capture(hold.hold_id)
    api.credit("c-1", 5, "SURVEY")
    response = api.reverse("c-1", "order-1", reason="order returned")
    assert (response.points_from_pending, response.points_from_available, response.points_unrecovered) == (0, 15, 85)
    balance = assert_consistent(api, "c-1")
    assert balance.available == 0
    shortfall = api.history("c-1")[0]
    assert shortfall.type == pb.HISTORY_ENTRY_TYPE_REVERSAL_SHORTFALL and shortfall.unrecovered_points == 85
    assert refused(lambda: api.reverse("c-1", "order-1", 1)).reason == "REVERSAL_EXCEEDS_EARNED"


def test_reversal_errors(api: PointsClient) -> None:
    assert refused(lambda: api.reverse("c-1", "order-404")).reason == "NOTHING_TO_REVERSE"
    api.credit("c-1", 10, "PURCHASE", reference="order-1", pending=True)
    assert refused(lambda: api.reverse("c-1", "order-1", 11)).reason == "REVERSAL_EXCEEDS_EARNED"
    assert refused(lambda: api.reverse("c-1", "")).reason == "REFERENCE_REQUIRED"


# --- expiry -------------------------------------------------------------------------------


def test_the_expiry_job_writes_off_what_remains_idempotently_in_batches(harness: Harness, clock: ManualClock) -> None:
    service = harness.start("points", POINTS_JOB_BATCH_SIZE="2")
    api = PointsClient(service.channel())
    for n in range(5):
        api.credit(f"c-{n}", 10 + n, expires_at=clock.now() + 10 * DAY)
        api.credit(f"c-{n}", 100, expires_at=clock.now() + 100 * DAY)
    spent = api.hold("c-0", 4)
    api.capture(spent.hold_id)
    clock.advance(11 * DAY)
    done = api.expire(request_id="expire-1")
    assert (done.lots_expired, done.points_expired) == (5, 6 + 11 + 12 + 13 + 14)
    assert api.expire(request_id="expire-1") == done  # a replay answers the same
    assert api.expire().lots_expired == 0  # a new run finds nothing
    for n in range(5):
        assert assert_consistent(api, f"c-{n}").available == 100
    expired = api.lots("c-1", pb.LOT_STATUS_EXPIRED)
    assert len(expired) == 1 and expired[0].remaining == 0


def test_the_expiry_job_split_between_workers_writes_off_each_lot_once(harness: Harness, clock: ManualClock) -> None:
    service = harness.start("points", POINTS_EXPIRY_CHUNK_SIZE="3", POINTS_EXPIRY_WORKERS="3")
    api = PointsClient(service.channel())
    customers = [f"split-{n}" for n in range(24)]
    for n, customer in enumerate(customers):
        for k in range(1 + n % 3):
            api.credit(customer, 10 + k, expires_at=clock.now() + DAY)
        api.credit(customer, 100, expires_at=clock.now() + 100 * DAY)
    api.hold("split-0", 5, ttl=timedelta(hours=1))  # an expired hold: this one is settled through the Book
    threads: set[str] = set()

    def record(conn: object, cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().startswith("UPDATE lots"):
            threads.add(threading.current_thread().name)

    engine = service.app.runtime.db.engine
    event.listen(engine, "before_cursor_execute", record)
    clock.advance(2 * DAY)
    try:
        done = api.expire()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    lots = [n % 3 + 1 for n in range(24)]
    assert (done.lots_expired, done.points_expired) == (sum(lots), sum(sum(10 + k for k in range(c)) for c in lots))
    assert len({name for name in threads if name.startswith("expiry")}) == 3  # every part had lots to write off
    assert api.expire().lots_expired == 0
    for customer in customers:
        assert assert_consistent(api, customer).available == 100
        written_off = [-h.available_delta for h in api.history(customer) if h.type == pb.HISTORY_ENTRY_TYPE_EXPIRED]
        assert sum(written_off) == sum(lot.amount for lot in api.lots(customer, pb.LOT_STATUS_EXPIRED))  # once each


def test_the_balance_never_shows_expired_points_even_before_the_job(api: PointsClient, clock: ManualClock) -> None:
    api.credit("c-1", 10, expires_at=clock.now() + DAY)
    clock.advance(2 * DAY)
    assert assert_consistent(api, "c-1").available == 0
    assert api.history("c-1")[0].type == pb.HISTORY_ENTRY_TYPE_EXPIRED


# --- views --------------------------------------------------------------------------------


def test_balance_lists_what_expires_soon_grouped_by_day(api: PointsClient, clock: ManualClock) -> None:
    api.credit("c-1", 10, expires_at=clock.now() + 5 * DAY)
    api.credit("c-1", 20, expires_at=clock.now() + 5 * DAY + timedelta(hours=1))
    api.credit("c-1", 40, expires_at=clock.now() + 20 * DAY)
    api.credit("c-1", 80, expires_at=clock.now() + 60 * DAY)
    balance = api.balance("c-1")
    assert [(e.points, e.date) for e in balance.expiring] == [(30, "2026-01-06"), (40, "2026-01-21")]
    assert [e.points for e in api.balance("c-1", 90).expiring] == [30, 40, 80]
    pages = api.stub.ListExpiringPoints(pb.ListExpiringPointsRequest(customer_id="c-1", within_days=90, page_size=2))
    assert [e.points for e in pages.expiring] == [30, 40] and pages.next_page_token
    rest = api.stub.ListExpiringPoints(
        pb.ListExpiringPointsRequest(customer_id="c-1", within_days=90, page_size=2, page_token=pages.next_page_token)
    )
    assert [e.points for e in rest.expiring] == [80] and not rest.next_page_token


def test_history_pages_newest_first_and_every_line_says_why(api: PointsClient, clock: ManualClock) -> None:
    for n in range(10):
        api.credit("c-1", n + 1, reference=f"promo-{n}")
        clock.advance(timedelta(minutes=1))
    lines = api.history("c-1")  # pages of 7
    assert [line.reference for line in lines] == [f"promo-{n}" for n in reversed(range(10))]
    assert all(line.description for line in lines)
    assert len({line.entry_id for line in lines}) == 10
    bad = refused(lambda: api.stub.ListHistory(pb.ListHistoryRequest(customer_id="c-1", page_token="garbage")))
    assert bad.reason == "INVALID_PAGE_TOKEN"
    lots_token = api.stub.ListLots(pb.ListLotsRequest(customer_id="c-1", page_size=1)).next_page_token
    wrong_list = refused(lambda: api.stub.ListHistory(pb.ListHistoryRequest(customer_id="c-1", page_token=lots_token)))
    assert wrong_list.reason == "INVALID_PAGE_TOKEN"


def test_lots_page_newest_first_and_filter_by_status(api: PointsClient, clock: ManualClock) -> None:
    ids = []
    for n in range(9):
        ids.append(api.credit("c-1", 1 + n).lot_id)
        clock.advance(timedelta(seconds=1))
    api.credit("c-1", 5, "PURCHASE", reference="order-1", pending=True)
    assert [lot.lot_id for lot in api.lots("c-1", pb.LOT_STATUS_AVAILABLE)] == list(reversed(ids))
    assert len(api.lots("c-1", pb.LOT_STATUS_PENDING)) == 1
    assert len(api.lots("c-1")) == 10


def test_an_unknown_customer_has_zero_balances(api: PointsClient) -> None:
    balance = api.balance("nobody")
    assert (balance.available, balance.pending, balance.held, list(balance.expiring)) == (0, 0, 0, [])
    assert refused(lambda: api.balance("")).reason == "CUSTOMER_ID_REQUIRED"


def test_statistics_per_customer_over_a_period(api: PointsClient, clock: ManualClock) -> None:
    start = clock.now()
    api.credit("c-1", 100, "WALLET_INTEREST")
    api.credit("c-1", 30, "CASHBACK", reference="order-1", pending=True)
    api.credit("c-1", 20, "PROMO_CODE", expires_at=start + DAY)
    api.credit("c-1", 10, "SURVEY")
    hold = api.hold("c-1", 50, reference="order-2")
    api.capture(hold.hold_id)
    api.give_back(hold.hold_id, 5)
    api.reverse("c-1", "order-1", 10)
    api.credit("c-2", 7, "CAMPAIGN")
    clock.advance(2 * DAY)
    api.expire()
    end = clock.now() + DAY
    request = pb.ListPointsStatisticsRequest(customer_ids=["c-1", "c-3"])
    request.start_time.FromDatetime(start)
    request.end_time.FromDatetime(end)
    rows = api.stub.ListPointsStatistics(request).statistics
    assert [row.customer_id for row in rows] == ["c-1", "c-3"]
    c1 = rows[0]
    credited = {t.source: t.points for t in c1.credited_by_source}
    assert credited == {
        pb.POINTS_SOURCE_WALLET_INTEREST: 100,
        pb.POINTS_SOURCE_CASHBACK: 30,
        pb.POINTS_SOURCE_PROMO_CODE: 20,
        pb.POINTS_SOURCE_SURVEY: 10,
    }
    assert (c1.points_spent, c1.points_reversed, c1.activity_credits) == (45, 10, 30)
    assert c1.points_expired == 0  # the promo lot was spent first (nearest expiry)
    assert rows[1] == pb.PointsStatistics(customer_id="c-3")
    everyone = pb.ListPointsStatisticsRequest(page_size=1)
    everyone.start_time.FromDatetime(start)
    everyone.end_time.FromDatetime(end)
    first = api.stub.ListPointsStatistics(everyone)
    assert [r.customer_id for r in first.statistics] == ["c-1"] and first.next_page_token
    everyone.page_token = first.next_page_token
    second = api.stub.ListPointsStatistics(everyone)
    assert [r.customer_id for r in second.statistics] == ["c-2"] and not second.next_page_token
    too_many = pb.ListPointsStatisticsRequest(customer_ids=[f"c-{n}" for n in range(1001)])
    too_many.start_time.FromDatetime(start)
    too_many.end_time.FromDatetime(end)
    assert refused(lambda: api.stub.ListPointsStatistics(too_many)).reason == "TOO_MANY_CUSTOMERS"
