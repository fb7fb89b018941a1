"""Strata, the stratified sample and the deterministic, balanced assignment (pure domain)."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from services.promotions.domain.sampling import Strata, draw, largest_remainder
from services.promotions.domain.segments import Features


def test_stratum_keys_follow_the_bucket_edges() -> None:
    strata = Strata(aov_edges=(100_000, 500_000), order_edges=(2,), by_financial_products=True)
    assert strata.key(Features(99_999, 0, True, True)) == "aov=0|orders=0|fin=1|pts=*"
    assert strata.key(Features(100_000, 2, False, True)) == "aov=1|orders=1|fin=0|pts=*"
    assert strata.key(Features(500_000, 1, False, False)) == "aov=2|orders=0|fin=0|pts=*"
    assert Strata().key(Features(1, 1, True, True)) == "aov=0|orders=0|fin=*|pts=*"


@st.composite
def populations(draw_: st.DrawFn) -> tuple[list[tuple[str, str]], int, list[tuple[str, int]], str]:
    strata = draw_(st.integers(min_value=1, max_value=6))
    sizes = [draw_(st.integers(min_value=1, max_value=60)) for _ in range(strata)]
    population = [(f"c-{s}-{n}", f"s{s}") for s, size in enumerate(sizes) for n in range(size)]
    sample = draw_(st.integers(min_value=1, max_value=len(population)))
    variants = [("control", draw_(st.integers(min_value=1, max_value=4)))]
    variants += [(f"v{i}", draw_(st.integers(min_value=1, max_value=4))) for i in range(draw_(st.integers(1, 3)))]
    return population, sample, variants, draw_(st.text(min_size=1, max_size=8))


@settings(max_examples=150, deadline=None)
@given(populations())
def test_sample_is_proportional_balanced_and_reproducible(
    case: tuple[list[tuple[str, str]], int, list[tuple[str, int]], str],
) -> None:
    population, size, variants, salt = case
    drawn = draw(population, size, variants, salt)
    assert len(drawn.assignments) == size
    total = len(population)
    weight_sum = sum(w for _, w in variants)
    per_stratum = Counter(stratum for stratum, _ in drawn.assignments.values())
    for stratum, eligible in drawn.population.items():
        # Proportional: within one customer of the stratum's exact share of the sample.
        assert abs(per_stratum[stratum] - Fraction(size * eligible, total)) < 1
        # Balanced: every variant within one customer of its exact share of the stratum's sample.
        counts = Counter(v for s, v in drawn.assignments.values() if s == stratum)
        for variant_id, weight in variants:
            assert abs(counts[variant_id] - Fraction(per_stratum[stratum] * weight, weight_sum)) < 1
        assert sum(drawn.sampled[stratum].values()) == per_stratum[stratum]
    # Customers keep their own stratum.
    own = dict(population)
    assert all(own[c] == s for c, (s, _) in drawn.assignments.items())
    # The same salt gives the same sample and assignment, whatever order the population comes in.
    assert draw(list(reversed(population)), size, variants, salt).assignments == drawn.assignments


def test_another_salt_gives_another_sample_and_the_split_is_even_with_equal_weights() -> None:
    population = [(f"c-{n}", f"s{n % 7}") for n in range(10_000)]
    variants = [("control", 1), ("apr-18", 1), ("cashback", 1)]
    first = draw(population, 3_000, variants, "salt-1")
    second = draw(population, 3_000, variants, "salt-2")
    assert first.assignments != second.assignments
    overlap = set(first.assignments) & set(second.assignments)
    assert 700 < len(overlap) < 1_100  # about 30 % of 3,000, as independent draws would overlap
    counts = Counter(v for _, v in first.assignments.values())
    assert max(counts.values()) - min(counts.values()) <= 7  # one per stratum at most


@given(
    st.integers(min_value=0, max_value=1000), st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=8)
)
def test_largest_remainder_adds_up_and_stays_within_one(total: int, shares: list[int]) -> None:
    keyed = dict(enumerate(shares))
    parts = largest_remainder(total, keyed, {k: -k for k in keyed})
    assert sum(parts.values()) == total
    assert all(abs(parts[k] - Fraction(total * s, sum(shares))) < 1 for k, s in keyed.items())
