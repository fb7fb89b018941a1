"""Concurrent orders through the whole platform (docs/reliability.md): fifty orders by one customer
whose points and money cover only some of them, a promo code used at its limit and a campaign paid
at its budget by orders racing each other, and one order sent twenty times at once. Exactly the
affordable orders are paid, nothing goes negative or is over-issued, and the reconciliation is
clean."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from functools import partial

import pytest
from loyalty.checkout.v1 import checkout_pb2 as pb
from loyalty.points.v1 import points_pb2

from shared.clock import ManualClock
from shared.errors import DomainError
from tests.clients import rid
from tests.harness import Databases, Harness
from tests.integration.checkout_support import Balances, Platform, fund, start_platform
from tests.integration.faults_support import (
    PLATFORM_ENV,
    assert_outboxes_delivered,
    assert_reconciles,
    orders_of,
    settle,
)
from tests.integration.promotions_support import PromotionsClient
from tests.integration.test_points_concurrency import race

ORDERS = 50
KETTLE, POINTS_PER_ORDER = 50_000, 100
MONEY_PER_ORDER = KETTLE - POINTS_PER_ORDER * 100  # 400 RUB of money, 100 RUB of points
POINTS_COVER, MONEY_COVERS = 30, 20  # the points pay for 30 orders, the money for 20


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    databases = Databases(tmp_path_factory.mktemp("concurrency"))
    harness = Harness(databases, ManualClock())
    try:
        # Admit every racing call (the harness admits 32 at once; more are RESOURCE_EXHAUSTED).
        # Peers get 10 s, not the harness's 2 s: two dozen racing sagas on a loaded machine must
        # not turn into deadline refusals, which are not what this module checks.
        yield start_platform(harness, env={**PLATFORM_ENV, "PEER_DEADLINE_MS": "10000"})
    finally:
        harness.close()
        databases.drop_all()


def test_fifty_concurrent_orders_pay_exactly_the_affordable_ones(platform: Platform) -> None:
    customer = "racer"
    money = MONEY_COVERS * MONEY_PER_ORDER + MONEY_PER_ORDER - 1  # not quite one more order
    points = POINTS_COVER * POINTS_PER_ORDER
    fund(platform, customer, money_minor=money, points=points)
    place = partial(platform.checkout.place, customer, ("kettle", 1), points=POINTS_PER_ORDER)
    results = race([partial(place, request_id=rid()) for _ in range(ORDERS)])
    refusals = Counter(r.reason for r in results if isinstance(r, DomainError))
    assert set(refusals) <= {"INSUFFICIENT_POINTS", "INSUFFICIENT_FUNDS"}, refusals
    settle(platform)  # an order left PENDING by a slow peer is finished by recovery

    orders = orders_of(platform, customer)
    statuses = Counter(pb.OrderStatus.Name(order.status) for order in orders)
    assert statuses == {"ORDER_STATUS_PAID": MONEY_COVERS, "ORDER_STATUS_FAILED": ORDERS - MONEY_COVERS}
    assert {o.failure_reason for o in orders if o.status == pb.ORDER_STATUS_FAILED} <= {
        "INSUFFICIENT_POINTS",
        "INSUFFICIENT_FUNDS",
    }
    balances = platform.balances(customer)
    assert balances == Balances(
        wallet=money - MONEY_COVERS * MONEY_PER_ORDER,
        wallet_held=0,
        available=points - MONEY_COVERS * POINTS_PER_ORDER,
        pending=sum(o.points_to_earn for o in orders if o.status == pb.ORDER_STATUS_PAID),
        points_held=0,
    )
    assert_outboxes_delivered(platform)
    assert_reconciles(platform)


def test_one_order_sent_twenty_times_at_once_is_placed_and_paid_once(platform: Platform) -> None:
    customer = "same-order"
    fund(platform, customer, money_minor=100_000, points=POINTS_PER_ORDER)
    request_id = rid()
    results = race(
        [partial(platform.checkout.place, customer, ("kettle", 1), points=POINTS_PER_ORDER, request_id=request_id)] * 20
    )
    # Every copy is answered with the one order (once it failed with UNKNOWN: the unique index on
    # the request id refused the copy's insert at the flush, outside the replay handling).
    assert all(isinstance(r, pb.Order) for r in results), [r for r in results if not isinstance(r, pb.Order)]
    assert len({order.order_id for order in results}) == 1, "one request id, one order"
    settle(platform)
    [order] = orders_of(platform, customer)
    assert order.status == pb.ORDER_STATUS_PAID
    balances = platform.balances(customer)
    assert (balances.wallet, balances.available, balances.wallet_held, balances.points_held) == (
        100_000 - MONEY_PER_ORDER, 0, 0, 0
    )  # fmt: skip


def test_a_promo_code_at_its_limit_and_a_campaign_at_its_budget_are_never_over_issued(platform: Platform) -> None:
    promotions = PromotionsClient(platform.services["promotions"].channel())
    now = platform.harness.clock.now()
    promotions.create_code("RUSH5", fixed_points=10, usage_limit=5, per_customer_limit=1)
    campaign = promotions.create_campaign(
        now - timedelta(days=1), now + timedelta(days=30), name="Rush", bonus_points=30, budget_points=200
    )
    customers = [f"rush-{n}" for n in range(24)]
    for customer in customers:
        fund(platform, customer, money_minor=100_000)
    with_code = set(customers[:12])
    results = race(
        [
            partial(platform.checkout.place, c, ("kettle", 1), code="RUSH5" if c in with_code else "", request_id=rid())
            for c in customers
        ]
    )
    assert {r.reason for r in results if isinstance(r, DomainError)} == {"PROMO_CODE_EXHAUSTED"}
    settle(platform)

    # A code found used up while pricing leaves no order; one found used up when reserving, a FAILED one.
    orders = {c: o for c in customers for o in orders_of(platform, c)}
    paid = {c for c, o in orders.items() if o.status == pb.ORDER_STATUS_PAID}
    assert {o.failure_reason for c, o in orders.items() if c not in paid} <= {"PROMO_CODE_EXHAUSTED"}
    assert len(paid & with_code) == 5 and paid >= set(customers) - with_code
    code = promotions.code("RUSH5")
    assert (code.used_count, code.reserved_count) == (5, 0)
    assert promotions.campaign(campaign.campaign_id).budget_used_points == 200
    campaign_points = sorted(
        lot.amount
        for c in customers
        for lot in platform.points.lots(c)
        if lot.source == points_pb2.POINTS_SOURCE_CAMPAIGN
    )
    assert campaign_points == [20, 30, 30, 30, 30, 30, 30], "six full bonuses, one cut to what was left"
    promo_points = [
        lot.amount
        for c in customers
        for lot in platform.points.lots(c)
        if lot.source == points_pb2.POINTS_SOURCE_PROMO_CODE
    ]
    assert promo_points == [10] * 5
    for customer in customers:
        balances = platform.balances(customer)
        assert (balances.wallet, balances.wallet_held) == (100_000 - KETTLE * (customer in paid), 0)
    assert_outboxes_delivered(platform)
    assert_reconciles(platform)
