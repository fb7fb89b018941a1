"""Purchase earning: how many points an order earns, line by line, with the explanation.

Everything here is pure: the caller loads the rules, campaigns, promo code and mechanic in force
and gets back an `Evaluation` whose awards add up exactly to its total.

Arithmetic is integer only. A rate in basis points applied to a money base in kopecks gives
`base_minor * rate_bps // 1_000_000` whole points (100 bps on 100.00 RUB = 10000 kopecks is one
point), rounded down per award. Because every award is rounded down on its own and the total is
the sum of the awards, the explanation always adds up to the total.

Points are earned on the part of a line paid with money (`money_minor`), never on the part paid
with points. Order-amount tiers and minimum order amounts look at the order at catalogue prices
(the sum of `amount_minor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

BPS = 10_000
KOPECKS_PER_ROUBLE = 100
UNIT = BPS * KOPECKS_PER_ROUBLE  # kopecks x bps per point


class AwardKind(StrEnum):
    DEFAULT_RATE = "DEFAULT_RATE"
    CATEGORY_RATE = "CATEGORY_RATE"
    ORDER_AMOUNT_TIER = "ORDER_AMOUNT_TIER"
    CAMPAIGN = "CAMPAIGN"
    PROMO_CODE = "PROMO_CODE"
    CASHBACK = "CASHBACK"


def points_at(base_minor: int, rate_bps: int) -> int:
    """Whole points a rate gives on a money base, rounded down."""
    return base_minor * rate_bps // UNIT


def rubles(minor: int) -> str:
    return f"{minor // KOPECKS_PER_ROUBLE:,}.{minor % KOPECKS_PER_ROUBLE:02d} RUB"


def percent(bps: int) -> str:
    whole, rest = divmod(bps, 100)
    return f"{whole} %" if rest == 0 else f"{whole}.{rest:02d}".rstrip("0") + " %"


@dataclass(frozen=True)
class Line:
    line_id: str
    category: str
    amount_minor: int  # at catalogue prices
    money_minor: int  # the part paid with money: the base of rate awards


@dataclass(frozen=True)
class RateRule:
    """An earning rule in force: DEFAULT_RATE, CATEGORY_RATE or ORDER_AMOUNT_TIER."""

    rule_id: str
    name: str
    kind: AwardKind
    rate_bps: int
    category: str = ""
    min_order_minor: int = 0


@dataclass(frozen=True)
class CampaignOffer:
    """A campaign in force for this customer, with what is left of its budget."""

    campaign_id: str
    name: str
    categories: frozenset[str]
    multiplier_bps: int  # 0 when the campaign pays a fixed bonus
    bonus_points: int
    remaining_budget: int
    min_order_minor: int = 0

    def covers(self, line: Line) -> bool:
        return not self.categories or line.category in self.categories


@dataclass(frozen=True)
class PromoReward:
    """What a valid promo code pays: fixed points per use or a percentage of qualifying money."""

    code: str
    fixed_points: int
    percent_bps: int
    max_points_per_use: int  # 0: no cap
    categories: frozenset[str]
    remaining_budget: int | None  # None: no budget

    def covers(self, line: Line) -> bool:
        return not self.categories or line.category in self.categories


@dataclass(frozen=True)
class CashbackOffer:
    """Cashback of the customer's mechanic: the rate of the balance tier, what the monthly cap leaves."""

    mechanic_code: str
    rate_bps: int
    remaining_cap: int | None  # None: no cap


@dataclass(frozen=True)
class Award:
    kind: AwardKind
    rule_id: str
    line_id: str
    base_minor: int
    rate_bps: int
    points: int
    capped: bool
    description: str


@dataclass(frozen=True)
class LineResult:
    line_id: str
    awards: tuple[Award, ...]

    @property
    def points(self) -> int:
        return sum(a.points for a in self.awards)


@dataclass(frozen=True)
class Evaluation:
    lines: tuple[LineResult, ...]
    order_awards: tuple[Award, ...]

    @property
    def awards(self) -> list[Award]:
        return [a for line in self.lines for a in line.awards] + list(self.order_awards)

    @property
    def total_points(self) -> int:
        return sum(a.points for a in self.awards)

    def points_of(self, kind: AwardKind, rule_id: str | None = None) -> int:
        return sum(a.points for a in self.awards if a.kind is kind and (rule_id is None or a.rule_id == rule_id))


def order_amount(lines: Sequence[Line]) -> int:
    return sum(line.amount_minor for line in lines)


def line_rate(line: Line, rules: Sequence[RateRule]) -> RateRule | None:
    """The category's own rule, else the default rule; None when neither exists.

    Several rules for one category (overlapping windows) resolve to the highest rate, then the
    smallest rule id, so the choice never depends on load order."""
    own = [r for r in rules if r.kind is AwardKind.CATEGORY_RATE and r.category == line.category]
    if own:
        return _best(own)
    defaults = [r for r in rules if r.kind is AwardKind.DEFAULT_RATE]
    return _best(defaults) if defaults else None


def order_tier(total_minor: int, rules: Sequence[RateRule]) -> RateRule | None:
    """The tier with the highest threshold not above the order amount."""
    eligible = [r for r in rules if r.kind is AwardKind.ORDER_AMOUNT_TIER and r.min_order_minor <= total_minor]
    if not eligible:
        return None
    return min(eligible, key=lambda r: (-r.min_order_minor, -r.rate_bps, r.rule_id))


def _best(rules: Sequence[RateRule]) -> RateRule:
    return min(rules, key=lambda r: (-r.rate_bps, r.rule_id))


