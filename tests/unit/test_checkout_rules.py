"""The checkout's pure rules: the points cap, the spread of points over units, returns, and the
saga's next step, with examples and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.checkout.domain.pricing import (
    PointsPolicy,
    Product,
    apply_points,
    cart_max_points,
    merge_lines,
    per_unit,
    price_lines,
    require_within_limit,
    return_units,
    spread,
    unit_max_points,
)
from services.checkout.domain.saga import OrderStatus, SagaState, Step, next_step
from shared.errors import FailedPrecondition, InvalidArgument

POLICY = PointsPolicy(excluded_categories=frozenset({"gift-cards"}))


def test_the_examples_of_the_brief() -> None:
    assert unit_max_points(100, False, POLICY) == 0  # a 1 RUB item takes no points
    assert unit_max_points(9950, False, POLICY) == 98  # 99.50 RUB: at most 98
    line = price_lines([(Product("k", "Kettle", "home", 50000), 3)], POLICY)[0]
    assert line.max_points == 1497  # three units at 500 RUB
    assert unit_max_points(100000, True, POLICY) == 0  # an excluded category
    assert unit_max_points(50, False, POLICY) == 0  # cheaper than the least money: still no points


def test_the_cart_share_and_the_customer_s_points_cap_the_cart() -> None:
    lines = price_lines([(Product("k", "Kettle", "home", 50000), 3)], POLICY)
    assert cart_max_points(lines, POLICY, 10_000) == 1485  # 99 % of 1,500 RUB
    assert cart_max_points(lines, POLICY, 300) == 300
    assert cart_max_points(lines, PointsPolicy(max_points_share_bps=10_000), 10_000) == 1497
    with pytest.raises(FailedPrecondition) as raised:
        require_within_limit(1486, 1485)
    assert raised.value.reason == "POINTS_EXCEED_LIMIT"
    with pytest.raises(InvalidArgument):
        require_within_limit(-1, 1485)


def test_merge_lines_keeps_first_seen_order_and_refuses_bad_lines() -> None:
    assert merge_lines([("a", 1), ("b", 2), ("a", 3)]) == [("a", 4), ("b", 2)]
    for lines, reason in [([], "EMPTY_CART"), ([("a", 0)], "QUANTITY_NOT_POSITIVE"), ([("", 1)], "SKU_REQUIRED")]:
        with pytest.raises(InvalidArgument) as raised:
            merge_lines(lines)
        assert raised.value.reason == reason


prices = st.integers(min_value=1, max_value=5_000_000)
carts = st.lists(st.tuples(prices, st.integers(min_value=1, max_value=20), st.booleans()), min_size=1, max_size=8)


@given(carts, st.data())
def test_applied_points_respect_every_unit_s_least_money_and_add_up(
    cart: list[tuple[int, int, bool]], data: st.DataObject
) -> None:
    products = [
        (Product(f"sku-{i}", "t", "gift-cards" if excluded else "home", price), quantity)
        for i, (price, quantity, excluded) in enumerate(cart)
    ]
    lines = price_lines(products, POLICY)
    most = cart_max_points(lines, POLICY, 10**12)
    points = data.draw(st.integers(min_value=0, max_value=most))
    applied = apply_points(lines, points)
    assert applied == apply_points(lines, points)  # deterministic
    assert sum(sum(units) for units in applied) == points
    for line, units in zip(lines, applied, strict=True):
        assert len(units) == line.quantity
        for unit in units:
            assert 0 <= unit <= line.unit_max_points
            assert line.product.price_minor - unit * 100 >= min(line.product.price_minor, 100) or line.excluded
        assert not line.excluded or sum(units) == 0
    total = sum(line.amount_minor for line in lines)
    assert points * 100 <= total * 9900 // 10_000


@given(st.integers(min_value=0, max_value=10_000), st.lists(st.integers(min_value=0, max_value=500), min_size=1))
def test_spread_is_proportional_bounded_and_exact(points: int, capacities: list[int]) -> None:
    points = min(points, sum(capacities))
    shares = spread(points, capacities)
    assert sum(shares) == points
    assert all(0 <= share <= capacity for share, capacity in zip(shares, capacities, strict=True))
    total = sum(capacities)
    if total:
        assert all(abs(share * total - points * c) < total for share, c in zip(shares, capacities, strict=True))


@given(st.integers(min_value=1, max_value=50), st.integers(min_value=100, max_value=100_000), st.data())
def test_returning_all_units_one_by_one_gives_back_exactly_what_was_paid(
    quantity: int, price: int, data: st.DataObject
) -> None:
    unit_cap = unit_max_points(price, False, POLICY)
    points = data.draw(st.integers(min_value=0, max_value=quantity * unit_cap))
    earned = data.draw(st.integers(min_value=0, max_value=10_000))
    units = per_unit(points, quantity)
    returned = money = back = reversed_points = 0
    while returned < quantity:
        k = data.draw(st.integers(min_value=1, max_value=quantity - returned))
        part = return_units(
            quantity=quantity,
            returned_before=returned,
            unit_price_minor=price,
            unit_points=units,
            points_earned=earned,
            to_return=k,
        )
        assert part.money_refunded_minor >= k * min(price, 100)
        returned += k
        money, back, reversed_points = (
            money + part.money_refunded_minor,
            back + part.points_returned,
            reversed_points + part.points_reversed,
        )
    assert (money, back, reversed_points) == (quantity * price - points * 100, points, earned)
    with pytest.raises(FailedPrecondition):
        return_units(
            quantity=quantity,
            returned_before=quantity,
            unit_price_minor=price,
            unit_points=units,
            points_earned=earned,
            to_return=1,
        )


# --- the saga ---------------------------------------------------------------------------------

FORWARD = [Step.RESERVE_CODE, Step.HOLD_POINTS, Step.HOLD_MONEY, Step.CAPTURE_MONEY, Step.CAPTURE_POINTS]


def test_the_forward_path_then_what_follows_payment() -> None:
    state = SagaState(OrderStatus.PENDING, has_code=True, has_points=True)
    seen = []
    while (step := next_step(state)) is not None and step != Step.MARK_PAID:
        seen.append(step)
        state = SagaState(OrderStatus.PENDING, True, True, done=state.done | {step})
    assert seen == FORWARD
    paid = SagaState(OrderStatus.PAID, True, True, done=state.done | {Step.MARK_PAID})
    assert next_step(paid) == Step.CONFIRM_CODE
    assert next_step(SagaState(OrderStatus.PAID, True, True, done=paid.done | {Step.CONFIRM_CODE})) == Step.ACCRUE
    no_extras = SagaState(OrderStatus.PENDING, has_code=False, has_points=False)
    assert no_extras.forward() == [Step.HOLD_MONEY, Step.CAPTURE_MONEY, Step.MARK_PAID]


@given(st.integers(min_value=0, max_value=5), st.booleans(), st.booleans())
def test_compensation_undoes_what_was_done_and_the_uncertain_step(done_count: int, refused: bool, code: bool) -> None:
    state = SagaState(OrderStatus.PENDING, has_code=code, has_points=True)
    forward = state.forward()[:-1]
    done_count = min(done_count, len(forward) - 1)
    done = frozenset(forward[:done_count])
    failing = forward[done_count]
    state = SagaState(
        OrderStatus.PENDING, code, True, done=done, compensating=True, refused=failing if refused else None
    )
    plan = state.compensation()
    assert plan[-1] == Step.MARK_FAILED
    made = set(done) | (set() if refused else {failing})
    assert (Step.UNDO_MONEY in plan) == (Step.HOLD_MONEY in made)
    assert (Step.UNDO_POINTS in plan) == (Step.HOLD_POINTS in made)
    assert (Step.UNDO_CODE in plan) == (Step.RESERVE_CODE in made)
    assert next_step(state) == plan[0]


def test_cancellation_of_a_paid_order_and_terminal_states() -> None:
    paid = SagaState(
        OrderStatus.PAID,
        has_code=True,
        has_points=True,
        done=frozenset([*FORWARD, Step.MARK_PAID, Step.CONFIRM_CODE]),
        cancel_requested=True,
    )
    assert paid.cancellation() == [Step.UNDO_MONEY, Step.UNDO_POINTS, Step.CANCEL_PENDING, Step.MARK_CANCELLED]
    assert next_step(paid) == Step.UNDO_MONEY
    for status in (OrderStatus.CANCELLED, OrderStatus.FAILED):
        assert next_step(SagaState(status, True, True)) is None
