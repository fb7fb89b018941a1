"""Operator: earning rules, campaigns and promo codes (create, list, end)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from loyalty.promotions.v1 import promotions_pb2
from pydantic import BaseModel, Field, model_validator

from gateway.auth import Operator
from gateway.convert import (
    Body,
    Instant,
    Name,
    NonNegativeInt32,
    NonNegativeInt64,
    Page,
    PositiveInt32,
    PositiveInt64,
    Text,
    days,
    enum_name,
    enum_value,
    instant,
    minor,
    money,
    timestamp,
    whole_days,
)
from gateway.deps import Api, OptionalIdempotencyKey, PageSize, PageToken, request_id

router = APIRouter(prefix="/v1/admin", tags=["admin: promotions"])

RuleStatus = Literal["SCHEDULED", "ACTIVE", "EXHAUSTED", "ENDED"]
Category = Annotated[str, Field(min_length=1, max_length=64)]
LifetimeDays = Annotated[int, Field(strict=True, gt=0, le=36500)]
Identifier = Annotated[str, Path(min_length=1, max_length=64)]
StatusFilter = Annotated[list[RuleStatus] | None, Query(description="Only these statuses; all when absent.")]


def _status(value: int) -> str:
    return enum_name(promotions_pb2.RuleStatus, value, "RULE_STATUS_")


def _statuses(names: list[RuleStatus] | None) -> list[int]:
    return [int(enum_value(promotions_pb2.RuleStatus, name, "RULE_STATUS_")) for name in names or []]


def _set_time(message: object, field: str, value: datetime | None, name: str) -> None:
    if value is not None:
        getattr(message, field).CopyFrom(timestamp(value, name))


class EndIn(Body):
    end_time: Instant | None = Field(None, description="When it stops applying; now when absent.")


# --- earning rules -----------------------------------------------------------------------------


class EarningRuleIn(Body):
    name: Name
    type: Literal["DEFAULT_RATE", "CATEGORY_RATE", "ORDER_AMOUNT_TIER"]
    category: Annotated[str, Field(max_length=64)] = ""
    rate_bps: NonNegativeInt32
    min_order_amount_minor: NonNegativeInt64 | None = Field(None, description="For ORDER_AMOUNT_TIER.")
    start_time: Instant | None = None
    end_time: Instant | None = None


class EarningRuleOut(BaseModel):
    rule_id: str
    name: str
    type: str
    category: str
    rate_bps: int
    min_order_amount_minor: int
    start_time: datetime | None
    end_time: datetime | None
    status: str
    created_at: datetime | None


def rule_out(rule: promotions_pb2.EarningRule) -> EarningRuleOut:
    return EarningRuleOut(
        rule_id=rule.rule_id,
        name=rule.name,
        type=enum_name(promotions_pb2.EarningRuleType, rule.type, "EARNING_RULE_TYPE_"),
        category=rule.category,
        rate_bps=rule.rate_bps,
        min_order_amount_minor=minor(rule.min_order_amount),
        start_time=instant(rule, "start_time"),
        end_time=instant(rule, "end_time"),
        status=_status(rule.status),
        created_at=instant(rule, "create_time"),
    )


@router.post("/earning-rules", response_model=EarningRuleOut, status_code=201, summary="Create an earning rule")
def create_earning_rule(
    body: EarningRuleIn, operator: Operator, api: Api, key: OptionalIdempotencyKey = None
) -> EarningRuleOut:
    rule = promotions_pb2.EarningRule(
        name=body.name,
        type=enum_value(promotions_pb2.EarningRuleType, body.type, "EARNING_RULE_TYPE_"),
        category=body.category,
        rate_bps=body.rate_bps,
    )
    if body.min_order_amount_minor is not None:
        rule.min_order_amount.CopyFrom(money(body.min_order_amount_minor))
    _set_time(rule, "start_time", body.start_time, "start_time")
    _set_time(rule, "end_time", body.end_time, "end_time")
    answer = api.call(
        api.promotions.CreateEarningRule,
        promotions_pb2.CreateEarningRuleRequest(request_id=request_id(operator, key), rule=rule),
    )
    return rule_out(answer.rule)


class EarningRulesOut(Page):
    rules: list[EarningRuleOut]


@router.get("/earning-rules", response_model=EarningRulesOut, summary="List earning rules, newest first")
def list_earning_rules(
    operator: Operator, api: Api, status: StatusFilter = None, page_size: PageSize = 0, page_token: PageToken = ""
) -> EarningRulesOut:
    answer = api.call(
        api.promotions.ListEarningRules,
        promotions_pb2.ListEarningRulesRequest(
            page_size=page_size,
            page_token=page_token,
            statuses=_statuses(status),  # type: ignore[arg-type]
        ),
    )
    return EarningRulesOut(rules=[rule_out(r) for r in answer.rules], next_page_token=answer.next_page_token)


@router.post("/earning-rules/{rule_id}/end", response_model=EarningRuleOut, summary="End an earning rule")
def end_earning_rule(
    rule_id: Identifier, operator: Operator, api: Api, body: EndIn | None = None, key: OptionalIdempotencyKey = None
) -> EarningRuleOut:
    request = promotions_pb2.EndEarningRuleRequest(request_id=request_id(operator, key), rule_id=rule_id)
    _set_time(request, "end_time", body.end_time if body else None, "end_time")
    return rule_out(api.call(api.promotions.EndEarningRule, request).rule)


# --- campaigns ---------------------------------------------------------------------------------


class CampaignIn(Body):
    name: Name
    description: Text = ""
    start_time: Instant
    end_time: Instant
    categories: list[Category] = Field(default_factory=list, max_length=100)
    customer_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None, max_length=10000, description="Only these customers; everyone when absent."
    )
    multiplier_bps: PositiveInt32 | None = Field(None, description="20000 doubles the base purchase points.")
    bonus_points: PositiveInt64 | None = Field(None, description="A fixed bonus per qualifying order.")
    budget_points: NonNegativeInt64
    min_order_amount_minor: NonNegativeInt64 | None = None
    points_lifetime_days: LifetimeDays | None = None

    @model_validator(mode="after")
    def _one_reward(self) -> CampaignIn:
        if self.multiplier_bps is not None and self.bonus_points is not None:
            raise ValueError("give multiplier_bps or bonus_points, not both")
        return self


class CampaignOut(BaseModel):
    campaign_id: str
    name: str
    description: str
    start_time: datetime | None
    end_time: datetime | None
    categories: list[str]
    customer_ids: list[str]
    multiplier_bps: int | None
    bonus_points: int | None
    budget_points: int
    budget_used_points: int
    min_order_amount_minor: int
    points_lifetime_days: int | None
    status: str
    created_at: datetime | None


def campaign_out(c: promotions_pb2.Campaign) -> CampaignOut:
    reward = c.WhichOneof("reward")
    return CampaignOut(
        campaign_id=c.campaign_id,
        name=c.name,
        description=c.description,
        start_time=instant(c, "start_time"),
        end_time=instant(c, "end_time"),
        categories=list(c.categories),
        customer_ids=list(c.segment.customers.customer_ids),
        multiplier_bps=c.multiplier_bps if reward == "multiplier_bps" else None,
        bonus_points=c.bonus_points if reward == "bonus_points" else None,
        budget_points=c.budget_points,
        budget_used_points=c.budget_used_points,
        min_order_amount_minor=minor(c.min_order_amount),
        points_lifetime_days=whole_days(c, "points_lifetime"),
        status=_status(c.status),
        created_at=instant(c, "create_time"),
    )


@router.post("/campaigns", response_model=CampaignOut, status_code=201, summary="Create a campaign")
def create_campaign(body: CampaignIn, operator: Operator, api: Api, key: OptionalIdempotencyKey = None) -> CampaignOut:
    campaign = promotions_pb2.Campaign(
        name=body.name,
        description=body.description,
        categories=body.categories,
        budget_points=body.budget_points,
    )
    _set_time(campaign, "start_time", body.start_time, "start_time")
    _set_time(campaign, "end_time", body.end_time, "end_time")
    if body.customer_ids is not None:
        campaign.segment.customers.customer_ids.extend(body.customer_ids)
    if body.multiplier_bps is not None:
        campaign.multiplier_bps = body.multiplier_bps
    if body.bonus_points is not None:
        campaign.bonus_points = body.bonus_points
    if body.min_order_amount_minor is not None:
        campaign.min_order_amount.CopyFrom(money(body.min_order_amount_minor))
    if body.points_lifetime_days is not None:
        campaign.points_lifetime.CopyFrom(days(body.points_lifetime_days))
    answer = api.call(
        api.promotions.CreateCampaign,
        promotions_pb2.CreateCampaignRequest(request_id=request_id(operator, key), campaign=campaign),
    )
    return campaign_out(answer.campaign)


class CampaignsOut(Page):
    campaigns: list[CampaignOut]


@router.get("/campaigns", response_model=CampaignsOut, summary="List campaigns, newest first")
def list_campaigns(
    operator: Operator, api: Api, status: StatusFilter = None, page_size: PageSize = 0, page_token: PageToken = ""
) -> CampaignsOut:
    answer = api.call(
        api.promotions.ListCampaigns,
        promotions_pb2.ListCampaignsRequest(
            page_size=page_size,
            page_token=page_token,
            statuses=_statuses(status),  # type: ignore[arg-type]
        ),
    )
    return CampaignsOut(campaigns=[campaign_out(c) for c in answer.campaigns], next_page_token=answer.next_page_token)


@router.post("/campaigns/{campaign_id}/end", response_model=CampaignOut, summary="End a campaign")
def end_campaign(
    campaign_id: Identifier, operator: Operator, api: Api, body: EndIn | None = None, key: OptionalIdempotencyKey = None
) -> CampaignOut:
    request = promotions_pb2.EndCampaignRequest(request_id=request_id(operator, key), campaign_id=campaign_id)
    _set_time(request, "end_time", body.end_time if body else None, "end_time")
    return campaign_out(api.call(api.promotions.EndCampaign, request).campaign)


# --- promo codes -------------------------------------------------------------------------------


class PromoCodeIn(Body):
    code: Annotated[str, Field(min_length=1, max_length=64)]
    description: Text = ""
    fixed_points: PositiveInt64 | None = None
    percent_bps: PositiveInt32 | None = Field(None, description="Points as a share of the money paid: 500 = 5 %.")
    max_points_per_use: NonNegativeInt64 = 0
    start_time: Instant | None = None
    end_time: Instant | None = None
    per_customer_limit: NonNegativeInt32 = 0
    usage_limit: NonNegativeInt64 = 0
    budget_points: NonNegativeInt64 = 0
    min_order_amount_minor: NonNegativeInt64 | None = None
    categories: list[Category] = Field(default_factory=list, max_length=100)
    points_lifetime_days: LifetimeDays | None = None

    @model_validator(mode="after")
    def _one_reward(self) -> PromoCodeIn:
        if self.fixed_points is not None and self.percent_bps is not None:
            raise ValueError("give fixed_points or percent_bps, not both")
        return self


class PromoCodeOut(BaseModel):
    code: str
    description: str
    fixed_points: int | None
    percent_bps: int | None
    max_points_per_use: int
    start_time: datetime | None
    end_time: datetime | None
    per_customer_limit: int
    usage_limit: int
    used_count: int
    reserved_count: int
    budget_points: int
    budget_used_points: int
    min_order_amount_minor: int
    categories: list[str]
    points_lifetime_days: int | None
    status: str
    created_at: datetime | None


def promo_code_out(p: promotions_pb2.PromoCode) -> PromoCodeOut:
    reward = p.WhichOneof("reward")
    return PromoCodeOut(
        code=p.code,
        description=p.description,
        fixed_points=p.fixed_points if reward == "fixed_points" else None,
        percent_bps=p.percent_bps if reward == "percent_bps" else None,
        max_points_per_use=p.max_points_per_use,
        start_time=instant(p, "start_time"),
        end_time=instant(p, "end_time"),
        per_customer_limit=p.per_customer_limit,
        usage_limit=p.usage_limit,
        used_count=p.used_count,
        reserved_count=p.reserved_count,
        budget_points=p.budget_points,
        budget_used_points=p.budget_used_points,
        min_order_amount_minor=minor(p.min_order_amount),
        categories=list(p.categories),
        points_lifetime_days=whole_days(p, "points_lifetime"),
        status=_status(p.status),
        created_at=instant(p, "create_time"),
    )


@router.post("/promo-codes", response_model=PromoCodeOut, status_code=201, summary="Create a promo code")
def create_promo_code(
    body: PromoCodeIn, operator: Operator, api: Api, key: OptionalIdempotencyKey = None
) -> PromoCodeOut:
    code = promotions_pb2.PromoCode(
        code=body.code,
        description=body.description,
        max_points_per_use=body.max_points_per_use,
        per_customer_limit=body.per_customer_limit,
        usage_limit=body.usage_limit,
        budget_points=body.budget_points,
        categories=body.categories,
    )
    if body.fixed_points is not None:
        code.fixed_points = body.fixed_points
    if body.percent_bps is not None:
        code.percent_bps = body.percent_bps
    _set_time(code, "start_time", body.start_time, "start_time")
    _set_time(code, "end_time", body.end_time, "end_time")
    if body.min_order_amount_minor is not None:
        code.min_order_amount.CopyFrom(money(body.min_order_amount_minor))
    if body.points_lifetime_days is not None:
        code.points_lifetime.CopyFrom(days(body.points_lifetime_days))
    answer = api.call(
        api.promotions.CreatePromoCode,
        promotions_pb2.CreatePromoCodeRequest(request_id=request_id(operator, key), promo_code=code),
    )
    return promo_code_out(answer.promo_code)


class PromoCodesOut(Page):
    promo_codes: list[PromoCodeOut]


@router.get("/promo-codes", response_model=PromoCodesOut, summary="List promo codes, newest first")
def list_promo_codes(
    operator: Operator, api: Api, status: StatusFilter = None, page_size: PageSize = 0, page_token: PageToken = ""
) -> PromoCodesOut:
    answer = api.call(
        api.promotions.ListPromoCodes,
        promotions_pb2.ListPromoCodesRequest(
            page_size=page_size,
            page_token=page_token,
            statuses=_statuses(status),  # type: ignore[arg-type]
        ),
    )
    return PromoCodesOut(
        promo_codes=[promo_code_out(p) for p in answer.promo_codes], next_page_token=answer.next_page_token
    )


@router.post("/promo-codes/{code}/end", response_model=PromoCodeOut, summary="End a promo code")
def end_promo_code(
    code: Identifier, operator: Operator, api: Api, body: EndIn | None = None, key: OptionalIdempotencyKey = None
) -> PromoCodeOut:
    request = promotions_pb2.EndPromoCodeRequest(request_id=request_id(operator, key), code=code)
    _set_time(request, "end_time", body.end_time if body else None, "end_time")
    return promo_code_out(api.call(api.promotions.EndPromoCode, request).promo_code)