class _Budget:
    """What is left of one budget while the awards of an order are cut from it."""

    def __init__(self, remaining: int | None) -> None:
        self.remaining = remaining

    def take(self, wanted: int) -> tuple[int, bool]:
        if self.remaining is None:
            return wanted, False
        given = min(wanted, self.remaining)
        self.remaining -= given
        return given, given < wanted


def evaluate(
    lines: Sequence[Line],
    rules: Sequence[RateRule],
    campaigns: Sequence[CampaignOffer] = (),
    promo: PromoReward | None = None,
    cashback: CashbackOffer | None = None,
) -> Evaluation:
    """Points of an order, per line and per order, each award explained.

    Order of the awards on a line: base rate (category or default), order-amount tier, campaign
    multipliers (in campaign id order), promo code percentage, cashback. Budgets and caps are
    consumed in that order, line by line; an award cut by a budget is marked `capped`, and a
    campaign or code whose budget is used up pays nothing more (no zero awards are listed).
    """
    total = order_amount(lines)
    tier = order_tier(total, rules)
    offers = sorted((c for c in campaigns if total >= c.min_order_minor), key=lambda c: c.campaign_id)
    campaign_budgets = {c.campaign_id: _Budget(c.remaining_budget) for c in offers}
    promo_budget = _Budget(promo.remaining_budget) if promo is not None else _Budget(None)
    per_use = _Budget(promo.max_points_per_use or None) if promo is not None else _Budget(None)
    cap = _Budget(cashback.remaining_cap if cashback is not None else None)

    results: list[LineResult] = []
    for line in lines:
        awards: list[Award] = []
        money = line.money_minor
        base = line_rate(line, rules)
        base_rate = base.rate_bps if base is not None else 0
        if base is not None:
            points = points_at(money, base.rate_bps)
            awards.append(
                Award(base.kind, base.rule_id, line.line_id, money, base.rate_bps, points, False,
                      f"{base.name}: {percent(base.rate_bps)} on {rubles(money)}")
            )  # fmt: skip
        if tier is not None:
            awards.append(
                Award(AwardKind.ORDER_AMOUNT_TIER, tier.rule_id, line.line_id, money, tier.rate_bps,
                      points_at(money, tier.rate_bps), False,
                      f"{tier.name}: +{percent(tier.rate_bps)} on {rubles(money)} "
                      f"(order from {rubles(tier.min_order_minor)})")
            )  # fmt: skip
        for offer in offers:
            if offer.multiplier_bps <= BPS or not offer.covers(line):
                continue
            wanted = money * base_rate * (offer.multiplier_bps - BPS) // (UNIT * BPS)
            given, capped = campaign_budgets[offer.campaign_id].take(wanted)
            if given > 0:
                extra_rate = base_rate * (offer.multiplier_bps - BPS) // BPS
                awards.append(
                    Award(AwardKind.CAMPAIGN, offer.campaign_id, line.line_id, money, extra_rate, given, capped,
                          f"{offer.name}: base points x {_multiplier(offer.multiplier_bps)}"
                          + (" (cut by the campaign budget)" if capped else ""))
                )  # fmt: skip
        if promo is not None and promo.percent_bps > 0 and promo.covers(line):
            wanted = points_at(money, promo.percent_bps)
            given, cut_use = per_use.take(wanted)
            given, cut_budget = promo_budget.take(given)
            if given > 0:
                awards.append(
                    Award(AwardKind.PROMO_CODE, promo.code, line.line_id, money, promo.percent_bps, given,
                          cut_use or cut_budget,
                          f"Promo code {promo.code}: {percent(promo.percent_bps)} on {rubles(money)}")
                )  # fmt: skip
        if cashback is not None and cashback.rate_bps > 0:
            given, capped = cap.take(points_at(money, cashback.rate_bps))
            if given > 0:
                awards.append(
                    Award(AwardKind.CASHBACK, cashback.mechanic_code, line.line_id, money, cashback.rate_bps, given,
                          capped, f"Wallet cashback {percent(cashback.rate_bps)} on {rubles(money)}"
                          + (" (cut by the monthly cap)" if capped else ""))
                )  # fmt: skip
        results.append(LineResult(line.line_id, tuple(awards)))

    order_awards: list[Award] = []
    for offer in offers:
        if offer.bonus_points <= 0 or not any(offer.covers(line) for line in lines):
            continue
        given, capped = campaign_budgets[offer.campaign_id].take(offer.bonus_points)
        if given > 0:
            order_awards.append(
                Award(AwardKind.CAMPAIGN, offer.campaign_id, "", 0, 0, given, capped,
                      f"{offer.name}: bonus {offer.bonus_points} points"
                      + (" (cut by the campaign budget)" if capped else ""))
            )  # fmt: skip
    if promo is not None and promo.fixed_points > 0:
        given, capped = promo_budget.take(promo.fixed_points)
        if given > 0:
            order_awards.append(
                Award(AwardKind.PROMO_CODE, promo.code, "", 0, 0, given, capped,
                      f"Promo code {promo.code}: {promo.fixed_points} points")
            )  # fmt: skip
    return Evaluation(tuple(results), tuple(order_awards))


def _multiplier(bps: int) -> str:
    whole, rest = divmod(bps, BPS)
    return str(whole) if rest == 0 else f"{whole}.{rest:04d}".rstrip("0")


def cashback_rate(tiers: Sequence[tuple[int, int]], balance_minor: int) -> int:
    """The rate of the tier with the highest minimum balance not above the balance; 0 below all."""
    eligible = [(minimum, rate) for minimum, rate in tiers if minimum <= balance_minor]
    return max(eligible)[1] if eligible else 0
