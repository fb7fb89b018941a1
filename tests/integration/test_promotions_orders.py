"""Campaigns, accrual into Points, cashback with its monthly cap, mechanics (also as Wallet sees
them), profile rewards once, and budgets and code limits under 20 concurrent orders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.common.v1 import earning_pb2, mechanic_pb2
from loyalty.points.v1 import points_pb2
from loyalty.promotions.v1 import promotions_pb2 as pb
from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from sqlalchemy import insert

from services.promotions.adapters.tables import CustomerFeaturesRow
from shared.clock import ManualClock
from shared.errors import DomainError
from tests.clients import PointsClient, refused, rid
from tests.harness import Harness, RunningService
from tests.integration.promotions_support import (
    WALLET,
    PromotionsClient,
    award_sum,
    cashback,
    interest,
    line,
    rub,
)
from tests.integration.test_points_concurrency import WORKERS, race


@pytest.fixture
def promotions(harness: Harness, points: RunningService) -> RunningService:
    return harness.start("promotions", background_relay=False)  # the tests deliver the outbox themselves


@pytest.fixture
def api(promotions: RunningService) -> PromotionsClient:
    return PromotionsClient(promotions.channel())


def window(clock: ManualClock) -> tuple[datetime, datetime]:
    return clock.now() - timedelta(days=1), clock.now() + timedelta(days=30)


def deliver(promotions: RunningService) -> None:
    while promotions.app.runtime.relay.deliver_due():
        pass


# --- campaigns and accrual --------------------------------------------------------------------


def test_campaign_multiplier_bonus_segments_and_validation(
    api: PromotionsClient, promotions: RunningService, clock: ManualClock
) -> None:
    start, end = window(clock)
    double = api.create_campaign(start, end, name="Double books", categories=["books"], multiplier_bps=20_000,
                                 budget_points=1_000)  # fmt: skip
    vip = api.create_campaign(
        start, end, name="VIP bonus", bonus_points=25, budget_points=100,
        segment=pb.CustomerSegment(customers=pb.CustomerList(customer_ids=["vip"])),
    )  # fmt: skip
    big = api.create_campaign(
        start, end, name="Big spenders", bonus_points=7, budget_points=100,
        segment=pb.CustomerSegment(condition=pb.FeatureCondition(min_average_order_value_minor=1_000_000)),
    )  # fmt: skip
    with promotions.app.runtime.db.engine.begin() as connection:
        connection.execute(
            insert(CustomerFeaturesRow.__table__).values(  # type: ignore[attr-defined]
                customer_id="rich", average_order_value_minor=2_000_000, order_count=3, lookback_days=90,
                uses_financial_products=True, takes_part_in_points_activities=False, as_of=clock.now(),
                source="IMPORTED",
            )
        )  # fmt: skip
    order = [line("b", "books", 1_000), line("f", "food", 1_000)]
    anyone = api.evaluate("c-1", *order)
    assert anyone.total_points == 30  # 10 + 10 base, +10 double on books
    [extra] = [a for a in anyone.lines[0].awards if a.kind == earning_pb2.AWARD_KIND_CAMPAIGN]
    assert (extra.rule_id, extra.points, extra.rate_bps) == (double.campaign_id, 10, 100)
    assert api.evaluate("vip", *order).total_points == 55
    assert api.evaluate("rich", *order).total_points == 37
    assert api.campaign(vip.campaign_id).budget_used_points == 0  # evaluation consumes nothing

    campaign_cases: dict[str, dict[str, Any]] = {
        "REWARD_REQUIRED": {"budget_points": 1},
        "NEGATIVE_BUDGET": {"bonus_points": 1, "budget_points": -1},
        "NEGATIVE_RATE": {"multiplier_bps": -1, "budget_points": 1},
    }
    for reason, fields in campaign_cases.items():
        assert refused(partial(api.create_campaign, start, end, **fields)).reason == reason
    assert refused(lambda: api.create_campaign(end, start, bonus_points=1)).reason == "WINDOW_ENDS_BEFORE_START"

    request = pb.UpdateCampaignRequest(
        request_id=rid(), campaign=pb.Campaign(campaign_id=double.campaign_id, budget_points=5),
        update_mask=FieldMask(paths=["budget_points"]),
    )  # fmt: skip
    api.accrue("c-1", "order-1", *order)
    assert api.campaign(double.campaign_id).budget_used_points == 10
    assert refused(lambda: api.stub.UpdateCampaign(request, timeout=10)).reason == "BUDGET_BELOW_USED"
    request.request_id, request.campaign.budget_points = rid(), 2_000
    assert api.stub.UpdateCampaign(request, timeout=10).campaign.budget_points == 2_000
    ended = api.stub.EndCampaign(pb.EndCampaignRequest(request_id=rid(), campaign_id=big.campaign_id)).campaign
    assert ended.status == pb.RULE_STATUS_ENDED
    assert api.evaluate("rich", *order).total_points == 30


def test_accrual_credits_points_once_per_order_and_the_budget_stops_paying(
    api: PromotionsClient, promotions: RunningService, points: RunningService, clock: ManualClock
) -> None:
    start, end = window(clock)
    bonus = api.create_campaign(start, end, name="Bonus", bonus_points=40, budget_points=50)
    order = [line("b", "books", 2_000, points_used=1_000)]
    first = api.accrue("c-1", "order-1", *order)
    assert first.total_points == 50 == award_sum(first)  # 10 on the money part + 40 bonus
    second = api.accrue("c-1", "order-2", *order)
    [cut] = second.order_awards
    assert (cut.points, cut.capped) == (10, True)  # what was left of the budget
    third = api.accrue("c-1", "order-3", *order)
    assert not third.order_awards and third.total_points == 10  # the campaign stopped paying
    assert api.campaign(bonus.campaign_id).status == pb.RULE_STATUS_EXHAUSTED

    request_id = rid()
    replay = api.accrue("c-1", "order-1b", *order, request_id=request_id)
    assert api.accrue("c-1", "order-1b", *order, request_id=request_id) == replay  # same request: same answer
    error = refused(lambda: api.accrue("c-1", "order-1", *order))
    assert (error.reason, error.code.name) == ("ORDER_ALREADY_ACCRUED", "ALREADY_EXISTS")
    assert refused(lambda: api.accrue("c-1", "order-9")).reason == "LINES_REQUIRED"

    deliver(promotions)
    lots = PointsClient(points.channel()).lots("c-1")
    by_source: dict[int, int] = {}
    for lot in lots:
        by_source[lot.source] = by_source.get(lot.source, 0) + lot.amount
    assert by_source == {points_pb2.POINTS_SOURCE_PURCHASE: 40, points_pb2.POINTS_SOURCE_CAMPAIGN: 50}
    # Everything an order earns waits for the order to be received.
    assert {lot.status for lot in lots} == {points_pb2.LOT_STATUS_PENDING}
    assert {lot.reference for lot in lots} == {"order-1", "order-2", "order-3", "order-1b"}


def test_cashback_by_balance_tier_with_a_monthly_cap(
    api: PromotionsClient, promotions: RunningService, points: RunningService, clock: ManualClock
) -> None:
    api.set_default(cashback((10_000, 300), (50_000, 500), cap=400))
    order = [line("tv", "electronics", 5_000)]
    low = api.evaluate("c-1", *order, method=WALLET, balance=rub(9_999))
    assert low.total_points == 50 and low.mechanic.code == "cashback-test"  # base only: below every tier
    card = api.evaluate("c-1", *order, balance=rub(60_000))
    assert card.total_points == 50  # paid by card: no cashback
    evaluation = api.accrue("c-1", "o-1", *order, method=WALLET, balance=rub(60_000))
    cb = [a for a in evaluation.lines[0].awards if a.kind == earning_pb2.AWARD_KIND_CASHBACK]
    assert [(a.points, a.rate_bps) for a in cb] == [(250, 500)]
    second = api.accrue("c-1", "o-2", *order, method=WALLET, balance=rub(60_000))
    [capped] = [a for a in second.lines[0].awards if a.kind == earning_pb2.AWARD_KIND_CASHBACK]
    assert (capped.points, capped.capped) == (150, True)  # 5 % would be 250; the cap leaves 150 of 400
    third = api.accrue("c-1", "o-3", *order, method=WALLET, balance=rub(20_000))
    assert not [a for a in third.lines[0].awards if a.kind == earning_pb2.AWARD_KIND_CASHBACK]
    clock.advance(timedelta(days=40))  # a new month
    fourth = api.accrue("c-1", "o-4", *order, method=WALLET, balance=rub(20_000))
    assert fourth.total_points == 50 + 150
    deliver(promotions)
    cashback_lots = [
        lot for lot in PointsClient(points.channel()).lots("c-1") if lot.source == points_pb2.POINTS_SOURCE_CASHBACK
    ]
    assert sorted(lot.amount for lot in cashback_lots) == [150, 150, 250]
    assert all(lot.status == points_pb2.LOT_STATUS_PENDING for lot in cashback_lots)


# --- mechanics --------------------------------------------------------------------------------


def test_default_mechanic_is_twelve_percent_and_can_be_set_within_bounds(
    api: PromotionsClient, clock: ManualClock
) -> None:
    default = api.mechanic("c-1")
    assert (default.mechanic.interest.apr_bps, default.mechanic.interest.basis, default.origin) == (
        1200, mechanic_pb2.BALANCE_BASIS_AVERAGE_DAILY, pb.MECHANIC_ORIGIN_DEFAULT
    )  # fmt: skip
    assert refused(lambda: api.set_default(interest(1801))).reason == "MECHANIC_APR_OUT_OF_RANGE"
    assert refused(lambda: api.set_default(mechanic_pb2.Mechanic())).reason == "MECHANIC_REQUIRED"
    assert refused(lambda: api.set_default(cashback())).reason == "INVALID_CASHBACK_TIERS"
    assert refused(lambda: api.set_default(interest(1500), clock.now() - timedelta(hours=1))).reason == (
        "EFFECTIVE_TIME_IN_PAST"
    )
    next_month = datetime(2026, 2, 1, tzinfo=UTC) - timedelta(hours=3)  # Moscow midnight
    api.set_default(interest(1800), next_month)
    assert api.mechanic("c-1").mechanic.interest.apr_bps == 1200
    assert api.mechanic("c-1", month="2026-02").mechanic.interest.apr_bps == 1800
    assert api.mechanic("c-1", month="2026-01").mechanic.interest.apr_bps == 1200
    batch = api.stub.BatchGetCustomerMechanics(
        pb.BatchGetCustomerMechanicsRequest(customer_ids=["a", "b"], month="2026-02"), timeout=10
    )
    assert [(m.customer_id, m.mechanic.interest.apr_bps) for m in batch.mechanics] == [("a", 1800), ("b", 1800)]
    too_many = pb.BatchGetCustomerMechanicsRequest(customer_ids=[f"c-{n}" for n in range(1001)])
    assert refused(lambda: api.stub.BatchGetCustomerMechanics(too_many, timeout=10)).reason == "TOO_MANY_CUSTOMERS"
    got = api.stub.GetDefaultMechanic(pb.GetDefaultMechanicRequest(time=_ts(next_month)), timeout=10)
    assert got.mechanic.interest.apr_bps == 1800 and got.effective_time.seconds == int(next_month.timestamp())


def test_wallet_shows_the_mechanic_set_in_promotions(harness: Harness, api: PromotionsClient) -> None:
    wallet = harness.start("wallet")
    stub = wallet_pb2_grpc.WalletServiceStub(wallet.channel())
    stub.OpenWallet(wallet_pb2.OpenWalletRequest(request_id=rid(), customer_id="c-1"), timeout=10)
    shown = stub.GetWallet(wallet_pb2.GetWalletRequest(customer_id="c-1"), timeout=10).wallet.mechanic
    assert shown.interest.apr_bps == 1200
    api.set_default(cashback((10_000, 300), (50_000, 500), cap=1_000))
    shown = stub.GetWallet(wallet_pb2.GetWalletRequest(customer_id="c-1"), timeout=10).wallet.mechanic
    assert shown.code == "cashback-test"
    assert [(t.min_balance_minor, t.rate_bps) for t in shown.cashback.tiers] == [(1_000_000, 300), (5_000_000, 500)]


# --- profile actions --------------------------------------------------------------------------


def test_profile_rewards_are_paid_once(
    api: PromotionsClient, promotions: RunningService, points: RunningService
) -> None:
    def record(action: Any, survey: str = "", customer: str = "c-1") -> pb.RecordProfileActionResponse:
        return api.stub.RecordProfileAction(
            pb.RecordProfileActionRequest(
                request_id=rid(),
                customer_id=customer,
                action=action,
                survey_id=survey,
            ),
            timeout=10,
        )

    contacts, photo, survey = (
        pb.PROFILE_ACTION_TYPE_CONTACTS_UPDATED, pb.PROFILE_ACTION_TYPE_PHOTO_ADDED,
        pb.PROFILE_ACTION_TYPE_SURVEY_COMPLETED,
    )  # fmt: skip
    assert (record(contacts).points_awarded, record(contacts).already_rewarded) == (50, True)
    assert record(photo).points_awarded == 50 and record(photo).points_awarded == 0
    assert record(survey, "s-1").points_awarded == 100
    assert record(survey, "s-1").already_rewarded
    assert record(survey, "s-2").points_awarded == 100
    assert record(contacts, customer="c-2").points_awarded == 50
    assert refused(lambda: record(survey)).reason == "SURVEY_ID_REQUIRED"
    deliver(promotions)
    assert PointsClient(points.channel()).balance("c-1").available == 300


# --- concurrency ------------------------------------------------------------------------------


def test_a_campaign_budget_is_never_over_issued_by_twenty_concurrent_orders(
    api: PromotionsClient, promotions: RunningService, clock: ManualClock
) -> None:
    start, end = window(clock)
    campaign = api.create_campaign(start, end, name="Bonus", bonus_points=30, budget_points=200)
    order = [line("b", "books", 1_000)]
    results = race([partial(api.accrue, f"c-{n % 3}", f"order-{n}", *order) for n in range(WORKERS)])
    assert not [r for r in results if isinstance(r, DomainError)]
    paid = sum(a.points for r in results for a in r.order_awards)
    assert paid == 200  # six full bonuses and one cut to the 20 left; the rest got nothing
    assert sorted(a.points for r in results for a in r.order_awards) == [20, 30, 30, 30, 30, 30, 30]
    assert api.campaign(campaign.campaign_id).budget_used_points == 200


def test_a_promo_code_at_its_limit_is_never_over_used_by_twenty_concurrent_orders(
    api: PromotionsClient, promotions: RunningService
) -> None:
    api.create_code("RUSH", fixed_points=100, usage_limit=5, per_customer_limit=1)
    order = [line("b", "books", 1_000)]

    def reserve_and_confirm(n: int) -> pb.PromoCodeReservation:
        reservation = api.reserve(f"c-{n % 10}", "RUSH", f"order-{n}", *order)
        return api.confirm(reservation.reservation_id)

    results = race([partial(reserve_and_confirm, n) for n in range(WORKERS)])
    confirmed = [r for r in results if isinstance(r, pb.PromoCodeReservation)]
    refusals = {r.reason for r in results if isinstance(r, DomainError)}
    assert len(confirmed) == 5
    assert len({r.customer_id for r in confirmed}) == 5  # never twice for one customer
    assert refusals <= {"PROMO_CODE_EXHAUSTED", "PROMO_CODE_ALREADY_USED"}
    code = api.code("RUSH")
    assert (code.used_count, code.reserved_count) == (5, 0)


def _ts(at: datetime) -> Timestamp:
    from shared.protoconv import to_timestamp

    return to_timestamp(at)
