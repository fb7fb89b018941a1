"""The interest function and the yield projection: exact micro-points, the carry, no compounding."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from services.wallet.domain.interest import MICRO_POINTS, monthly_interest, project_yield
from services.wallet.domain.mechanics import InterestBasis, InterestMechanic
from shared.calendar import Month

AVERAGE_12 = InterestMechanic(apr_bps=1200, basis=InterestBasis.AVERAGE_DAILY, code="i-12-avg", name="12 %")
MINIMUM_12 = InterestMechanic(apr_bps=1200, basis=InterestBasis.MINIMUM_DAILY, code="i-12-min", name="12 % min")


def test_seed_example_50000_rub_for_12_months_at_12_percent() -> None:
    projection = project_yield(5_000_000, Month(2026, 1), 12, AVERAGE_12)
    assert [m.points for m in projection] == [500] * 12
    assert sum(m.points for m in projection) == 6_000
    assert all(m.carry_micro == 0 for m in projection)
    assert [str(m.month) for m in projection][:2] == ["2026-01", "2026-02"]


def test_the_fraction_of_a_point_is_carried_to_the_next_month() -> None:
    # 333.33 RUB at 12 %: 3.3333 points a month.
    projection = project_yield(33_333, Month(2026, 1), 4, AVERAGE_12)
    assert [(m.points, m.carry_micro) for m in projection] == [
        (3, 333_300),
        (3, 666_600),
        (3, 999_900),
        (4, 333_200),
    ]


def test_average_and_minimum_bases_differ_and_the_basis_is_shown_rounded_down() -> None:
    # 10 days at 1,000 RUB and 21 days at 0: average 322.58..., minimum 0.
    days = [100_000] * 10 + [0] * 21
    average = monthly_interest(days, AVERAGE_12, 0)
    assert average.basis_minor == 1_000_000 // 31
    assert average.accrued_micro == 1_000_000 * 1200 // (12 * 31)
    assert (average.points, average.carry_out_micro) == divmod(average.accrued_micro, MICRO_POINTS)
    minimum = monthly_interest(days, MINIMUM_12, 250_000)
    assert (minimum.basis_minor, minimum.points, minimum.carry_out_micro) == (0, 0, 250_000)


balances = st.lists(st.integers(min_value=0, max_value=60_000_000), min_size=28, max_size=31)
mechanics = st.builds(
    InterestMechanic,
    apr_bps=st.integers(min_value=0, max_value=1800),
    basis=st.sampled_from(list(InterestBasis)),
    code=st.just("m"),
    name=st.just("m"),
)


@given(balances, mechanics, st.integers(min_value=0, max_value=MICRO_POINTS - 1))
def test_monthly_interest_is_exact_to_the_micro_point(daily: list[int], mechanic: InterestMechanic, carry: int) -> None:
    result = monthly_interest(daily, mechanic, carry)
    basis = Fraction(sum(daily), len(daily)) if mechanic.basis is InterestBasis.AVERAGE_DAILY else Fraction(min(daily))
    exact_micro = basis / 100 * Fraction(mechanic.apr_bps, 10_000) / 12 * MICRO_POINTS  # roubles x APR / 12
    assert result.accrued_micro == int(exact_micro)  # floor: only sub-micro-point dust is dropped
    assert result.points * MICRO_POINTS + result.carry_out_micro == carry + result.accrued_micro
    assert 0 <= result.carry_out_micro < MICRO_POINTS
    assert result.points >= 0


@given(st.lists(balances, min_size=1, max_size=12), mechanics)
def test_carrying_loses_nothing_and_nothing_compounds(months: list[list[int]], mechanic: InterestMechanic) -> None:
    carry, posted, accrued = 0, 0, 0
    for daily in months:
        result = monthly_interest(daily, mechanic, carry)
        carry, posted, accrued = result.carry_out_micro, posted + result.points, accrued + result.accrued_micro
        # Each month depends only on its own balances and the carried fraction.
        assert result.accrued_micro == monthly_interest(daily, mechanic, 0).accrued_micro
    assert posted == accrued // MICRO_POINTS
    assert carry == accrued % MICRO_POINTS


@given(st.integers(min_value=1, max_value=60_000_000), st.integers(min_value=1, max_value=120), mechanics)
def test_the_calculator_is_the_posting_function_for_a_balance_that_never_moves(
    amount: int, months: int, mechanic: InterestMechanic
) -> None:
    projection = project_yield(amount, Month(2027, 11), months, mechanic)
    carry, month = 0, Month(2027, 11)
    for projected in projection:
        posted = monthly_interest([amount] * len(month.days()), mechanic, carry)
        assert (projected.points, projected.carry_micro, projected.month) == (
            posted.points,
            posted.carry_out_micro,
            month,
        )
        carry, month = posted.carry_out_micro, month.next()
