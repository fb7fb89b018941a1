"""Operator use cases: create, read, list, update and end earning rules, campaigns and promo codes."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, delete, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from services.promotions.adapters.tables import (
    CampaignCustomer,
    CampaignRow,
    EarningRuleRow,
    ExperimentRow,
    PromoCodeRow,
)
from services.promotions.domain.catalogue import (
    CampaignSpec,
    CodeSpec,
    RuleSpec,
    RuleType,
    Status,
    overlaps,
    status_of,
    validate_campaign,
    validate_code,
    validate_rule,
)
from services.promotions.domain.segments import Condition
from shared.clock import Clock
from shared.db import UnitOfWork
from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from shared.ids import new_id
from shared.pagination import decode_token, encode_token

Row = TypeVar("Row", EarningRuleRow, CampaignRow, PromoCodeRow, ExperimentRow)
CHUNK = 500


def rule_status(row: EarningRuleRow, now: datetime) -> Status:
    return status_of(now, row.start_at, row.end_at)


def campaign_status(row: CampaignRow, now: datetime) -> Status:
    return status_of(now, row.start_at, row.end_at, exhausted=row.spent_points >= row.budget_points)


def code_status(row: PromoCodeRow, now: datetime) -> Status:
    exhausted = (row.usage_limit > 0 and row.used_count + row.reserved_count >= row.usage_limit) or (
        row.budget_points > 0 and row.budget_used_points >= row.budget_points
    )
    return status_of(now, row.start_at, row.end_at, exhausted=exhausted)


def split(text: str) -> tuple[str, ...]:
    return tuple(text.split("\n")) if text else ()


def join(items: Collection[str]) -> str:
    return "\n".join(sorted(set(items)))


def page_of(
    uow: UnitOfWork,
    model: type[Row],
    key: str,
    listing: str,
    size: int,
    token: str,
    keep: Callable[[Row], bool],
) -> tuple[list[Row], str]:
    """Newest first by (created_at, id), keyset-paginated. `keep` filters (by status, which
    depends on the clock) in Python, reading on in chunks until the page is full."""
    after = decode_token(listing, token, (str, str))
    created, ident = getattr(model, "created_at"), getattr(model, key)  # noqa: B009
    found: list[Row] = []
    while True:
        query = select(model).order_by(col(created).desc(), col(ident).desc()).limit(CHUNK)
        if after is not None:
            try:
                at = datetime.fromisoformat(after[0])
            except ValueError:
                raise InvalidArgument.field(
                    "page_token", "is not a page token of this list", "INVALID_PAGE_TOKEN"
                ) from None
            query = query.where(or_(col(created) < at, and_(col(created) == at, col(ident) < after[1])))
        rows = list(uow.session.exec(query).all())
        for row in rows:
            if keep(row):
                found.append(row)
                if len(found) > size:
                    last = found[size - 1]
                    return found[:size], encode_token(listing, [last.created_at.isoformat(), getattr(last, key)])
        if len(rows) < CHUNK:
            return found, ""
        after = [rows[-1].created_at.isoformat(), getattr(rows[-1], key)]


class Catalogue:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    # --- earning rules --------------------------------------------------------------------

    def rule(self, uow: UnitOfWork, rule_id: str, *, lock: bool = False) -> EarningRuleRow:
        query = select(EarningRuleRow).where(EarningRuleRow.rule_id == rule_id)
        row = uow.session.exec(query.with_for_update() if lock else query).first()
        if row is None:
            raise NotFound("EARNING_RULE_NOT_FOUND", f"no earning rule {rule_id!r}", metadata={"rule_id": rule_id})
        return row

    def _check_default_overlap(self, uow: UnitOfWork, spec: RuleSpec, own_id: str) -> None:
        if spec.type is not RuleType.DEFAULT_RATE:
            return
        others = uow.session.exec(
            select(EarningRuleRow)
            .where(EarningRuleRow.type == RuleType.DEFAULT_RATE.value, EarningRuleRow.rule_id != own_id)
            .with_for_update()
        ).all()
        for other in others:
            if overlaps(spec.start_at, spec.end_at, other.start_at, other.end_at):
                raise FailedPrecondition(
                    "DEFAULT_RATE_EXISTS",
                    f"default rule {other.rule_id} already covers the window; end it first",
                    metadata={"rule_id": other.rule_id},
                )

    def create_rule(self, uow: UnitOfWork, spec: RuleSpec) -> EarningRuleRow:
        validate_rule(spec)
        self._check_default_overlap(uow, spec, "")
        now = self._clock.now()
        row = EarningRuleRow(rule_id=new_id(), ended=False, created_at=now, updated_at=now, **_rule_fields(spec))
        uow.session.add(row)
        uow.flush()
        return row

    def update_rule(self, uow: UnitOfWork, rule_id: str, change: Callable[[RuleSpec], RuleSpec]) -> EarningRuleRow:
        row = self.rule(uow, rule_id, lock=True)
        now = self._clock.now()
        if rule_status(row, now) is Status.ENDED:
            raise FailedPrecondition("EARNING_RULE_ENDED", f"earning rule {rule_id} has ended")
        spec = change(rule_spec(row))
        if spec.type.value != row.type:
            raise InvalidArgument.field("update_mask", "the type of a rule cannot change", "IMMUTABLE_FIELD")
        validate_rule(spec)
        self._check_default_overlap(uow, spec, row.rule_id)
        for name, value in _rule_fields(spec).items():
            setattr(row, name, value)
        row.updated_at = now
        uow.session.add(row)
        uow.flush()
        return row

    def end_rule(self, uow: UnitOfWork, rule_id: str, end_at: datetime | None) -> EarningRuleRow:
        row = self.rule(uow, rule_id, lock=True)
        now = self._clock.now()
        if rule_status(row, now) is Status.ENDED:
            raise FailedPrecondition("EARNING_RULE_ENDED", f"earning rule {rule_id} has ended")
        row.end_at, row.ended, row.updated_at = self._end_time(row.start_at, end_at, now, "end_time"), True, now
        uow.session.add(row)
        uow.flush()
        return row

    @staticmethod
    def _end_time(start_at: datetime, end_at: datetime | None, now: datetime, field: str) -> datetime:
        end = end_at or now
        if end < start_at:
            end = start_at  # ending a scheduled item before it starts: it never applies
        if end_at is not None and end_at < start_at:
            raise InvalidArgument.field(field, "must not be before the start time", "WINDOW_ENDS_BEFORE_START")
        return end

    # --- campaigns ------------------------------------------------------------------------

    def campaign(self, uow: UnitOfWork, campaign_id: str, *, lock: bool = False) -> CampaignRow:
        query = select(CampaignRow).where(CampaignRow.campaign_id == campaign_id)
        row = uow.session.exec(query.with_for_update() if lock else query).first()
        if row is None:
            raise NotFound("CAMPAIGN_NOT_FOUND", f"no campaign {campaign_id!r}", metadata={"campaign_id": campaign_id})
        return row

    def customers_of(self, uow: UnitOfWork, campaign_id: str) -> tuple[str, ...]:
        rows = uow.session.exec(
            select(CampaignCustomer.customer_id)
            .where(CampaignCustomer.campaign_id == campaign_id)
            .order_by(col(CampaignCustomer.customer_id))
        ).all()
        return tuple(rows)

    def create_campaign(self, uow: UnitOfWork, spec: CampaignSpec) -> CampaignRow:
        validate_campaign(spec)
        now = self._clock.now()
        row = CampaignRow(
            campaign_id=new_id(), spent_points=0, ended=False, created_at=now, updated_at=now,
            **_campaign_fields(spec),
        )  # fmt: skip
        uow.session.add(row)
        self._write_customers(uow, row.campaign_id, spec)
        uow.flush()
        return row

    def _write_customers(self, uow: UnitOfWork, campaign_id: str, spec: CampaignSpec) -> None:
        uow.session.execute(delete(CampaignCustomer).where(col(CampaignCustomer.campaign_id) == campaign_id))
        for customer_id in sorted(set(spec.customers)):
            uow.session.add(CampaignCustomer(campaign_id=campaign_id, customer_id=customer_id))

    def update_campaign(
        self, uow: UnitOfWork, campaign_id: str, change: Callable[[CampaignSpec], CampaignSpec], segment_changed: bool
    ) -> CampaignRow:
        row = self.campaign(uow, campaign_id, lock=True)
        now = self._clock.now()
        if campaign_status(row, now) is Status.ENDED:
            raise FailedPrecondition("CAMPAIGN_ENDED", f"campaign {campaign_id} has ended")
        spec = change(self.campaign_spec(uow, row))
        validate_campaign(spec)
        if spec.budget_points < row.spent_points:
            raise FailedPrecondition(
                "BUDGET_BELOW_USED",
                f"the budget cannot go below the {row.spent_points} points already paid",
                metadata={"budget_used_points": str(row.spent_points)},
            )
        for name, value in _campaign_fields(spec).items():
            setattr(row, name, value)
        row.updated_at = now
        uow.session.add(row)
        if segment_changed:
            self._write_customers(uow, campaign_id, spec)
        uow.flush()
        return row

    def end_campaign(self, uow: UnitOfWork, campaign_id: str, end_at: datetime | None) -> CampaignRow:
        row = self.campaign(uow, campaign_id, lock=True)
        now = self._clock.now()
        if campaign_status(row, now) is Status.ENDED:
            raise FailedPrecondition("CAMPAIGN_ENDED", f"campaign {campaign_id} has ended")
        if end_at is not None and end_at > row.end_at:
            raise InvalidArgument.field("end_time", "must not be after the campaign's end", "END_TIME_AFTER_END")
        row.end_at, row.ended, row.updated_at = self._end_time(row.start_at, end_at, now, "end_time"), True, now
        uow.session.add(row)
        uow.flush()
        return row

    def campaign_spec(self, uow: UnitOfWork, row: CampaignRow) -> CampaignSpec:
        return CampaignSpec(
            name=row.name,
            description=row.description,
            start_at=row.start_at,
            end_at=row.end_at,
            categories=split(row.categories),
            segment_kind=row.segment_kind,
            customers=self.customers_of(uow, row.campaign_id) if row.segment_kind == "LIST" else (),
            condition=condition_of(row),
            multiplier_bps=row.multiplier_bps,
            bonus_points=row.bonus_points,
            budget_points=row.budget_points,
            min_order_minor=row.min_order_minor,
            lifetime_seconds=row.lifetime_seconds,
        )

    # --- promo codes ----------------------------------------------------------------------

    def code(self, uow: UnitOfWork, code: str, *, lock: bool = False) -> PromoCodeRow:
        query = select(PromoCodeRow).where(PromoCodeRow.code == code)
        row = uow.session.exec(query.with_for_update() if lock else query).first()
        if row is None:
            raise NotFound("PROMO_CODE_NOT_FOUND", f"no promo code {code!r}", metadata={"code": code})
        return row

    def create_code(self, uow: UnitOfWork, spec: CodeSpec) -> PromoCodeRow:
        validate_code(spec)
        now = self._clock.now()
        row = PromoCodeRow(
            used_count=0, reserved_count=0, budget_used_points=0, ended=False, created_at=now, updated_at=now,
            **_code_fields(spec),
        )  # fmt: skip
        try:
            with uow.session.begin_nested():
                uow.session.add(row)
        except IntegrityError:
            raise AlreadyExists(
                "PROMO_CODE_EXISTS", f"promo code {spec.code} already exists", metadata={"code": spec.code}
            ) from None
        return row

    def update_code(self, uow: UnitOfWork, code: str, change: Callable[[CodeSpec], CodeSpec]) -> PromoCodeRow:
        row = self.code(uow, code, lock=True)
        now = self._clock.now()
        if code_status(row, now) is Status.ENDED:
            raise FailedPrecondition("PROMO_CODE_ENDED", f"promo code {code} has ended")
        spec = replace(change(code_spec(row)), code=row.code)
        validate_code(spec)
        if spec.budget_points and spec.budget_points < row.budget_used_points:
            raise FailedPrecondition(
                "BUDGET_BELOW_USED",
                f"the budget cannot go below the {row.budget_used_points} points already used or reserved",
            )
        if spec.usage_limit and spec.usage_limit < row.used_count + row.reserved_count:
            raise FailedPrecondition(
                "USAGE_LIMIT_BELOW_USED", "the usage limit cannot go below the uses already made or reserved"
            )
        for name, value in _code_fields(spec).items():
            setattr(row, name, value)
        row.updated_at = now
        uow.session.add(row)
        uow.flush()
        return row

    def end_code(self, uow: UnitOfWork, code: str, end_at: datetime | None) -> PromoCodeRow:
        row = self.code(uow, code, lock=True)
        now = self._clock.now()
        if code_status(row, now) is Status.ENDED:
            raise FailedPrecondition("PROMO_CODE_ENDED", f"promo code {code} has ended")
        row.end_at, row.ended, row.updated_at = self._end_time(row.start_at, end_at, now, "end_time"), True, now
        uow.session.add(row)
        uow.flush()
        return row


def rule_spec(row: EarningRuleRow) -> RuleSpec:
    return RuleSpec(
        name=row.name,
        type=RuleType(row.type),
        category=row.category,
        rate_bps=row.rate_bps,
        min_order_minor=row.min_order_minor,
        start_at=row.start_at,
        end_at=row.end_at,
    )


def code_spec(row: PromoCodeRow) -> CodeSpec:
    return CodeSpec(
        code=row.code,
        description=row.description,
        fixed_points=row.fixed_points,
        percent_bps=row.percent_bps,
        max_points_per_use=row.max_points_per_use,
        start_at=row.start_at,
        end_at=row.end_at,
        per_customer_limit=row.per_customer_limit,
        usage_limit=row.usage_limit,
        budget_points=row.budget_points,
        min_order_minor=row.min_order_minor,
        categories=split(row.categories),
        lifetime_seconds=row.lifetime_seconds,
    )


def condition_of(row: CampaignRow) -> Condition:
    return Condition(**json.loads(row.condition)) if row.condition else Condition()


def _rule_fields(spec: RuleSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "type": spec.type.value,
        "category": spec.category,
        "rate_bps": spec.rate_bps,
        "min_order_minor": spec.min_order_minor,
        "start_at": spec.start_at,
        "end_at": spec.end_at,
    }


def _campaign_fields(spec: CampaignSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "description": spec.description,
        "start_at": spec.start_at,
        "end_at": spec.end_at,
        "categories": join(spec.categories),
        "segment_kind": spec.segment_kind,
        "condition": json.dumps(asdict(spec.condition), sort_keys=True) if spec.segment_kind == "CONDITION" else "",
        "multiplier_bps": spec.multiplier_bps,
        "bonus_points": spec.bonus_points,
        "budget_points": spec.budget_points,
        "min_order_minor": spec.min_order_minor,
        "lifetime_seconds": spec.lifetime_seconds,
    }


def _code_fields(spec: CodeSpec) -> dict[str, Any]:
    fields = asdict(spec)
    fields["categories"] = join(spec.categories)
    return fields
