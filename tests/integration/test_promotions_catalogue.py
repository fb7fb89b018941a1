"""Promotions over gRPC: earning rules, evaluation with explanation, promo codes and their refusals."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from loyalty.common.v1 import earning_pb2
from loyalty.points.v1 import points_pb2
from loyalty.promotions.v1 import promotions_pb2 as pb

from shared.clock import ManualClock
from tests.clients import refused
from tests.harness import Harness, RunningService
from tests.integration.promotions_support import PromotionsClient, award_sum, line, rub


@pytest.fixture
def promotions(harness: Harness) -> RunningService:
    return harness.start("promotions")


@pytest.fixture
def api(promotions: RunningService) -> PromotionsClient:
    return PromotionsClient(promotions.channel())


# --- earning rules ----------------------------------------------------------------------------


def test_a_new_database_has_the_default_rule_of_one_percent(api: PromotionsClient) -> None:
    [rule] = api.rules().rules
    assert (rule.rule_id, rule.type, rule.rate_bps, rule.status) == (
        "default-rate", pb.EARNING_RULE_TYPE_DEFAULT_RATE, 100, pb.RULE_STATUS_ACTIVE
    )  # fmt: skip
    evaluation = api.evaluate("c-1", line("l1", "books", 1_000))
    assert evaluation.total_points == 10


def test_rule_validation_reasons(api: PromotionsClient, clock: ManualClock) -> None:
    now = clock.now()
    cases: dict[str, dict[str, Any]] = {
        "NEGATIVE_RATE": dict(name="x", type=pb.EARNING_RULE_TYPE_CATEGORY_RATE, category="a", rate_bps=-1),
        "CATEGORY_REQUIRED": dict(name="x", type=pb.EARNING_RULE_TYPE_CATEGORY_RATE, rate_bps=100),
        "TIER_AMOUNT_REQUIRED": dict(name="x", type=pb.EARNING_RULE_TYPE_ORDER_AMOUNT_TIER, rate_bps=100),
        "WINDOW_ENDS_BEFORE_START": dict(
            name="x", type=pb.EARNING_RULE_TYPE_CATEGORY_RATE, category="a", rate_bps=1,
            start_time=_ts(now + timedelta(days=2)), end_time=_ts(now + timedelta(days=1)),
        ),
        "DEFAULT_RATE_EXISTS": dict(name="x", type=pb.EARNING_RULE_TYPE_DEFAULT_RATE, rate_bps=200),
        "INVALID_ENUM_VALUE": dict(name="x", rate_bps=200),
    }  # fmt: skip
    for reason, fields in cases.items():
        assert refused(partial(api.create_rule, **fields)).reason == reason, reason
    assert len(api.rules().rules) == 1  # nothing was created


def test_category_rates_tiers_update_end_and_paginated_listing(api: PromotionsClient, clock: ManualClock) -> None:
    electronics = api.category_rate("electronics", 300)
    api.tier(5_000, 100)
    api.tier(1_000, 50)
    evaluation = api.evaluate("c-1", line("tv", "electronics", 6_000, points_used=1_000), line("b", "books", 500))
    tv, book = evaluation.lines
    assert {a.kind: a.points for a in tv.awards} == {
        earning_pb2.AWARD_KIND_CATEGORY_RATE: 150,  # 3 % of the 5,000 RUB paid with money
        earning_pb2.AWARD_KIND_ORDER_AMOUNT_TIER: 50,  # +1 % (order of 6,500 RUB reaches the 5,000 tier)
    }
    assert {a.kind: a.points for a in book.awards} == {
        earning_pb2.AWARD_KIND_DEFAULT_RATE: 5,
        earning_pb2.AWARD_KIND_ORDER_AMOUNT_TIER: 5,
    }
    assert evaluation.total_points == 210 == award_sum(evaluation)

    electronics.rate_bps = 500
    updated = api.update_rule(electronics, "rate_bps")
    assert updated.rate_bps == 500 and updated.category == "electronics"
    assert (
        refused(lambda: api.update_rule(pb.EarningRule(rule_id=electronics.rule_id, rate_bps=-5), "rate_bps")).reason
        == "NEGATIVE_RATE"
    )
    assert (
        refused(lambda: api.update_rule(pb.EarningRule(rule_id=electronics.rule_id), "type")).reason
        == "UPDATE_MASK_INVALID"
    )
    assert refused(lambda: api.update_rule(pb.EarningRule(rule_id="nope", rate_bps=1), "rate_bps")).reason == (
        "EARNING_RULE_NOT_FOUND"
    )
    ended = api.end_rule(electronics.rule_id)
    assert ended.status == pb.RULE_STATUS_ENDED
    assert refused(lambda: api.end_rule(electronics.rule_id)).reason == "EARNING_RULE_ENDED"
    assert refused(lambda: api.update_rule(electronics, "rate_bps")).reason == "EARNING_RULE_ENDED"
    assert api.evaluate("c-1", line("tv", "electronics", 100)).total_points == 1  # back to the default

    for n in range(4):
        clock.advance(timedelta(seconds=1))
        api.category_rate(f"cat-{n}", n)
    seen, token = [], ""
    while True:
        page = api.rules(2, token)
        seen += [r.rule_id for r in page.rules]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 8  # 4 + electronics + 2 tiers + the default
    assert seen[-1] == "default-rate"  # newest first
    active = api.rules(0, "", pb.RULE_STATUS_ENDED).rules
    assert [r.rule_id for r in active] == [electronics.rule_id]
    assert refused(lambda: api.rules(2, "garbage")).reason == "INVALID_PAGE_TOKEN"


def test_replacing_the_default_rate(api: PromotionsClient) -> None:
    api.end_rule("default-rate")
    created = api.create_rule(name="Default 2 %", type=pb.EARNING_RULE_TYPE_DEFAULT_RATE, rate_bps=200)
    assert created.status == pb.RULE_STATUS_ACTIVE
    assert api.evaluate("c-1", line("x", "books", 1_000)).total_points == 20


def test_no_points_on_the_part_paid_with_points(api: PromotionsClient) -> None:
    all_money = api.evaluate("c-1", line("l", "books", 10_000))
    half = api.evaluate("c-1", line("l", "books", 10_000, points_used=5_000))
    almost_all_points = api.evaluate("c-1", line("l", "books", 10_000, points_used=9_999))
    assert (all_money.total_points, half.total_points, almost_all_points.total_points) == (100, 50, 0)
    assert half.lines[0].awards[0].base_minor == 500_000
    bad = line("l", "books", 100)
    bad.money_amount.amount_minor = 20_000
    assert refused(lambda: api.evaluate("c-1", bad)).reason == "MONEY_AMOUNT_EXCEEDS_AMOUNT"


# --- promo codes ------------------------------------------------------------------------------


def test_each_promo_code_refusal_reason(api: PromotionsClient, clock: ManualClock) -> None:
    now = clock.now()
    api.create_code("LATER", fixed_points=100, start_time=_ts(now + timedelta(days=1)))
    api.create_code("OLD", fixed_points=100, start_time=_ts(now - timedelta(days=2)), end_time=_ts(now))
    api.create_code("ONCE", fixed_points=100, usage_limit=1)
    api.create_code("MINE", fixed_points=100, per_customer_limit=1)
    api.create_code("FOOD", fixed_points=100, categories=["food"])
    api.create_code("BIG", percent_bps=500, min_order_amount=rub(5_000))
    order = [line("l1", "books", 1_000)]
    api.confirm(api.reserve("c-9", "ONCE", "o-1", *order).reservation_id)
    api.confirm(api.reserve("c-1", "MINE", "o-2", *order).reservation_id)
    expected = {
        "NOPE": "PROMO_CODE_NOT_FOUND",
        "LATER": "PROMO_CODE_NOT_STARTED",
        "OLD": "PROMO_CODE_EXPIRED",
        "ONCE": "PROMO_CODE_EXHAUSTED",
        "MINE": "PROMO_CODE_ALREADY_USED",
        "FOOD": "PROMO_CODE_NOT_APPLICABLE",
        "BIG": "PROMO_CODE_NOT_APPLICABLE",
    }
    for code, reason in expected.items():
        answer = api.validate("c-1", code.lower(), *order)  # any case
        assert (answer.valid, answer.reason, answer.points) == (False, reason, 0), code
        error = refused(partial(api.reserve, "c-1", code, "o-3", *order))
        assert error.reason == reason, code
        assert error.code.name == ("NOT_FOUND" if reason == "PROMO_CODE_NOT_FOUND" else "FAILED_PRECONDITION")
        error = refused(partial(api.evaluate, "c-1", *order, promo_code=code))
        assert (error.reason, error.code.name) == (reason, "FAILED_PRECONDITION"), code
    ok = api.validate("c-2", "mine", *order)
    assert (ok.valid, ok.points, ok.promo_code.code) == (True, 100, "MINE")


def test_promo_code_validation_reasons(api: PromotionsClient, clock: ManualClock) -> None:
    now = clock.now()
    api.create_code("TAKEN", fixed_points=1)
    cases: dict[str, dict[str, Any]] = {
        "PROMO_CODE_EXISTS": dict(code="taken", fixed_points=1),
        "REWARD_REQUIRED": dict(code="A1"),
        "NEGATIVE_BUDGET": dict(code="A2", fixed_points=1, budget_points=-1),
        "NEGATIVE_LIMIT": dict(code="A3", fixed_points=1, usage_limit=-1),
        "NEGATIVE_RATE": dict(code="A4", percent_bps=-1),
        "WINDOW_ENDS_BEFORE_START": dict(code="A5", fixed_points=1, start_time=_ts(now), end_time=_ts(now)),
        "INVALID_PROMO_CODE": dict(code="no spaces", fixed_points=1),
    }
    for reason, fields in cases.items():
        code = str(fields.pop("code"))
        assert refused(partial(api.create_code, code, **fields)).reason == reason


def test_reserve_confirm_credits_and_a_failed_order_does_not_use_the_code(
    harness: Harness, points: RunningService, clock: ManualClock
) -> None:
    from tests.clients import PointsClient

    promotions = harness.start("promotions", background_relay=False)
    api = PromotionsClient(promotions.channel())
    api.create_code("WELCOME", percent_bps=1000, max_points_per_use=300, usage_limit=1, budget_points=1_000)
    order = [line("a", "books", 2_000, points_used=500), line("b", "food", 5_000)]

    failed = api.reserve("c-1", "welcome", "order-1", *order)
    assert (failed.points, failed.status) == (300, pb.RESERVATION_STATUS_RESERVED)  # 150 + 500, capped per use
    assert sum(a.points for a in failed.awards) == 300 and failed.awards[-1].capped
    held = api.code("WELCOME")
    assert (held.reserved_count, held.budget_used_points, held.status) == (1, 300, pb.RULE_STATUS_EXHAUSTED)
    assert refused(lambda: api.reserve("c-2", "WELCOME", "order-x", *order)).reason == "PROMO_CODE_EXHAUSTED"

    released = api.release(failed.reservation_id)  # the order failed
    assert released.status == pb.RESERVATION_STATUS_RELEASED
    assert api.release(failed.reservation_id).status == pb.RESERVATION_STATUS_RELEASED  # twice: as is
    assert refused(lambda: api.confirm(failed.reservation_id)).reason == "RESERVATION_RELEASED"
    back = api.code("WELCOME")
    assert (back.reserved_count, back.used_count, back.budget_used_points) == (0, 0, 0)

    paid = api.reserve("c-1", "WELCOME", "order-2", *order)
    confirmed = api.confirm(paid.reservation_id)
    assert confirmed.status == pb.RESERVATION_STATUS_CONFIRMED
    assert refused(lambda: api.release(paid.reservation_id)).reason == "RESERVATION_CONFIRMED"
    assert refused(lambda: api.confirm("nope")).reason == "RESERVATION_NOT_FOUND"
    used = api.code("WELCOME")
    assert (used.used_count, used.reserved_count, used.budget_used_points) == (1, 0, 300)

    promotions.app.runtime.relay.deliver_due()
    [lot] = PointsClient(points.channel()).lots("c-1")
    assert (lot.amount, lot.reference, lot.source) == (300, "order-2", points_pb2.POINTS_SOURCE_PROMO_CODE)
    assert lot.status == points_pb2.LOT_STATUS_PENDING  # spendable once the order is received


def test_unconfirmed_reservations_lapse_and_come_back(api: PromotionsClient, clock: ManualClock) -> None:
    api.create_code("ONE", fixed_points=50, usage_limit=1)
    order = [line("a", "books", 100)]
    lapsing = api.reserve("c-1", "ONE", "order-1", *order, ttl=timedelta(minutes=5))
    assert api.release_expired() == 0
    clock.advance(timedelta(minutes=5))
    assert refused(lambda: api.confirm(lapsing.reservation_id)).reason == "RESERVATION_EXPIRED"
    assert api.release_expired() == 1
    assert api.release_expired() == 0
    assert api.release(lapsing.reservation_id).status == pb.RESERVATION_STATUS_EXPIRED
    assert api.code("ONE").reserved_count == 0
    assert api.validate("c-2", "ONE", *order).valid


def test_evaluate_with_a_promo_code_explains_it_and_consumes_nothing(api: PromotionsClient) -> None:
    api.create_code("FIXED", fixed_points=70, usage_limit=1)
    evaluation = api.evaluate("c-1", line("a", "books", 1_000), promo_code="fixed")
    [order_award] = evaluation.order_awards
    assert (order_award.kind, order_award.points, order_award.rule_id) == (
        earning_pb2.AWARD_KIND_PROMO_CODE,
        70,
        "FIXED",
    )
    assert evaluation.total_points == 80 == award_sum(evaluation)
    assert api.code("FIXED").reserved_count == 0


def _ts(at: object) -> object:
    from shared.protoconv import to_timestamp

    return to_timestamp(at)  # type: ignore[arg-type]
