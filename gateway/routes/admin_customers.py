"""Operator: a customer's points adjustments and profile-action rewards."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from loyalty.points.v1 import points_pb2
from loyalty.promotions.v1 import promotions_pb2
from pydantic import BaseModel, Field

from gateway.auth import Operator
from gateway.convert import Body, PositiveInt64, enum_name, enum_value, instant
from gateway.deps import Api, IdempotencyKey, request_id
from shared.validation import MAX_CUSTOMER_ID

router = APIRouter(prefix="/v1/admin/customers/{customer_id}", tags=["admin: customers"])

CustomerId = Annotated[str, Path(min_length=1, max_length=MAX_CUSTOMER_ID, description="The customer.")]


class AdjustmentIn(Body):
    points: PositiveInt64 = Field(description="Points to credit (a manual adjustment only adds points).")
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class LotOut(BaseModel):
    lot_id: str
    customer_id: str
    points: int
    remaining: int
    source: str
    status: str
    reason: str
    operator_id: str
    available_at: datetime | None
    expires_at: datetime | None


@router.post("/points-adjustments", response_model=LotOut, status_code=201, summary="Credit points by hand (audited)")
def adjust_points(
    customer_id: CustomerId, body: AdjustmentIn, operator: Operator, key: IdempotencyKey, api: Api
) -> LotOut:
    answer = api.call(
        api.points.CreditPoints,
        points_pb2.CreditPointsRequest(
            request_id=request_id(operator, key),
            customer_id=customer_id,
            points=body.points,
            source=points_pb2.POINTS_SOURCE_MANUAL_ADJUSTMENT,
            reference=f"adjustment:{operator.sub}",
            reason=body.reason,
            operator_id=operator.sub,
        ),
    )
    lot = answer.lot
    return LotOut(
        lot_id=lot.lot_id,
        customer_id=lot.customer_id,
        points=lot.amount,
        remaining=lot.remaining,
        source=enum_name(points_pb2.PointsSource, lot.source, "POINTS_SOURCE_"),
        status=enum_name(points_pb2.LotStatus, lot.status, "LOT_STATUS_"),
        reason=lot.reason,
        operator_id=lot.operator_id,
        available_at=instant(lot, "available_at"),
        expires_at=instant(lot, "expires_at"),
    )


class ProfileActionIn(Body):
    action: Literal["CONTACTS_UPDATED", "PHOTO_ADDED", "SURVEY_COMPLETED"]
    survey_id: Annotated[str | None, Field(max_length=64, description="Required for SURVEY_COMPLETED.")] = None


class ProfileActionOut(BaseModel):
    points_awarded: int
    already_rewarded: bool = Field(description="True for a repeat: nothing is paid again.")


@router.post("/profile-actions", response_model=ProfileActionOut, summary="Reward a profile action (once each)")
def profile_action(
    customer_id: CustomerId, body: ProfileActionIn, operator: Operator, key: IdempotencyKey, api: Api
) -> ProfileActionOut:
    answer = api.call(
        api.promotions.RecordProfileAction,
        promotions_pb2.RecordProfileActionRequest(
            request_id=request_id(operator, key),
            customer_id=customer_id,
            action=enum_value(promotions_pb2.ProfileActionType, body.action, "PROFILE_ACTION_TYPE_"),
            survey_id=body.survey_id or "",
        ),
    )
    return ProfileActionOut(points_awarded=answer.points_awarded, already_rewarded=answer.already_rewarded)
