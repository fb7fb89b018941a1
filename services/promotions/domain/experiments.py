"""Experiment definitions, their life cycle, and the rule that recommends a winner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from fractions import Fraction
from itertools import pairwise

from services.promotions.domain.mechanics import Cashback, Interest, Mechanic, validate_cashback, validate_interest
from services.promotions.domain.sampling import Strata
from services.promotions.domain.segments import Condition
from services.promotions.domain.statistics import Comparison, SrmResult, dec
from shared.errors import InvalidArgument

MAX_VARIANTS = 20
MAX_EDGES = 20
MAX_SAMPLE_SIZE = 10_000_000
MAX_LOOKBACK_DAYS = 3_660
DEFAULT_LOOKBACK_DAYS = 180
MAX_WEIGHT = 1_000_000
MAX_NAME = 200
MAX_TEXT = 2000
MAX_SALT = 128


class Status(StrEnum):
    DRAFT = "DRAFT"
    SAMPLED = "SAMPLED"
    RUNNING = "RUNNING"
    ENDED = "ENDED"
    ROLLED_OUT = "ROLLED_OUT"


@dataclass(frozen=True)
class Variant:
    variant_id: str
    name: str
    control: bool
    mechanic: Mechanic | None  # None for control: the default mechanic
    weight: int


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    description: str
    lookback_days: int
    strata: Strata
    eligibility: Condition
    sample_size: int
    variants: tuple[Variant, ...]
    salt: str


def validate(spec: ExperimentSpec) -> None:
    def bad(field: str, description: str, reason: str) -> InvalidArgument:
        return InvalidArgument.field(f"experiment.{field}", description, reason)

    if not spec.name.strip():
        raise bad("name", "is required", "NAME_REQUIRED")
    if len(spec.name) > MAX_NAME or len(spec.description) > MAX_TEXT:
        raise bad("name", f"name at most {MAX_NAME}, description {MAX_TEXT} characters", "TEXT_TOO_LONG")
    if not 0 < spec.lookback_days <= MAX_LOOKBACK_DAYS:
        raise bad(
            "lookback_days", f"must be 1 to {MAX_LOOKBACK_DAYS} (0 means {DEFAULT_LOOKBACK_DAYS})", "LOOKBACK_INVALID"
        )
    if not spec.salt.strip():
        raise bad("salt", "is required: it fixes the sample and the assignment", "SALT_REQUIRED")
    if len(spec.salt) > MAX_SALT:
        raise bad("salt", f"must be at most {MAX_SALT} characters", "SALT_TOO_LONG")
    if not 0 < spec.sample_size <= MAX_SAMPLE_SIZE:
        raise bad("sample_size", f"must be 1 to {MAX_SAMPLE_SIZE}", "SAMPLE_SIZE_INVALID")
    for field, edges in (
        ("strata.average_order_value_edges_minor", spec.strata.aov_edges),
        ("strata.order_count_edges", spec.strata.order_edges),
    ):
        if len(edges) > MAX_EDGES or any(b <= a for a, b in pairwise(edges)):
            raise bad(field, f"at most {MAX_EDGES} edges, strictly ascending", "STRATA_EDGES_INVALID")
    controls = [v for v in spec.variants if v.control]
    if len(controls) != 1:
        raise bad("variants", f"exactly one variant must be control, got {len(controls)}", "CONTROL_VARIANT_REQUIRED")
    if len(spec.variants) < 2:
        raise bad("variants", "needs a control and at least one mechanic variant", "MECHANIC_VARIANT_REQUIRED")
    if len(spec.variants) > MAX_VARIANTS:
        raise bad("variants", f"at most {MAX_VARIANTS} variants", "TOO_MANY_VARIANTS")
    seen: set[str] = set()
    for index, variant in enumerate(spec.variants):
        field = f"variants[{index}]"
        if not variant.variant_id.strip() or len(variant.variant_id) > 64:
            raise bad(f"{field}.variant_id", "is required, at most 64 characters", "VARIANT_ID_REQUIRED")
        if variant.variant_id in seen:
            raise bad(f"{field}.variant_id", f"{variant.variant_id!r} appears twice", "DUPLICATE_VARIANT_ID")
        seen.add(variant.variant_id)
        if not 0 < variant.weight <= MAX_WEIGHT:
            raise bad(f"{field}.weight", f"must be 1 to {MAX_WEIGHT}", "VARIANT_WEIGHT_INVALID")
        if variant.control:
            continue
        if variant.mechanic is None:
            raise bad(f"{field}.mechanic", "is required for a non-control variant", "VARIANT_MECHANIC_REQUIRED")
        if isinstance(variant.mechanic.kind, Interest):
            validate_interest(variant.mechanic.kind.apr_bps)
        elif isinstance(variant.mechanic.kind, Cashback):
            validate_cashback(variant.mechanic.kind.tiers, variant.mechanic.kind.monthly_cap_points)


# --- recommendation ---------------------------------------------------------------------------

RULE = (
    "recommend the variant whose net deposits per customer are significantly higher than control "
    "(the whole {level} % confidence interval of the difference above zero) with the highest lower bound "
    "of that interval, only when the sample-ratio check passed; otherwise keep the default"
)


@dataclass(frozen=True)
class VariantOutcome:
    variant_id: str
    primary: Comparison  # net deposits against control
    points_per_extra_balance_rouble: Fraction | None  # None when the balance did not rise


@dataclass(frozen=True)
class Recommendation:
    variant_id: str
    rule: str
    rationale: str


def recommend(outcomes: Sequence[VariantOutcome], srm: SrmResult, confidence_bps: int = 9500) -> Recommendation:
    level = float_free(Fraction(confidence_bps, 100)).removesuffix(".00")
    rule = RULE.format(level=level)
    if not srm.passed:
        return Recommendation(
            "",
            rule,
            "The sample-ratio check failed (the realised split does not match the weights), so the results "
            "are not trusted and no variant is recommended; find out why the assignment is skewed.",
        )
    winners = [o for o in outcomes if o.primary.significant and o.primary.difference > 0]
    if not winners:
        return Recommendation(
            "", rule, "No variant raised net deposits per customer significantly above control; keep the default."
        )
    best = max(winners, key=lambda o: (o.primary.ci_lower, o.variant_id))
    lift = best.primary.difference / 100
    cost = best.points_per_extra_balance_rouble
    cost_text = f"; it costs {float_free(cost)} points per extra rouble of average balance" if cost is not None else ""
    return Recommendation(
        best.variant_id,
        rule,
        f"Variant {best.variant_id!r} raised net deposits by {float_free(lift)} RUB per customer against control "
        f"({level} % interval from {float_free(best.primary.ci_lower / 100)} RUB){cost_text}.",
    )


def float_free(value: object) -> str:
    """A Fraction or Decimal shown with two decimals, without passing through a float."""
    number = dec(value) if isinstance(value, Fraction | int) else Decimal(str(value))
    return str(number.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
