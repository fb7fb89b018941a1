"""Faults injected in the peers themselves, through their RPC failpoints (shared/failpoints.py),
on one platform of four in-process services (docs/reliability.md):

- the outbox flows into Points (Wallet's interest posting as BatchCreditPoints, Promotions'
  profile rewards as CreditPoints) with Points stopped, refusing, slow past the caller's deadline
  before or after it commits, or its reply lost: each credit arrives exactly once;
- every call of the order saga with the peer slow past the deadline, or the call cut without an
  answer, before or after the peer commits: the order ends PAID, charged once, nothing held;
- a lost reply (the peer committed, the caller heard DEADLINE_EXCEEDED or UNAVAILABLE) of every
  mutating RPC the platform's callers retry, retried with the same request id: one effect.

After each, every outbox message is delivered (none DEAD) and the reconciliation is clean."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from loyalty.checkout.v1 import checkout_pb2 as pb
from loyalty.points.v1 import points_pb2
from loyalty.promotions.v1 import promotions_pb2

from shared import failpoints
from shared.clock import ManualClock
from tests.clients import rid
from tests.harness import Databases, Harness
from tests.integration.checkout_support import WALLET, Balances, Platform, fund, start_platform
from tests.integration.faults_support import (
    MONEY,
    MONEY_PAID,
    PLATFORM_ENV,
    POINTS,
    PROFILE_REWARD,
    assert_outboxes_delivered,
    assert_reconciles,
    credited_once,
    drain,
    orders_of,
    paid_once,
    post_interest,
    record_profile_action,
    settle,
    settle_until,
    start_again,
)
from tests.integration.promotions_support import PromotionsClient, line

DEADLINE_MS = 700
SLOW = f"sleep:{DEADLINE_MS + 200}*1"  # past the caller's deadline, once
CODE_POINTS = 50

# The failpoint of the peer's RPC behind each call of the saga.
SAGA_CALLS = {
    "reserve-code": "promotions.rpc.ReservePromoCode",
    "hold-points": "points.rpc.HoldPoints",
    "hold-money": "wallet.rpc.HoldMoney",
    "capture-money": "wallet.rpc.CaptureHold",
    "capture-points": "points.rpc.CaptureHold",
    "confirm-code": "promotions.rpc.ConfirmPromoCodeReservation",
    "accrue": "promotions.rpc.AccrueOrderPoints",
}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    databases = Databases(tmp_path_factory.mktemp("faults"))
    harness = Harness(databases, ManualClock())
    try:
        platform = start_platform(harness, env={**PLATFORM_ENV, "PEER_DEADLINE_MS": str(DEADLINE_MS)})
        promotions = PromotionsClient(platform.services["promotions"].channel())
        promotions.create_code("FAULT50", fixed_points=CODE_POINTS)
        yield platform
    finally:
        failpoints.disarm()
        harness.close()
        databases.drop_all()


@pytest.fixture(autouse=True)
def no_failpoint_left(platform: Platform) -> Iterator[None]:
    yield
    failpoints.disarm()
    assert failpoints.wait_idle(10)


# --- the outbox flows into Points -----------------------------------------------------------

FLOWS = {
    "interest": ("wallet", "points.rpc.BatchCreditPoints"),
    "profile-reward": ("promotions", "points.rpc.CreditPoints"),
}
OUTBOX_FAULTS = ["stopped", "refused-before", "slow-before", "slow-after", "reply-lost"]


@pytest.mark.parametrize("fault", OUTBOX_FAULTS)
@pytest.mark.parametrize("flow", FLOWS)
def test_an_outbox_credit_arrives_once_whatever_happens_to_points(platform: Platform, flow: str, fault: str) -> None:
    sender_name, rpc = FLOWS[flow]
    sender = platform.services[sender_name]
    customer = f"outbox-{flow}-{fault}"
    if flow == "interest":
        reference, amount = post_interest(platform, customer)
    else:
        record_profile_action(sender.channel(), customer)
        reference, amount = "profile:CONTACTS_UPDATED", PROFILE_REWARD

    points = platform.services["points"]
    if fault == "stopped":
        platform.harness.running.pop("points")
        points.stop()
    else:
        action = {"refused-before": "unavailable*1", "reply-lost": "unavailable*1"}.get(fault, SLOW)
        failpoints.arm(f"{rpc}.{'after' if fault.endswith('after') or fault == 'reply-lost' else 'before'}", action)

    assert sender.app.runtime.relay.deliver_due() == 0, "the first delivery fails"
    failpoints.wait_idle()  # a slow Points finishes what it was doing (and commits) after its caller gave up
    if fault == "stopped":
        assert sender.app.runtime.relay.deliver_due() == 0  # still down
        start_again(platform, "points", points.database_url, points.port)
    drain(platform)

    credited_once(platform.points, customer, reference, amount)
    assert_outboxes_delivered(platform)
    assert_reconciles(platform)


# --- the saga's calls, the peer slow past the deadline or the call cut ----------------------

# A peer slow past the caller's deadline; a call cut without an answer, as a peer that is being
# stopped cuts it (a bare INTERNAL "CANCELLED": before the fix, the saga took that for a refusal
# and failed the order, or, after payment, skipped the accrual or the code's confirmation).
SAGA_FAULTS = {"slow": SLOW, "cut": "cut*1"}


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("fault", SAGA_FAULTS)
@pytest.mark.parametrize("step", SAGA_CALLS)
def test_a_saga_peer_slow_or_cut_off_charges_once(platform: Platform, step: str, fault: str, when: str) -> None:
    customer = f"{fault}-{step}-{when}"
    fund(platform, customer, money_minor=MONEY, points=POINTS)
    promotions = PromotionsClient(platform.services["promotions"].channel())
    used_before = promotions.code("FAULT50").used_count
    failpoint = f"{SAGA_CALLS[step]}.{when}"
    failpoints.arm(failpoint, SAGA_FAULTS[fault])
    answer = platform.checkout.place(customer, ("kettle", 2), points=POINTS, code="FAULT50")
    assert answer.status in (pb.ORDER_STATUS_PENDING, pb.ORDER_STATUS_PAID)

    def done() -> bool:  # recovery makes the call if the order paused before reaching it
        return (
            failpoints.wait_idle() and not failpoints.is_armed(failpoint) and paid_once(platform, customer, CODE_POINTS)
        )

    assert settle_until(platform, done), orders_of(platform, customer)
    [order] = orders_of(platform, customer)
    assert order.money_paid.amount_minor == MONEY_PAID
    code = promotions.code("FAULT50")
    assert (code.used_count, code.reserved_count) == (used_before + 1, 0)
    assert_outboxes_delivered(platform)
    assert_reconciles(platform)


# --- lost replies, retried with the same request id -----------------------------------------


@dataclass
class Retried:
    """A mutating call whose reply is lost once, and the state its effect shows in."""

    failpoint: str
    act: Callable[[Platform, str, dict[str, Any], str], Any]
    state: Callable[[Platform, str, dict[str, Any]], Any]
    setup: Callable[[Platform, str, dict[str, Any]], None] = lambda platform, customer, ctx: None
    ctx: dict[str, Any] = field(default_factory=dict)


def _wallet(platform: Platform, customer: str, ctx: dict[str, Any]) -> tuple[int, int]:
    balances = platform.balances(customer)  # (0, 0) before the first top-up opens the wallet
    return balances.wallet, balances.wallet_held


def _points(platform: Platform, customer: str, ctx: dict[str, Any]) -> tuple[int, int, int]:
    drain(platform)  # what Promotions queued for Points arrives first
    balance = platform.points.balance(customer)
    return balance.available, balance.pending, balance.held


def _promotions(platform: Platform) -> PromotionsClient:
    return PromotionsClient(platform.services["promotions"].channel())


def _wallet_hold(platform: Platform, customer: str, ctx: dict[str, Any], *, capture: bool = False) -> None:
    platform.wallet.top_up(customer, 100_000)
    ctx["hold"] = platform.wallet.hold(customer, 30_000, reference=customer).hold_id
    if capture:
        platform.wallet.capture(ctx["hold"])


def _points_hold(platform: Platform, customer: str, ctx: dict[str, Any], *, capture: bool = False) -> None:
    platform.points.credit(customer, 100)
    ctx["hold"] = platform.points.hold(customer, 30, reference=customer).hold_id
    if capture:
        platform.points.capture(ctx["hold"])


def _reserve(platform: Platform, customer: str, request_id: str) -> promotions_pb2.PromoCodeReservation:
    request = promotions_pb2.ReservePromoCodeRequest(
        request_id=request_id,
        customer_id=customer,
        code="FAULT50",
        order_id=customer,
        lines=[line("k", "kettles", 500)],
    )
    return _promotions(platform).stub.ReservePromoCode(request, timeout=10).reservation


def _code(platform: Platform, customer: str, ctx: dict[str, Any]) -> tuple[int, int, tuple[int, int, int]]:
    code = _promotions(platform).code("FAULT50")
    return code.used_count, code.reserved_count, _points(platform, customer, ctx)


def _confirm(platform: Platform, customer: str, ctx: dict[str, Any], request_id: str) -> Any:
    request = promotions_pb2.ConfirmPromoCodeReservationRequest(
        request_id=request_id, reservation_id=ctx["reservation"]
    )
    return _promotions(platform).stub.ConfirmPromoCodeReservation(request, timeout=10)


def _record(platform: Platform, customer: str, ctx: dict[str, Any], request_id: str) -> Any:
    request = promotions_pb2.RecordProfileActionRequest(
        request_id=request_id, customer_id=customer, action=promotions_pb2.PROFILE_ACTION_TYPE_PHOTO_ADDED
    )
    return _promotions(platform).stub.RecordProfileAction(request, timeout=10)


def _batch(platform: Platform, customer: str, ctx: dict[str, Any], request_id: str) -> Any:
    credit = points_pb2.CreditPointsRequest(
        request_id=f"{request_id}:1", customer_id=customer, points=70, source=points_pb2.POINTS_SOURCE_CAMPAIGN
    )
    return platform.points.stub.BatchCreditPoints(
        points_pb2.BatchCreditPointsRequest(request_id=request_id, requests=[credit]), timeout=10
    )


def _order(platform: Platform, customer: str, ctx: dict[str, Any]) -> tuple[Balances, int]:
    settle(platform)
    return platform.balances(customer), len(orders_of(platform, customer))


RETRIED: dict[str, Retried] = {
    "checkout.PlaceOrder": Retried(
        "checkout.rpc.PlaceOrder",
        lambda p, c, ctx, r: p.checkout.place(c, ("kettle", 2), points=POINTS, code="FAULT50", request_id=r),
        _order,
        lambda p, c, ctx: fund(p, c, money_minor=MONEY, points=POINTS),
    ),
    "wallet.TopUp": Retried(
        "wallet.rpc.TopUp", lambda p, c, ctx, r: p.wallet.top_up(c, 100_000, request_id=r), _wallet
    ),
    "wallet.HoldMoney": Retried(
        "wallet.rpc.HoldMoney",
        lambda p, c, ctx, r: p.wallet.hold(c, 30_000, reference=c, request_id=r),
        _wallet,
        lambda p, c, ctx: p.wallet.top_up(c, 100_000) and None,
    ),
    "wallet.CaptureHold": Retried(
        "wallet.rpc.CaptureHold",
        lambda p, c, ctx, r: p.wallet.capture(ctx["hold"], request_id=r),
        _wallet,
        _wallet_hold,
    ),
    "wallet.RefundPayment": Retried(
        "wallet.rpc.RefundPayment",
        lambda p, c, ctx, r: p.wallet.refund(ctx["hold"], 10_000, request_id=r),
        _wallet,
        lambda p, c, ctx: _wallet_hold(p, c, ctx, capture=True),
    ),
    "points.CreditPoints": Retried(
        "points.rpc.CreditPoints", lambda p, c, ctx, r: p.points.credit(c, 100, request_id=r), _points
    ),
    "points.BatchCreditPoints": Retried("points.rpc.BatchCreditPoints", _batch, _points),
    "points.HoldPoints": Retried(
        "points.rpc.HoldPoints",
        lambda p, c, ctx, r: p.points.hold(c, 30, reference=c, request_id=r),
        _points,
        lambda p, c, ctx: p.points.credit(c, 100) and None,
    ),
    "points.CaptureHold": Retried(
        "points.rpc.CaptureHold",
        lambda p, c, ctx, r: p.points.capture(ctx["hold"], request_id=r),
        _points,
        _points_hold,
    ),
    "points.ReturnPoints": Retried(
        "points.rpc.ReturnPoints",
        lambda p, c, ctx, r: p.points.give_back(ctx["hold"], 10, request_id=r),
        _points,
        lambda p, c, ctx: _points_hold(p, c, ctx, capture=True),
    ),
    "promotions.RecordProfileAction": Retried("promotions.rpc.RecordProfileAction", _record, _points),
    "promotions.ReservePromoCode": Retried(
        "promotions.rpc.ReservePromoCode", lambda p, c, ctx, r: _reserve(p, c, r), _code
    ),
    "promotions.ConfirmPromoCodeReservation": Retried(
        "promotions.rpc.ConfirmPromoCodeReservation",
        _confirm,
        _code,
        lambda p, c, ctx: ctx.update(reservation=_reserve(p, c, rid()).reservation_id),
    ),
    "promotions.AccrueOrderPoints": Retried(
        "promotions.rpc.AccrueOrderPoints",
        lambda p, c, ctx, r: _promotions(p).accrue(c, c, line("k", "kettles", 500), request_id=r),
        _points,
    ),
}


@pytest.mark.parametrize("lost", ["deadline", "unavailable"])
@pytest.mark.parametrize("name", RETRIED)
def test_a_call_retried_after_its_reply_was_lost_has_one_effect(platform: Platform, name: str, lost: str) -> None:
    case = RETRIED[name]
    customer = f"lost-{name}-{lost}"
    ctx: dict[str, Any] = {}
    case.setup(platform, customer, ctx)
    before = case.state(platform, customer, ctx)
    request_id = rid()
    failpoints.arm(f"{case.failpoint}.after", f"{lost}*1")
    with pytest.raises(grpc.RpcError) as first:
        case.act(platform, customer, ctx, request_id)
    # The failpoint's status (or, on a machine too loaded to answer in time, the client's own deadline).
    assert first.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    done = case.state(platform, customer, ctx)
    assert done != before, "the call took effect although its reply was lost"
    for _ in range(2):  # the client retries with the same request id
        case.act(platform, customer, ctx, request_id)
        assert case.state(platform, customer, ctx) == done, "a retry had a second effect"


def test_a_client_that_times_out_and_retries_place_order_pays_once(platform: Platform) -> None:
    """A real client-side timeout: Checkout finishes the order after the caller stopped waiting."""
    customer = "timeout-place-order"
    fund(platform, customer, money_minor=MONEY, points=POINTS)
    request = pb.PlaceOrderRequest(
        request_id=rid(), customer_id=customer, lines=[pb.LineItem(sku="kettle", quantity=2)], points_to_use=POINTS
    )
    request.payment_method = WALLET
    failpoints.arm("checkout.rpc.PlaceOrder.after", "sleep:1500*1")
    with pytest.raises(grpc.RpcError) as timed_out:
        platform.checkout.stub.PlaceOrder(request, timeout=1.0)
    assert timed_out.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    failpoints.wait_idle()
    again = platform.checkout.stub.PlaceOrder(request, timeout=30).order
    assert again.status in (pb.ORDER_STATUS_PAID, pb.ORDER_STATUS_PENDING)  # PENDING: a peer was slow
    assert settle_until(platform, lambda: paid_once(platform, customer))
    assert [o.order_id for o in orders_of(platform, customer)] == [again.order_id]
    balances = platform.balances(customer)
    assert (balances.wallet, balances.wallet_held, balances.available, balances.points_held) == (
        MONEY - MONEY_PAID, 0, 0, 0
    )  # fmt: skip


def test_after_every_fault_of_this_module_the_platform_reconciles_clean(platform: Platform) -> None:
    settle(platform)
    assert_outboxes_delivered(platform)
    report = assert_reconciles(platform)
    assert "CLEAN" in report
