"""The exact statistics of experiments against scipy (the reference, used in tests only), and their
properties under hypothesis."""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from services.promotions.domain.statistics import (
    Sample,
    micro,
    regularized_beta,
    regularized_gamma_upper,
    sample_ratio_check,
    t_quantile,
    t_two_sided_p,
    welch,
)

# A fixture: net deposits in kopecks of two small groups, skewed like real money.
_rng = random.Random(20261122)
CONTROL = [int(_rng.lognormvariate(11, 1.2)) - 40_000 for _ in range(400)]
TREATMENT = [int(_rng.lognormvariate(11.15, 1.2)) - 40_000 for _ in range(350)]


def close(ours: Decimal | Fraction, reference: float, tolerance: float = 1e-9) -> bool:
    """Within a relative (or, near zero, absolute) tolerance of scipy's double-precision answer."""
    value = float(ours)
    return abs(value - reference) <= tolerance * max(1.0, abs(reference))


def test_welch_matches_scipy_on_the_fixture() -> None:
    ours = welch(Sample.of(TREATMENT), Sample.of(CONTROL))
    reference = stats.ttest_ind(TREATMENT, CONTROL, equal_var=False)
    interval = reference.confidence_interval(0.95)
    assert close(ours.t, float(reference.statistic))
    assert close(ours.df, float(reference.df))
    assert close(ours.p_value, float(reference.pvalue))
    assert close(ours.ci_lower, float(interval.low))
    assert close(ours.ci_upper, float(interval.high))
    # And in the micro-units the API answers with: the same integers scipy's values round to.
    assert abs(micro(ours.p_value) - round(float(reference.pvalue) * 1_000_000)) <= 1
    assert abs(micro(ours.ci_lower) - round(float(interval.low) * 1_000_000)) <= 1


@pytest.mark.parametrize("level", [Fraction(90, 100), Fraction(95, 100), Fraction(99, 100)])
def test_confidence_levels_match_scipy(level: Fraction) -> None:
    ours = welch(Sample.of(TREATMENT[:40]), Sample.of(CONTROL[:25]), level)
    interval = stats.ttest_ind(TREATMENT[:40], CONTROL[:25], equal_var=False).confidence_interval(float(level))
    assert close(ours.ci_lower, float(interval.low)) and close(ours.ci_upper, float(interval.high))


@pytest.mark.parametrize(
    ("t", "df"), [("0", "5"), ("0.5", "3.7"), ("1.96", "100000"), ("2.5", "12.25"), ("6", "2"), ("12", "40")]
)
def test_t_distribution_matches_scipy(t: str, df: str) -> None:
    assert close(t_two_sided_p(Decimal(t), Decimal(df)), 2 * float(stats.t.sf(float(t), float(df))), 1e-10)


@pytest.mark.parametrize(("p", "df"), [("0.975", "1"), ("0.975", "7.5"), ("0.95", "30"), ("0.995", "250000")])
def test_t_quantile_matches_scipy(p: str, df: str) -> None:
    assert close(t_quantile(Decimal(p), Decimal(df)), float(stats.t.ppf(float(p), float(df))), 1e-10)


@pytest.mark.parametrize(
    ("a", "b", "x"), [("0.5", "0.5", "0.3"), ("2", "3", "0.9"), ("50000", "0.5", "0.99996"), ("10", "10", "0.5")]
)
def test_incomplete_beta_matches_scipy(a: str, b: str, x: str) -> None:
    from scipy import special

    assert close(
        regularized_beta(Decimal(a), Decimal(b), Decimal(x)), float(special.betainc(float(a), float(b), float(x)))
    )


@pytest.mark.parametrize(("a", "x"), [("0.5", "0.1"), ("1", "3"), ("2.5", "20"), ("10", "4")])
def test_incomplete_gamma_matches_scipy(a: str, x: str) -> None:
    from scipy import special

    assert close(regularized_gamma_upper(Decimal(a), Decimal(x)), float(special.gammaincc(float(a), float(x))))


def test_sample_ratio_check_matches_scipy_and_a_skew_fails() -> None:
    observed, weights = [10_240, 9_760, 20_000], [1, 1, 2]
    ours = sample_ratio_check(observed, weights)
    reference = stats.chisquare(observed, [10_000, 10_000, 20_000])
    assert close(ours.chi_square, float(reference.statistic)) and close(ours.p_value, float(reference.pvalue))
    assert ours.degrees_of_freedom == 2 and ours.passed  # p = 0.0143 is above 0.001
    skewed = sample_ratio_check([10_500, 9_500, 20_000], weights)  # 5 % moved from one arm to another
    assert not skewed.passed and skewed.p_value < Decimal("0.001")
    assert sample_ratio_check([10_000, 10_000, 20_000], weights).p_value == 1


def test_degenerate_groups_are_never_significant_by_accident() -> None:
    one = welch(Sample.of([5]), Sample.of([1, 2, 3]))
    assert one.p_value == 1 and not one.significant
    flat = welch(Sample.of([7, 7, 7]), Sample.of([7, 7]))
    assert flat.p_value == 1 and not flat.significant
    certain = welch(Sample.of([9, 9, 9]), Sample.of([7, 7]))
    assert certain.p_value == 0 and certain.significant and certain.difference == 2


values = st.lists(st.integers(min_value=-10_000_000, max_value=10_000_000), min_size=2, max_size=40)


@settings(max_examples=40, deadline=None)
@given(values, values)
def test_welch_properties(treatment: list[int], control: list[int]) -> None:
    ours = welch(Sample.of(treatment), Sample.of(control))
    assert 0 <= ours.p_value <= 1
    assert ours.ci_lower <= Decimal(ours.difference.numerator) / ours.difference.denominator <= ours.ci_upper
    assert ours.difference == Fraction(sum(treatment), len(treatment)) - Fraction(sum(control), len(control))
    mirrored = welch(Sample.of(control), Sample.of(treatment))
    assert mirrored.difference == -ours.difference and abs(mirrored.p_value - ours.p_value) < Decimal("1e-25")
    # The interval excludes zero exactly when the p-value is below 5 % (the test and the interval agree).
    if ours.df:
        assert ours.significant == (ours.p_value < Decimal("0.05")) or abs(ours.p_value - Decimal("0.05")) < Decimal(
            "1e-20"
        )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=100_000), min_size=2, max_size=6), st.data())
def test_srm_p_value_is_a_probability_and_exact_proportions_pass(counts: list[int], data: st.DataObject) -> None:
    weights = data.draw(st.lists(st.integers(min_value=1, max_value=5), min_size=len(counts), max_size=len(counts)))
    result = sample_ratio_check(counts, weights)
    assert 0 <= result.p_value <= 1
    exact = sample_ratio_check([w * 1000 for w in weights], weights)
    assert exact.chi_square == 0 and exact.passed
