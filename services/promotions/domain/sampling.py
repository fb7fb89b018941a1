"""Strata, the stratified sample and the balanced, deterministic assignment of variants.

Everything random here is a SHA-256 hash of the experiment's salt, a purpose and a key, so the
same salt, population and definition always give the same sample and the same assignment:

- Stratum: the cartesian product of the buckets of the four features (edges [a, b] make the
  buckets (-inf, a), [a, b), [b, +inf)), written "aov=2|orders=1|fin=1|pts=0"; a feature not
  split on is "*".
- Allocation: the sample size is shared among the strata in proportion to their eligible
  population by the largest-remainder (Hamilton) method; remainders that tie are ordered by
  hash(salt, stratum), so no stratum is favoured systematically.
- Sample: in each stratum, the customers with the smallest hash(salt, "sample", customer).
- Assignment: each stratum's sample is shared among the variants by their weights, again by
  largest remainder (ties by hash(salt, stratum, variant)), so every variant's count in every
  stratum is within one customer of its exact share; the customers, ordered by
  hash(salt, "assign", customer), fill the variants' places in the variants' order.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeVar

from services.promotions.domain.segments import Features

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Strata:
    aov_edges: tuple[int, ...] = ()
    order_edges: tuple[int, ...] = ()
    by_financial_products: bool = False
    by_points_activities: bool = False

    def key(self, features: Features) -> str:
        aov = bisect_right(self.aov_edges, features.average_order_value_minor)
        orders = bisect_right(self.order_edges, features.order_count)
        fin = str(int(features.uses_financial_products)) if self.by_financial_products else "*"
        pts = str(int(features.takes_part_in_points_activities)) if self.by_points_activities else "*"
        return f"aov={aov}|orders={orders}|fin={fin}|pts={pts}"


def rank(salt: str, purpose: str, key: str) -> int:
    """A 64-bit pseudo-random number fixed by salt, purpose and key."""
    digest = hashlib.sha256(f"{purpose}\x1f{salt}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def largest_remainder(total: int, shares: Mapping[K, int], tiebreak: Mapping[K, int]) -> dict[K, int]:
    """`total` split in proportion to `shares` (positive integers) by largest remainder: each part
    is the floor or the ceiling of its exact share, and the parts add up to `total`."""
    whole = sum(shares.values())
    if whole <= 0:
        raise ValueError("shares must add up to a positive number")
    exact = {key: Fraction(total * share, whole) for key, share in shares.items()}
    parts = {key: value.numerator // value.denominator for key, value in exact.items()}
    left = total - sum(parts.values())
    order = sorted(exact, key=lambda key: (-(exact[key] - parts[key]), tiebreak[key]))
    for key in order[:left]:
        parts[key] += 1
    return parts


@dataclass(frozen=True)
class Drawn:
    """The realised sample: each customer's stratum and variant, and each stratum's population."""

    assignments: dict[str, tuple[str, str]]  # customer -> (stratum, variant)
    population: dict[str, int]  # stratum -> eligible customers
    sampled: dict[str, dict[str, int]]  # stratum -> variant -> customers


def draw(
    population: Iterable[tuple[str, str]],
    sample_size: int,
    variants: Sequence[tuple[str, int]],
    salt: str,
) -> Drawn:
    """Draw `sample_size` of the eligible (customer, stratum) pairs and assign `variants`
    (id, weight) to them. The caller checks that the population is large enough."""
    by_stratum: dict[str, list[tuple[int, str]]] = {}
    for customer, stratum in population:
        by_stratum.setdefault(stratum, []).append((rank(salt, "sample", customer), customer))
    sizes = {stratum: len(members) for stratum, members in by_stratum.items()}
    eligible = sum(sizes.values())
    if not 0 < sample_size <= eligible:
        raise ValueError(f"cannot sample {sample_size} of {eligible}")
    quotas = largest_remainder(sample_size, sizes, {s: rank(salt, "stratum", s) for s in sizes})
    weights = dict(variants)
    assignments: dict[str, tuple[str, str]] = {}
    sampled: dict[str, dict[str, int]] = {}
    for stratum in sorted(by_stratum):
        quota = quotas[stratum]
        chosen = [customer for _, customer in sorted(by_stratum[stratum])[:quota]]
        chosen.sort(key=lambda customer: (rank(salt, "assign", customer), customer))
        counts = largest_remainder(quota, weights, {v: rank(salt, f"variant\x1f{stratum}", v) for v in weights})
        sampled[stratum] = counts
        position = 0
        for variant_id, _ in variants:
            for customer in chosen[position : position + counts[variant_id]]:
                assignments[customer] = (stratum, variant_id)
            position += counts[variant_id]
    return Drawn(assignments, sizes, sampled)
