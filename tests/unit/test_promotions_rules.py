"""The pure earning rules of Promotions: evaluation, explanation, budgets, promo refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.promotions.domain.earning import (
    AwardKind,
    CampaignOffer,
    CashbackOffer,
    Line,
    PromoReward,
    RateRule,
    cashback_rate,
    evaluate,
    points_at,
)
from services.promotions.domain.promo_codes import CodeState, Refusal, refusal
from services.promotions.domain.segments import Condition, Features, matches

DEFAULT = RateRule("default", "Default rate", AwardKind.DEFAULT_RATE, 100)
CATEGORIES = ["books", "electronics", "food"]

amounts = st.integers(min_value=0, max_value=50_000_000)


@st.composite
def lines(draw: st.DrawFn) -> list[Line]:
    count = draw(st.integers(min_value=0, max_value=6))
    result = []
    for n in range(count):
        amount = draw(amounts)
        paid = draw(st.integers(min_value=0, max_value=amount))
        result.append(Line(f"l{n}", draw(st.sampled_from(CATEGORIES)), amount, paid))
    return result


rules = st.lists(
    st.one_of(
        st.builds(lambda r: RateRule("d2", "Default", AwardKind.DEFAULT_RATE, r), st.integers(0, 2000)),
        st.builds(
            lambda c, r: RateRule(f"c-{c}-{r}", c, AwardKind.CATEGORY_RATE, r, category=c),
            st.sampled_from(CATEGORIES),
            st.integers(0, 2000),
        ),
        st.builds(
            lambda m, r: RateRule(f"t-{m}", "Tier", AwardKind.ORDER_AMOUNT_TIER, r, min_order_minor=m),
            st.integers(1, 10_000_000),
            st.integers(0, 500),
        ),
    ),
    max_size=5,
)
campaigns = st.lists(
    st.builds(
        lambda n, cats, mult, bonus, budget: CampaignOffer(
            f"camp-{n}", "Campaign", frozenset(cats), mult, bonus, budget
        ),
        st.integers(0, 5),
        st.sets(st.sampled_from(CATEGORIES), max_size=2),
        st.sampled_from([0, 15_000, 20_000, 30_000]),
        st.integers(0, 500),
        st.integers(0, 2000),
    ),
    max_size=3,
    unique_by=lambda c: c.campaign_id,
)
promos = st.one_of(
    st.none(),
    st.builds(
        lambda fixed, pct, cap, budget: PromoReward("CODE", fixed, pct, cap, frozenset(), budget),
        st.integers(0, 1000),
        st.integers(0, 3000),
        st.integers(0, 500),
        st.one_of(st.none(), st.integers(0, 1000)),
    ),
)
cashbacks = st.one_of(
    st.none(),
    st.builds(
        lambda rate, cap: CashbackOffer("cashback", rate, cap),
        st.integers(0, 1000),
        st.one_of(st.none(), st.integers(0, 1000)),
    ),
)


def test_one_percent_of_a_hundred_roubles_is_one_point_and_rounding_is_down() -> None:
    assert points_at(10_000, 100) == 1
    assert points_at(19_999, 100) == 1
    assert points_at(9_999, 100) == 0
    assert points_at(500_000, 300) == 150


@given(lines(), rules, campaigns, promos, cashbacks)
def test_the_explanation_adds_up_to_the_total(
    order: list[Line],
    rule_set: list[RateRule],
    offers: list[CampaignOffer],
    promo: PromoReward | None,
    cashback: CashbackOffer | None,
) -> None:
    result = evaluate(order, [DEFAULT, *rule_set], offers, promo, cashback)
    assert result.total_points == sum(line.points for line in result.lines) + sum(a.points for a in result.order_awards)
    assert [line.line_id for line in result.lines] == [line.line_id for line in order]
    assert all(a.points >= 0 for a in result.awards)


@given(lines(), rules, campaigns, promos, cashbacks)
def test_points_never_come_from_the_part_paid_with_points(
    order: list[Line],
    rule_set: list[RateRule],
    offers: list[CampaignOffer],
    promo: PromoReward | None,
    cashback: CashbackOffer | None,
) -> None:
    """Rate awards are based on the money part only: every base is the line's money part, and an
    order paid entirely with points earns nothing from rates."""
    result = evaluate(order, [DEFAULT, *rule_set], offers, promo, cashback)
    money = {line.line_id: line.money_minor for line in order}
    for line in result.lines:
        for award in line.awards:
            assert award.base_minor == money[line.line_id]
            assert award.points <= points_at(money[line.line_id], 1_000_000)  # never above 100 % of money
    all_points = [Line(x.line_id, x.category, x.amount_minor, 0) for x in order]
    free = evaluate(all_points, [DEFAULT, *rule_set], offers, promo, cashback)
    assert all(a.points == 0 for line in free.lines for a in line.awards)


@given(lines(), rules, st.integers(0, 50_000_000))
def test_paying_more_with_points_never_earns_more(order: list[Line], rule_set: list[RateRule], shift: int) -> None:
    more_points = [Line(x.line_id, x.category, x.amount_minor, max(x.money_minor - shift, 0)) for x in order]
    assert (
        evaluate(more_points, [DEFAULT, *rule_set]).total_points <= evaluate(order, [DEFAULT, *rule_set]).total_points
    )


@given(lines(), campaigns, promos, cashbacks)
def test_budgets_and_caps_are_never_exceeded(
    order: list[Line], offers: list[CampaignOffer], promo: PromoReward | None, cashback: CashbackOffer | None
) -> None:
    result = evaluate(order, [DEFAULT], offers, promo, cashback)
    for offer in offers:
        assert result.points_of(AwardKind.CAMPAIGN, offer.campaign_id) <= offer.remaining_budget
    if promo is not None:
        paid = result.points_of(AwardKind.PROMO_CODE)
        if promo.remaining_budget is not None:
            assert paid <= promo.remaining_budget
        if promo.max_points_per_use and promo.percent_bps and not promo.fixed_points:
            assert paid <= promo.max_points_per_use
    if cashback is not None and cashback.remaining_cap is not None:
        assert result.points_of(AwardKind.CASHBACK) <= cashback.remaining_cap


def test_category_rate_tier_campaign_and_cashback_on_one_order() -> None:
    order = [Line("tv", "electronics", 600_000, 500_000), Line("book", "books", 10_000, 10_000)]
    rule_set = [
        DEFAULT,
        RateRule("el", "Electronics", AwardKind.CATEGORY_RATE, 200, category="electronics"),
        RateRule("t5", "From 5,000", AwardKind.ORDER_AMOUNT_TIER, 100, min_order_minor=500_000),
        RateRule("t1", "From 1,000", AwardKind.ORDER_AMOUNT_TIER, 50, min_order_minor=100_000),
    ]
    double = CampaignOffer("x2", "Double", frozenset({"electronics"}), 20_000, 0, 30)
    result = evaluate(order, rule_set, [double], None, CashbackOffer("cb", 300, None))
    tv = {a.kind: a for a in result.lines[0].awards}
    assert tv[AwardKind.CATEGORY_RATE].points == 100  # 2 % of 5,000 RUB paid with money
    assert tv[AwardKind.ORDER_AMOUNT_TIER].points == 50  # +1 %: the highest tier reached
    assert (tv[AwardKind.CAMPAIGN].points, tv[AwardKind.CAMPAIGN].capped) == (30, True)  # budget cut 100 to 30
    assert tv[AwardKind.CASHBACK].points == 150
    book = {a.kind: a.points for a in result.lines[1].awards}
    assert book == {AwardKind.DEFAULT_RATE: 1, AwardKind.ORDER_AMOUNT_TIER: 1, AwardKind.CASHBACK: 3}
    assert result.total_points == 100 + 50 + 30 + 150 + 1 + 1 + 3


@given(st.lists(st.tuples(st.integers(0, 10_000_000), st.integers(0, 1000)), max_size=5), st.integers(0, 20_000_000))
def test_the_cashback_tier_is_the_highest_not_above_the_balance(tiers: list[tuple[int, int]], balance: int) -> None:
    rate = cashback_rate(tiers, balance)
    eligible = [t for t in tiers if t[0] <= balance]
    if not eligible:
        assert rate == 0
    else:
        assert rate == max(eligible)[1]


NOW = datetime(2026, 3, 1, tzinfo=UTC)


def state(**changes: object) -> CodeState:
    fields: dict[str, object] = {
        "code": "SPRING",
        "fixed_points": 100,
        "percent_bps": 0,
        "max_points_per_use": 0,
        "start_at": NOW - timedelta(days=1),
        "end_at": NOW + timedelta(days=1),
        "per_customer_limit": 1,
        "usage_limit": 10,
        "used_count": 0,
        "reserved_count": 0,
        "budget_points": 0,
        "budget_used_points": 0,
        "min_order_minor": 0,
        "categories": frozenset(),
    }
    fields.update(changes)
    return CodeState(**fields)  # type: ignore[arg-type]


ORDER = [Line("l1", "books", 100_000, 100_000)]


def test_each_promo_refusal_has_its_own_reason() -> None:
    assert refusal(state(), 0, NOW, ORDER) is None
    assert refusal(state(start_at=NOW + timedelta(seconds=1)), 0, NOW, ORDER) is Refusal.NOT_STARTED
    assert refusal(state(end_at=NOW), 0, NOW, ORDER) is Refusal.EXPIRED
    assert refusal(state(used_count=9, reserved_count=1), 0, NOW, ORDER) is Refusal.EXHAUSTED
    assert refusal(state(budget_points=50, budget_used_points=50), 0, NOW, ORDER) is Refusal.EXHAUSTED
    assert refusal(state(), 1, NOW, ORDER) is Refusal.ALREADY_USED
    assert refusal(state(min_order_minor=100_001), 0, NOW, ORDER) is Refusal.NOT_APPLICABLE
    assert refusal(state(categories=frozenset({"food"})), 0, NOW, ORDER) is Refusal.NOT_APPLICABLE
    paid_with_points = [Line("l1", "books", 100_000, 0)]
    assert refusal(state(fixed_points=0, percent_bps=500), 0, NOW, paid_with_points) is Refusal.NOT_APPLICABLE
    assert refusal(state(min_order_minor=10**9), 0, NOW, None) is None  # no order given: not judged


def test_feature_conditions() -> None:
    rich = Features(average_order_value_minor=500_000, order_count=12, uses_financial_products=True,
                    takes_part_in_points_activities=False)  # fmt: skip
    assert matches(Condition(), None)
    assert not matches(Condition(min_order_count=1), None)
    assert matches(Condition(min_average_order_value_minor=500_000, max_order_count=13), rich)
    assert not matches(Condition(max_average_order_value_minor=500_000), rich)
    assert not matches(Condition(takes_part_in_points_activities=True), rich)
