"""Promo codes: whether a customer may use a code now, and why not.

A refusal is one of six reasons, checked in this order (the first that applies wins):

1. PROMO_CODE_NOT_FOUND: no such code (checked by the caller, which has to look it up).
2. PROMO_CODE_NOT_STARTED: before its start time.
3. PROMO_CODE_EXPIRED: at or after its end time (or ended by an operator).
4. PROMO_CODE_EXHAUSTED: confirmed uses plus open reservations reached the usage limit, or the
   points budget is used up.
5. PROMO_CODE_ALREADY_USED: this customer's confirmed uses plus open reservations reached the
   per-customer limit.
6. PROMO_CODE_NOT_APPLICABLE: the order is below the minimum amount, has no line in the code's
   categories, or the code would pay nothing on it (no money paid on qualifying lines).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.promotions.domain.earning import Line, PromoReward, order_amount


class Refusal(StrEnum):
    NOT_FOUND = "PROMO_CODE_NOT_FOUND"
    NOT_STARTED = "PROMO_CODE_NOT_STARTED"
    EXPIRED = "PROMO_CODE_EXPIRED"
    EXHAUSTED = "PROMO_CODE_EXHAUSTED"
    ALREADY_USED = "PROMO_CODE_ALREADY_USED"
    NOT_APPLICABLE = "PROMO_CODE_NOT_APPLICABLE"


REFUSAL_TEXT = {
    Refusal.NOT_FOUND: "there is no such promo code",
    Refusal.NOT_STARTED: "the promo code is not valid yet",
    Refusal.EXPIRED: "the promo code has expired",
    Refusal.EXHAUSTED: "the promo code has been used up",
    Refusal.ALREADY_USED: "the customer has already used this promo code",
    Refusal.NOT_APPLICABLE: "the promo code does not apply to this order",
}


@dataclass(frozen=True)
class CodeState:
    code: str
    fixed_points: int
    percent_bps: int
    max_points_per_use: int
    start_at: datetime
    end_at: datetime | None
    per_customer_limit: int  # 0: no limit
    usage_limit: int  # 0: no limit
    used_count: int
    reserved_count: int
    budget_points: int  # 0: no budget
    budget_used_points: int
    min_order_minor: int
    categories: frozenset[str]

    def reward(self) -> PromoReward:
        remaining = max(self.budget_points - self.budget_used_points, 0) if self.budget_points else None
        return PromoReward(
            code=self.code,
            fixed_points=self.fixed_points,
            percent_bps=self.percent_bps,
            max_points_per_use=self.max_points_per_use,
            categories=self.categories,
            remaining_budget=remaining,
        )


def refusal(state: CodeState, customer_uses: int, now: datetime, lines: Sequence[Line] | None) -> Refusal | None:
    """Why the customer may not use the code on these lines now; None when they may.

    `customer_uses` counts the customer's confirmed uses and open reservations. `lines` None
    means "no order given": applicability is not judged."""
    if now < state.start_at:
        return Refusal.NOT_STARTED
    if state.end_at is not None and now >= state.end_at:
        return Refusal.EXPIRED
    if state.usage_limit and state.used_count + state.reserved_count >= state.usage_limit:
        return Refusal.EXHAUSTED
    if state.budget_points and state.budget_used_points >= state.budget_points:
        return Refusal.EXHAUSTED
    if state.per_customer_limit and customer_uses >= state.per_customer_limit:
        return Refusal.ALREADY_USED
    if lines is not None and not applies(state, lines):
        return Refusal.NOT_APPLICABLE
    return None


def applies(state: CodeState, lines: Sequence[Line]) -> bool:
    if order_amount(lines) < state.min_order_minor:
        return False
    qualifying = [line for line in lines if not state.categories or line.category in state.categories]
    if not qualifying:
        return False
    if state.percent_bps:  # a percentage of nothing is nothing: money must be paid on a qualifying line
        return any(line.money_minor > 0 for line in qualifying)
    return True
