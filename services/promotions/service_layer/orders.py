"""Order evaluation (read-only) and accrual (consumes budgets, credits Points through the outbox).

Budgets never over-issue under concurrent orders: accrual locks the rows of the campaigns in
force (`SELECT ... FOR UPDATE`, in campaign id order so two orders never deadlock) and the
customer's cashback month, evaluates against what is left, and moves `spent_points` with a
conditional `UPDATE ... WHERE spent_points + :x <= budget_points`, which a CHECK constraint backs
up. On SQLite every transaction takes the database write lock first, which serialises the same.
When a budget runs out the campaign pays what is left on the order that reaches it (the award is
marked capped) and nothing afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from sqlalchemy import Table, bindparam, or_, update
from sqlalchemy import select as core_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.dml import ReturningInsert
from sqlmodel import col, select

from services.promotions.adapters import points_peer
from services.promotions.adapters.tables import (
    CampaignCustomer,
    CampaignRow,
    CashbackMonth,
    CustomerFeaturesRow,
    EarningRuleRow,
    OrderAccrual,
)
from services.promotions.domain.catalogue import RuleType
from services.promotions.domain.earning import (
    AwardKind,
    CampaignOffer,
    CashbackOffer,
    Evaluation,
    Line,
    PromoReward,
    RateRule,
    cashback_rate,
    evaluate,
)
from services.promotions.domain.mechanics import Cashback, Mechanic
from services.promotions.domain.segments import Features, matches
from services.promotions.service_layer.catalogue import condition_of, split
from services.promotions.service_layer.mechanics import Mechanics
from shared.clock import Clock
from shared.db import UnitOfWork, rowcount
from shared.errors import AlreadyExists, Internal, InvalidArgument
from shared.outbox import Outbox
from shared.validation import validate_customer_id

MAX_ORDER_ID = 128
_accruals: Table = OrderAccrual.__table__  # type: ignore[attr-defined]
_rules: Table = EarningRuleRow.__table__  # type: ignore[attr-defined]

# The statements of the order path are built once, with bind parameters: building a SQLAlchemy
# construct costs more CPU than executing its cached compiled form.
_NOW = bindparam("now", type_=_rules.c.start_at.type)
_RULES_IN_FORCE = core_select(
    _rules.c.rule_id,
    _rules.c.name,
    _rules.c.type,
    _rules.c.rate_bps,
    _rules.c.category,
    _rules.c.min_order_minor,
).where(_rules.c.start_at <= _NOW, or_(_rules.c.end_at.is_(None), _rules.c.end_at > _NOW))
_RULE_KINDS = {
    RuleType.DEFAULT_RATE.value: AwardKind.DEFAULT_RATE,
    RuleType.CATEGORY_RATE.value: AwardKind.CATEGORY_RATE,
    RuleType.ORDER_AMOUNT_TIER.value: AwardKind.ORDER_AMOUNT_TIER,
}
_CAMPAIGNS_IN_FORCE = (
    select(CampaignRow)
    .where(
        CampaignRow.start_at <= _NOW,
        CampaignRow.end_at > _NOW,
        col(CampaignRow.spent_points) < col(CampaignRow.budget_points),
    )
    .order_by(col(CampaignRow.campaign_id))
)
_CAMPAIGNS_IN_FORCE_LOCKED = _CAMPAIGNS_IN_FORCE.with_for_update()


@cache
def _insert_accrual_statement(dialect: str) -> ReturningInsert[tuple[str]]:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(_accruals).on_conflict_do_nothing(index_elements=["order_id"]).returning(_accruals.c.order_id)


@dataclass(frozen=True)
class OrderInput:
    customer_id: str
    order_id: str
    lines: tuple[Line, ...]
    wallet_payment: bool
    wallet_balance_minor: int


@dataclass(frozen=True)
class Evaluated:
    evaluation: Evaluation
    mechanic: Mechanic | None  # set when it was asked for cashback


class Orders:
    def __init__(self, mechanics: Mechanics, outbox: Outbox, clock: Clock) -> None:
        self._mechanics = mechanics
        self._outbox = outbox
        self._clock = clock

    # --- what is in force -----------------------------------------------------------------

    @staticmethod
    def rules_in_force(uow: UnitOfWork, now: datetime) -> list[RateRule]:
        rows = uow.session.execute(_RULES_IN_FORCE, {"now": now}).all()
        return [
            RateRule(r.rule_id, r.name, _RULE_KINDS[r.type], r.rate_bps, r.category, r.min_order_minor) for r in rows
        ]

    @staticmethod
    def campaigns_for(uow: UnitOfWork, customer_id: str, now: datetime, *, lock: bool) -> list[CampaignRow]:
        query = _CAMPAIGNS_IN_FORCE_LOCKED if lock else _CAMPAIGNS_IN_FORCE
        rows = uow.session.exec(query, params={"now": now}).all()
        features: Features | None = None
        features_loaded = False
        chosen: list[CampaignRow] = []
        for row in rows:
            if row.segment_kind == "LIST":
                member = uow.session.exec(
                    select(CampaignCustomer.customer_id).where(
                        CampaignCustomer.campaign_id == row.campaign_id, CampaignCustomer.customer_id == customer_id
                    )
                ).first()
                if member is None:
                    continue
            elif row.segment_kind == "CONDITION":
                if not features_loaded:
                    features, features_loaded = _features(uow, customer_id), True
                if not matches(condition_of(row), features):
                    continue
            chosen.append(row)
        return chosen

    def _cashback(
        self, uow: UnitOfWork, order: OrderInput, now: datetime, *, lock: bool
    ) -> tuple[Mechanic | None, CashbackOffer | None]:
        if not order.wallet_payment:
            return None, None
        mechanic = self._mechanics.mechanic_for(uow.session, order.customer_id, now).mechanic
        if not isinstance(mechanic.kind, Cashback):
            return mechanic, None
        rate = cashback_rate(mechanic.kind.tiers, order.wallet_balance_minor)
        cap = mechanic.kind.monthly_cap_points
        remaining: int | None = None
        if cap:
            month = str(self._mechanics.calendar.month_of(now))
            paid = self._cashback_paid(uow, order.customer_id, month, lock=lock)
            remaining = max(cap - paid, 0)
        return mechanic, CashbackOffer(mechanic.code, rate, remaining)

    @staticmethod
    def _cashback_paid(uow: UnitOfWork, customer_id: str, month: str, *, lock: bool) -> int:
        query = select(CashbackMonth).where(CashbackMonth.customer_id == customer_id, CashbackMonth.month == month)
        if not lock:
            row = uow.session.exec(query).first()
            return row.paid_points if row is not None else 0
        if uow.session.exec(query).first() is None:
            try:
                with uow.session.begin_nested():
                    uow.session.add(CashbackMonth(customer_id=customer_id, month=month, paid_points=0))
            except IntegrityError:
                pass  # a concurrent order of the same customer created it
        row = uow.session.exec(query.with_for_update().execution_options(populate_existing=True)).one()
        return row.paid_points

    # --- use cases ------------------------------------------------------------------------

    def evaluate(self, uow: UnitOfWork, order: OrderInput, promo: PromoReward | None) -> Evaluated:
        """What the order would earn now. Reads only."""
        validate_customer_id(order.customer_id)
        now = self._clock.now()
        rules = self.rules_in_force(uow, now)
        campaigns = [offer(row) for row in self.campaigns_for(uow, order.customer_id, now, lock=False)]
        mechanic, cashback = self._cashback(uow, order, now, lock=False)
        return Evaluated(evaluate(order.lines, rules, campaigns, promo, cashback), mechanic)

    def accrue(self, uow: UnitOfWork, order: OrderInput) -> Evaluated:
        """Award the points of a paid order, once per order."""
        validate_customer_id(order.customer_id)
        if not order.order_id.strip() or len(order.order_id) > MAX_ORDER_ID:
            raise InvalidArgument.field(
                "order_id", f"is required, at most {MAX_ORDER_ID} characters", "ORDER_ID_REQUIRED"
            )
        if not order.lines:
            raise InvalidArgument.field("lines", "an order needs at least one line", "LINES_REQUIRED")
        now = self._clock.now()
        rules = self.rules_in_force(uow, now)
        rows = {row.campaign_id: row for row in self.campaigns_for(uow, order.customer_id, now, lock=True)}
        mechanic, cashback = self._cashback(uow, order, now, lock=True)
        evaluation = evaluate(order.lines, rules, [offer(row) for row in rows.values()], None, cashback)
        # The accrual row, with its total, is what makes an order's points awarded once: an order
        # accrued before (or by a concurrent request, which this insert waits for) inserts nothing,
        # and the error rolls back the transaction (nothing was spent or credited yet).
        if not _insert_accrual(uow, order, evaluation.total_points, now):
            raise AlreadyExists(
                "ORDER_ALREADY_ACCRUED",
                f"the points of order {order.order_id} were already awarded",
                metadata={"order_id": order.order_id},
            )
        for campaign_id, row in rows.items():
            paid = evaluation.points_of(AwardKind.CAMPAIGN, campaign_id)
            if paid <= 0:
                continue
            moved = uow.session.execute(
                update(CampaignRow)
                .where(
                    col(CampaignRow.campaign_id) == campaign_id,
                    col(CampaignRow.spent_points) + paid <= col(CampaignRow.budget_points),
                )
                .values(spent_points=col(CampaignRow.spent_points) + paid, updated_at=now)
            )
            if rowcount(moved) != 1:  # cannot happen under the row lock; refuse rather than over-issue
                raise Internal("CAMPAIGN_BUDGET_RACE", f"campaign {campaign_id} budget moved under a lock")
            expires = now + timedelta(seconds=row.lifetime_seconds) if row.lifetime_seconds else None
            self._credit(uow, order, f"campaign:{campaign_id}", paid, "CAMPAIGN", expires)
        cashback_points = evaluation.points_of(AwardKind.CASHBACK)
        if cashback_points > 0 and cashback is not None and cashback.remaining_cap is not None:
            month = str(self._mechanics.calendar.month_of(now))
            uow.session.execute(
                update(CashbackMonth)
                .where(col(CashbackMonth.customer_id) == order.customer_id, col(CashbackMonth.month) == month)
                .values(paid_points=col(CashbackMonth.paid_points) + cashback_points)
            )
        purchase = sum(
            evaluation.points_of(kind)
            for kind in (AwardKind.DEFAULT_RATE, AwardKind.CATEGORY_RATE, AwardKind.ORDER_AMOUNT_TIER)
        )
        self._credit(uow, order, "purchase", purchase, "PURCHASE", None)
        self._credit(uow, order, "cashback", cashback_points, "CASHBACK", None)
        return Evaluated(evaluation, mechanic)

    def _credit(
        self, uow: UnitOfWork, order: OrderInput, part: str, points: int, source: str, expires: datetime | None
    ) -> None:
        if points <= 0:
            return
        self._outbox.enqueue(
            uow,
            peer=points_peer.PEER,
            method=points_peer.CREDIT_POINTS,
            request=points_peer.order_credit(
                request_id=f"accrual:{order.order_id}:{part}",
                customer_id=order.customer_id,
                points=points,
                source=source,
                order_id=order.order_id,
                expires_at=expires,
            ),
        )


def _insert_accrual(uow: UnitOfWork, order: OrderInput, total_points: int, now: datetime) -> bool:
    """Insert the order's accrual unless the order has one; True when inserted. One statement,
    no savepoint: INSERT ... ON CONFLICT DO NOTHING (PostgreSQL and SQLite alike)."""
    inserted = uow.session.execute(
        _insert_accrual_statement(uow.session.get_bind().dialect.name),
        {"order_id": order.order_id, "customer_id": order.customer_id, "total_points": total_points, "created_at": now},
    )
    return inserted.first() is not None


def offer(row: CampaignRow) -> CampaignOffer:
    return CampaignOffer(
        campaign_id=row.campaign_id,
        name=row.name,
        categories=frozenset(split(row.categories)),
        multiplier_bps=row.multiplier_bps,
        bonus_points=row.bonus_points,
        remaining_budget=max(row.budget_points - row.spent_points, 0),
        min_order_minor=row.min_order_minor,
    )


def _features(uow: UnitOfWork, customer_id: str) -> Features | None:
    row = uow.session.exec(
        select(CustomerFeaturesRow)
        .where(CustomerFeaturesRow.customer_id == customer_id)
        .order_by(col(CustomerFeaturesRow.as_of).desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return Features(
        row.average_order_value_minor, row.order_count, row.uses_financial_products, row.takes_part_in_points_activities
    )


def lines_total(lines: Sequence[Line]) -> int:
    return sum(line.amount_minor for line in lines)
