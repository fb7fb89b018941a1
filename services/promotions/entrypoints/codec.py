"""Conversions between the PromotionsService messages and the domain of Promotions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from loyalty.common.v1 import earning_pb2, mechanic_pb2
from loyalty.promotions.v1 import promotions_pb2

from services.promotions.adapters.tables import CampaignRow, EarningRuleRow, PromoCodeRow, PromoReservationRow
from services.promotions.domain.catalogue import CampaignSpec, CodeSpec, RuleSpec, RuleType, Status, normalise_code
from services.promotions.domain.earning import Award, AwardKind, Evaluation, Line
from services.promotions.domain.mechanics import Cashback, Interest, InterestBasis, Mechanic
from services.promotions.domain.segments import Condition
from services.promotions.service_layer.catalogue import split
from services.promotions.service_layer.promo_usage import awards_from_json
from shared.errors import InvalidArgument
from shared.protoconv import enum_from_proto, enum_to_proto, money, money_minor, optional_timestamp, to_timestamp

S = TypeVar("S")
MAX_LINES = 1000
MAX_LINE_ID = 128


# --- values ---------------------------------------------------------------------------------


def duration_seconds(message: Any, field: str, name: str) -> int | None:
    if not message.HasField(name):
        return None
    value: Duration = getattr(message, name)
    if value.seconds <= 0:
        raise InvalidArgument.field(f"{field}.{name}", "must be positive", "INVALID_LIFETIME")
    return int(value.seconds)


def duration(seconds: int | None) -> Duration | None:
    return Duration(seconds=seconds) if seconds else None


def lines_from(messages: Sequence[promotions_pb2.OrderLine], field: str = "lines") -> tuple[Line, ...]:
    if len(messages) > MAX_LINES:
        raise InvalidArgument.field(field, f"at most {MAX_LINES} lines", "TOO_MANY_LINES")
    lines: list[Line] = []
    seen: set[str] = set()
    for index, message in enumerate(messages):
        where = f"{field}[{index}]"
        line_id = message.line_id or message.sku
        if not line_id.strip() or len(line_id) > MAX_LINE_ID:
            raise InvalidArgument.field(
                f"{where}.line_id", f"is required, at most {MAX_LINE_ID} characters", "LINE_ID_REQUIRED"
            )
        if line_id in seen:
            raise InvalidArgument.field(f"{where}.line_id", f"{line_id!r} appears twice", "DUPLICATE_LINE_ID")
        seen.add(line_id)
        amount = money_minor(message.amount, f"{where}.amount")
        paid = money_minor(message.money_amount, f"{where}.money_amount")
        if paid > amount:
            raise InvalidArgument.field(
                f"{where}.money_amount", "must not be more than the line amount", "MONEY_AMOUNT_EXCEEDS_AMOUNT"
            )
        if message.quantity < 0:
            raise InvalidArgument.field(f"{where}.quantity", "must not be negative", "INVALID_QUANTITY")
        lines.append(Line(line_id, message.category, amount, paid))
    return tuple(lines)


def status_proto(status: Status) -> Any:
    return enum_to_proto(promotions_pb2.RuleStatus, status)


def statuses_from(values: Iterable[int]) -> set[Status]:
    return {enum_from_proto(promotions_pb2.RuleStatus, v, Status, "statuses") for v in values}


def _set_time(message: Any, name: str, at: datetime | None) -> None:
    if at is not None:
        getattr(message, name).CopyFrom(to_timestamp(at))


def mask_paths(mask: FieldMask, allowed: set[str]) -> set[str]:
    paths = {p for raw in mask.paths for p in raw.split(",") if p}
    if not paths:
        raise InvalidArgument.field("update_mask", "name the fields to change", "UPDATE_MASK_REQUIRED")
    unknown = paths - allowed
    if unknown:
        raise InvalidArgument.field(
            "update_mask", f"cannot change {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}",
            "UPDATE_MASK_INVALID",
        )  # fmt: skip
    return paths


def apply_mask(current: S, new: S, paths: set[str], fields: dict[str, str]) -> S:
    """`current` with the dataclass fields named by the mask paths taken from `new`."""
    changes = {fields[path]: getattr(new, fields[path]) for path in paths}
    return replace(current, **changes)  # type: ignore[type-var]


# --- earning rules --------------------------------------------------------------------------

RULE_FIELDS = {
    "name": "name",
    "category": "category",
    "rate_bps": "rate_bps",
    "min_order_amount": "min_order_minor",
    "start_time": "start_at",
    "end_time": "end_at",
}


def rule_spec_from(message: promotions_pb2.EarningRule, now: datetime) -> RuleSpec:
    return RuleSpec(
        name=message.name,
        type=enum_from_proto(promotions_pb2.EarningRuleType, message.type, RuleType, "rule.type"),
        category=message.category,
        rate_bps=message.rate_bps,
        min_order_minor=money_minor(message.min_order_amount, "rule.min_order_amount"),
        start_at=optional_timestamp(message, "start_time") or now,
        end_at=optional_timestamp(message, "end_time"),
    )


def rule_to_proto(row: EarningRuleRow, status: Status) -> promotions_pb2.EarningRule:
    message = promotions_pb2.EarningRule(
        rule_id=row.rule_id,
        name=row.name,
        type=enum_to_proto(promotions_pb2.EarningRuleType, RuleType(row.type)),
        category=row.category,
        rate_bps=row.rate_bps,
        status=status_proto(status),
        create_time=to_timestamp(row.created_at),
        update_time=to_timestamp(row.updated_at),
        start_time=to_timestamp(row.start_at),
    )
    if row.min_order_minor:
        message.min_order_amount.CopyFrom(money(row.min_order_minor))
    _set_time(message, "end_time", row.end_at)
    return message


# --- campaigns ------------------------------------------------------------------------------

CAMPAIGN_FIELDS = {
    "name": "name",
    "description": "description",
    "start_time": "start_at",
    "end_time": "end_at",
    "categories": "categories",
    "multiplier_bps": "multiplier_bps",
    "bonus_points": "bonus_points",
    "budget_points": "budget_points",
    "min_order_amount": "min_order_minor",
    "points_lifetime": "lifetime_seconds",
}
SEGMENT_PATHS = {"segment"}
CONDITION_FIELDS = (
    "min_average_order_value_minor",
    "max_average_order_value_minor",
    "min_order_count",
    "max_order_count",
    "uses_financial_products",
    "takes_part_in_points_activities",
)


def campaign_spec_from(message: promotions_pb2.Campaign) -> CampaignSpec:
    segment_kind, condition = "", Condition()
    customers: tuple[str, ...] = ()
    which = message.segment.WhichOneof("segment") if message.HasField("segment") else None
    if which == "customers":
        segment_kind, customers = "LIST", tuple(message.segment.customers.customer_ids)
        for customer_id in customers:
            if not customer_id.strip() or len(customer_id) > 64:
                raise InvalidArgument.field(
                    "campaign.segment.customers", "customer ids are 1 to 64 characters", "INVALID_CUSTOMER_ID"
                )
    elif which == "condition":
        c = message.segment.condition
        segment_kind = "CONDITION"
        condition = Condition(
            **{name: getattr(c, name) if c.HasField(name) else None for name in CONDITION_FIELDS}  # type: ignore[arg-type]
        )
    reward = message.WhichOneof("reward")
    return CampaignSpec(
        name=message.name,
        description=message.description,
        start_at=optional_timestamp(message, "start_time"),
        end_at=optional_timestamp(message, "end_time"),
        categories=tuple(message.categories),
        segment_kind=segment_kind,
        customers=customers,
        condition=condition,
        multiplier_bps=message.multiplier_bps if reward == "multiplier_bps" else 0,
        bonus_points=message.bonus_points if reward == "bonus_points" else 0,
        budget_points=message.budget_points,
        min_order_minor=money_minor(message.min_order_amount, "campaign.min_order_amount"),
        lifetime_seconds=duration_seconds(message, "campaign", "points_lifetime"),
    )


def campaign_to_proto(row: CampaignRow, spec: CampaignSpec, status: Status) -> promotions_pb2.Campaign:
    message = promotions_pb2.Campaign(
        campaign_id=row.campaign_id,
        name=row.name,
        description=row.description,
        start_time=to_timestamp(row.start_at),
        end_time=to_timestamp(row.end_at),
        categories=split(row.categories),
        budget_points=row.budget_points,
        budget_used_points=row.spent_points,
        status=status_proto(status),
        create_time=to_timestamp(row.created_at),
        update_time=to_timestamp(row.updated_at),
    )
    if row.multiplier_bps:
        message.multiplier_bps = row.multiplier_bps
    else:
        message.bonus_points = row.bonus_points
    if spec.segment_kind == "LIST":
        message.segment.customers.customer_ids.extend(spec.customers)
    elif spec.segment_kind == "CONDITION":
        condition = message.segment.condition
        condition.SetInParent()
        for name in CONDITION_FIELDS:
            value = getattr(spec.condition, name)
            if value is not None:
                setattr(condition, name, value)
    if row.min_order_minor:
        message.min_order_amount.CopyFrom(money(row.min_order_minor))
    lifetime = duration(row.lifetime_seconds)
    if lifetime is not None:
        message.points_lifetime.CopyFrom(lifetime)
    return message


# --- promo codes ----------------------------------------------------------------------------

CODE_FIELDS = {
    "description": "description",
    "fixed_points": "fixed_points",
    "percent_bps": "percent_bps",
    "max_points_per_use": "max_points_per_use",
    "start_time": "start_at",
    "end_time": "end_at",
    "per_customer_limit": "per_customer_limit",
    "usage_limit": "usage_limit",
    "budget_points": "budget_points",
    "min_order_amount": "min_order_minor",
    "categories": "categories",
    "points_lifetime": "lifetime_seconds",
}
REWARD_PATHS = {"fixed_points", "percent_bps"}


def code_spec_from(message: promotions_pb2.PromoCode, now: datetime) -> CodeSpec:
    reward = message.WhichOneof("reward")
    return CodeSpec(
        code=normalise_code(message.code),
        description=message.description,
        fixed_points=message.fixed_points if reward == "fixed_points" else 0,
        percent_bps=message.percent_bps if reward == "percent_bps" else 0,
        max_points_per_use=message.max_points_per_use,
        start_at=optional_timestamp(message, "start_time") or now,
        end_at=optional_timestamp(message, "end_time"),
        per_customer_limit=message.per_customer_limit,
        usage_limit=message.usage_limit,
        budget_points=message.budget_points,
        min_order_minor=money_minor(message.min_order_amount, "promo_code.min_order_amount"),
        categories=tuple(message.categories),
        lifetime_seconds=duration_seconds(message, "promo_code", "points_lifetime"),
    )


def code_to_proto(row: PromoCodeRow, status: Status) -> promotions_pb2.PromoCode:
    message = promotions_pb2.PromoCode(
        code=row.code,
        description=row.description,
        max_points_per_use=row.max_points_per_use,
        start_time=to_timestamp(row.start_at),
        per_customer_limit=row.per_customer_limit,
        usage_limit=row.usage_limit,
        used_count=row.used_count,
        reserved_count=row.reserved_count,
        budget_points=row.budget_points,
        budget_used_points=row.budget_used_points,
        categories=split(row.categories),
        status=status_proto(status),
        create_time=to_timestamp(row.created_at),
        update_time=to_timestamp(row.updated_at),
    )
    if row.percent_bps:
        message.percent_bps = row.percent_bps
    else:
        message.fixed_points = row.fixed_points
    _set_time(message, "end_time", row.end_at)
    if row.min_order_minor:
        message.min_order_amount.CopyFrom(money(row.min_order_minor))
    lifetime = duration(row.lifetime_seconds)
    if lifetime is not None:
        message.points_lifetime.CopyFrom(lifetime)
    return message


def reservation_to_proto(row: PromoReservationRow) -> promotions_pb2.PromoCodeReservation:
    return promotions_pb2.PromoCodeReservation(
        reservation_id=row.reservation_id,
        code=row.code,
        customer_id=row.customer_id,
        order_id=row.order_id,
        points=row.points,
        status=getattr(promotions_pb2, f"RESERVATION_STATUS_{row.status}"),
        expire_time=to_timestamp(row.expire_at),
        create_time=to_timestamp(row.created_at),
        update_time=to_timestamp(row.updated_at),
        awards=[award_to_proto(a) for a in awards_from_json(row.awards)],
    )


# --- evaluation -----------------------------------------------------------------------------


def award_to_proto(award: Award) -> earning_pb2.PointsAward:
    return earning_pb2.PointsAward(
        kind=enum_to_proto(earning_pb2.AwardKind, award.kind),
        rule_id=award.rule_id,
        line_id=award.line_id,
        base_minor=award.base_minor,
        rate_bps=award.rate_bps,
        points=award.points,
        capped=award.capped,
        description=award.description,
    )


def evaluation_to_proto(evaluation: Evaluation, mechanic: Mechanic | None) -> promotions_pb2.OrderEvaluation:
    message = promotions_pb2.OrderEvaluation(
        lines=[
            promotions_pb2.LineEvaluation(
                line_id=line.line_id, points=line.points, awards=[award_to_proto(a) for a in line.awards]
            )
            for line in evaluation.lines
        ],
        order_awards=[award_to_proto(a) for a in evaluation.order_awards],
        total_points=evaluation.total_points,
    )
    if mechanic is not None:
        message.mechanic.CopyFrom(mechanic_to_proto(mechanic))
    return message


# --- mechanics ------------------------------------------------------------------------------


def mechanic_to_proto(mechanic: Mechanic) -> mechanic_pb2.Mechanic:
    if isinstance(mechanic.kind, Interest):
        return mechanic_pb2.Mechanic(
            code=mechanic.code,
            name=mechanic.name,
            interest=mechanic_pb2.InterestMechanic(
                apr_bps=mechanic.kind.apr_bps, basis=enum_to_proto(mechanic_pb2.BalanceBasis, mechanic.kind.basis)
            ),
        )
    return mechanic_pb2.Mechanic(
        code=mechanic.code,
        name=mechanic.name,
        cashback=mechanic_pb2.CashbackMechanic(
            tiers=[mechanic_pb2.CashbackTier(min_balance_minor=m, rate_bps=r) for m, r in mechanic.kind.tiers],
            monthly_cap_points=mechanic.kind.monthly_cap_points,
        ),
    )


def mechanic_from_proto(message: mechanic_pb2.Mechanic, field: str = "mechanic") -> Mechanic:
    kind = message.WhichOneof("kind")
    if kind == "interest":
        basis = enum_from_proto(
            mechanic_pb2.BalanceBasis, message.interest.basis, InterestBasis, f"{field}.interest.basis"
        )
        apr = message.interest.apr_bps
        words = "average" if basis is InterestBasis.AVERAGE_DAILY else "minimum"
        return Mechanic(
            code=message.code or f"interest-{apr}-{words}",
            name=message.name or f"Interest {apr} bps a year on the {words} daily balance",
            kind=Interest(apr, basis),
        )
    if kind == "cashback":
        tiers = tuple(sorted((t.min_balance_minor, t.rate_bps) for t in message.cashback.tiers))
        rates = "-".join(str(rate) for _, rate in tiers)
        return Mechanic(
            code=message.code or f"cashback-{rates}",
            name=message.name or "Cashback on purchases paid from the wallet",
            kind=Cashback(tiers, message.cashback.monthly_cap_points),
        )
    raise InvalidArgument.field(field, "must be an interest or a cashback mechanic", "MECHANIC_REQUIRED")


def listing(rows: Iterable[Any], convert: Callable[[Any], Any]) -> list[Any]:
    return [convert(row) for row in rows]


KIND_NAMES = {kind: kind.value for kind in AwardKind}
