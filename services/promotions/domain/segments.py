"""Campaign segments: an explicit customer list, or a condition on the customer's features.

A feature condition holds when every bound that is set holds: lower bounds inclusive, upper
bounds exclusive, booleans equal. An empty condition matches everyone. A customer with no
features on record matches only the empty condition (features are the customer's latest row in
`customer_features`, imported or computed through ExperimentsService).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Features:
    average_order_value_minor: int
    order_count: int
    uses_financial_products: bool
    takes_part_in_points_activities: bool


@dataclass(frozen=True)
class Condition:
    min_average_order_value_minor: int | None = None
    max_average_order_value_minor: int | None = None
    min_order_count: int | None = None
    max_order_count: int | None = None
    uses_financial_products: bool | None = None
    takes_part_in_points_activities: bool | None = None

    @property
    def empty(self) -> bool:
        return all(value is None for value in vars(self).values())


def matches(condition: Condition, features: Features | None) -> bool:
    if condition.empty:
        return True
    if features is None:
        return False
    checks = (
        condition.min_average_order_value_minor is None
        or features.average_order_value_minor >= condition.min_average_order_value_minor,
        condition.max_average_order_value_minor is None
        or features.average_order_value_minor < condition.max_average_order_value_minor,
        condition.min_order_count is None or features.order_count >= condition.min_order_count,
        condition.max_order_count is None or features.order_count < condition.max_order_count,
        condition.uses_financial_products is None
        or features.uses_financial_products == condition.uses_financial_products,
        condition.takes_part_in_points_activities is None
        or features.takes_part_in_points_activities == condition.takes_part_in_points_activities,
    )
    return all(checks)
