"""Pricing rules of a cart: the points cap (the "1-rouble rule"), how applied points are spread
over lines and units, and what a return of some units gives back. Pure functions over integers:
kopecks for money, whole points (1 point pays 1 RUB = 100 kopecks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from shared.errors import FailedPrecondition, InvalidArgument

KOPECKS_PER_POINT = 100
MAX_LINES = 100
MAX_QUANTITY = 10_000
MAX_SKU = 64


@dataclass(frozen=True)
class PointsPolicy:
    """How points may pay for a cart."""

    min_money_per_unit_minor: int = 100
    max_points_share_bps: int = 9900
    excluded_categories: frozenset[str] = field(default_factory=frozenset)
    return_window: timedelta = timedelta(days=14)

    def __post_init__(self) -> None:
        if self.min_money_per_unit_minor < 1:
            raise ValueError("the least money per unit must be at least one kopeck")
        if not 0 <= self.max_points_share_bps <= 10_000:
            raise ValueError("the points share of a cart is between 0 and 10000 basis points")
        if self.return_window < timedelta(0):
            raise ValueError("the return window must not be negative")

    def excludes(self, category: str) -> bool:
        return category.casefold() in {c.casefold() for c in self.excluded_categories}


@dataclass(frozen=True)
class Product:
    sku: str
    title: str
    category: str
    price_minor: int


@dataclass(frozen=True)
class PricedLine:
    product: Product
    quantity: int
    excluded: bool
    unit_max_points: int

    @property
    def amount_minor(self) -> int:
        return self.quantity * self.product.price_minor

    @property
    def max_points(self) -> int:
        return self.quantity * self.unit_max_points


def unit_max_points(price_minor: int, excluded: bool, policy: PointsPolicy) -> int:
    """Whole points one unit can take: its price less the money it must keep, rounded down.
    A 1 RUB item takes 0; a 99.50 RUB item 98."""
    if excluded:
        return 0
    return max(0, price_minor - policy.min_money_per_unit_minor) // KOPECKS_PER_POINT


def merge_lines(lines: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """The cart as asked, one entry per sku in first-seen order, quantities added up."""
    if not lines:
        raise InvalidArgument.field("lines", "the cart has no lines", "EMPTY_CART")
    if len(lines) > MAX_LINES:
        raise InvalidArgument.field("lines", f"at most {MAX_LINES} lines", "TOO_MANY_LINES")
    merged: dict[str, int] = {}
    for index, (sku, quantity) in enumerate(lines):
        if not sku.strip() or len(sku) > MAX_SKU:
            raise InvalidArgument.field(
                f"lines[{index}].sku", f"is required, at most {MAX_SKU} characters", "SKU_REQUIRED"
            )
        if quantity <= 0:
            raise InvalidArgument.field(f"lines[{index}].quantity", "must be positive", "QUANTITY_NOT_POSITIVE")
        merged[sku] = merged.get(sku, 0) + quantity
        if merged[sku] > MAX_QUANTITY:
            raise InvalidArgument.field(
                f"lines[{index}].quantity", f"at most {MAX_QUANTITY} units of one sku", "QUANTITY_TOO_LARGE"
            )
    return list(merged.items())


def price_lines(lines: Sequence[tuple[Product, int]], policy: PointsPolicy) -> list[PricedLine]:
    priced = []
    for product, quantity in lines:
        excluded = policy.excludes(product.category)
        priced.append(PricedLine(product, quantity, excluded, unit_max_points(product.price_minor, excluded, policy)))
    return priced


def cart_max_points(lines: Sequence[PricedLine], policy: PointsPolicy, available_points: int) -> int:
    """Most points usable on the cart: the sum of the lines' maxima, capped by the policy's share
    of the total and by what the customer has."""
    total = sum(line.amount_minor for line in lines)
    by_share = total * policy.max_points_share_bps // (10_000 * KOPECKS_PER_POINT)
    return max(0, min(sum(line.max_points for line in lines), by_share, available_points))


def require_within_limit(points_to_use: int, max_points: int) -> None:
    if points_to_use < 0:
        raise InvalidArgument.field("points_to_use", "must not be negative", "INVALID_POINTS_AMOUNT")
    if points_to_use > max_points:
        raise FailedPrecondition(
            "POINTS_EXCEED_LIMIT",
            f"at most {max_points} points can pay for this cart; {points_to_use} were asked",
            metadata={"max_points": str(max_points), "points_to_use": str(points_to_use)},
        )


def spread(points: int, capacities: Sequence[int]) -> list[int]:
    """Split `points` over capacities in proportion to them (largest remainder, ties to the
    earlier one): deterministic, never above a capacity, summing to `points`."""
    total = sum(capacities)
    if not 0 <= points <= total:
        raise ValueError(f"cannot spread {points} over a capacity of {total}")
    if points == 0:
        return [0] * len(capacities)
    shares = [points * capacity // total for capacity in capacities]
    remainders = sorted(range(len(capacities)), key=lambda i: (-(points * capacities[i] % total), i))
    for i in remainders[: points - sum(shares)]:
        shares[i] += 1
    return shares


def per_unit(points: int, quantity: int) -> list[int]:
    """`points` of a line over its units in unit order: equal parts, the first units take the
    odd points. Returns give back the highest-indexed units first."""
    base, extra = divmod(points, quantity)
    return [base + 1 if unit < extra else base for unit in range(quantity)]


def apply_points(lines: Sequence[PricedLine], points: int) -> list[list[int]]:
    """Points applied to each unit of each line; each unit keeps its least money."""
    by_line = spread(points, [line.max_points for line in lines])
    return [per_unit(share, line.quantity) for share, line in zip(by_line, lines, strict=True)]


@dataclass(frozen=True)
class ReturnedUnits:
    """What returning some units of a line gives back."""

    quantity: int
    money_refunded_minor: int
    points_returned: int
    points_reversed: int


def return_units(
    *,
    quantity: int,
    returned_before: int,
    unit_price_minor: int,
    unit_points: Sequence[int],
    points_earned: int,
    to_return: int,
) -> ReturnedUnits:
    """Return `to_return` more units of a line: the highest-indexed units not yet returned. The
    money paid for them is refunded, the points applied to them come back, and their share of
    the line's earned points (spread like the applied ones) is reversed."""
    if to_return <= 0:
        raise InvalidArgument.field("lines.quantity", "must be positive", "QUANTITY_NOT_POSITIVE")
    if returned_before + to_return > quantity:
        raise FailedPrecondition(
            "RETURN_QUANTITY_EXCEEDED",
            f"{quantity - returned_before} units can still be returned, {to_return} were asked",
        )
    units = range(quantity - returned_before - to_return, quantity - returned_before)
    earned = per_unit(points_earned, quantity)
    points_back = sum(unit_points[u] for u in units)
    return ReturnedUnits(
        quantity=to_return,
        money_refunded_minor=to_return * unit_price_minor - points_back * KOPECKS_PER_POINT,
        points_returned=points_back,
        points_reversed=sum(earned[u] for u in units),
    )
