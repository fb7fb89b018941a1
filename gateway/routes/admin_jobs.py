"""Operator: the scheduled jobs, run on demand. Each is idempotent in its service; the
Idempotency-Key makes a retried HTTP call a replay of the same run."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from loyalty.points.v1 import points_pb2
from loyalty.promotions.v1 import promotions_pb2
from loyalty.wallet.v1 import wallet_pb2
from pydantic import BaseModel, Field

from gateway.auth import Operator
from gateway.convert import Body, minor
from gateway.deps import Api, IdempotencyKey, request_id

router = APIRouter(prefix="/v1/admin/jobs", tags=["admin: jobs"])


class MonthIn(Body):
    month: Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}$", description="The ended month to post, YYYY-MM.")]


class InterestOut(BaseModel):
    month: str
    wallets_posted: int
    wallets_already_posted: int
    wallets_not_on_interest: int
    points_posted: int


@router.post("/post-monthly-interest", response_model=InterestOut, summary="Post a month's wallet interest as points")
def post_monthly_interest(body: MonthIn, operator: Operator, key: IdempotencyKey, api: Api) -> InterestOut:
    answer = api.job(
        api.wallet.PostMonthlyInterest,
        wallet_pb2.PostMonthlyInterestRequest(request_id=request_id(operator, key), month=body.month),
    )
    return InterestOut(
        month=answer.month,
        wallets_posted=answer.wallets_posted,
        wallets_already_posted=answer.wallets_already_posted,
        wallets_not_on_interest=answer.wallets_not_on_interest,
        points_posted=answer.points_posted,
    )


class ExpiryOut(BaseModel):
    lots_expired: int
    points_expired: int


@router.post("/expire-points", response_model=ExpiryOut, summary="Write off points past their expiry")
def expire_points(operator: Operator, key: IdempotencyKey, api: Api) -> ExpiryOut:
    answer = api.job(api.points.ExpirePoints, points_pb2.ExpirePointsRequest(request_id=request_id(operator, key)))
    return ExpiryOut(lots_expired=answer.lots_expired, points_expired=answer.points_expired)


class ActivationOut(BaseModel):
    lots_activated: int
    points_activated: int


@router.post(
    "/activate-pending",
    response_model=ActivationOut,
    summary="Make pending points whose activation time has come available",
)
def activate_pending(operator: Operator, key: IdempotencyKey, api: Api) -> ActivationOut:
    answer = api.job(
        api.points.ActivateDuePoints, points_pb2.ActivateDuePointsRequest(request_id=request_id(operator, key))
    )
    return ActivationOut(lots_activated=answer.lots_activated, points_activated=answer.points_activated)


class ReleaseOut(BaseModel):
    wallet_holds_released: int
    money_released_minor: int
    points_holds_released: int
    points_released: int
    promo_code_reservations_released: int = Field(description="Unconfirmed promo code reservations past their expiry.")


@router.post(
    "/release-expired-holds",
    response_model=ReleaseOut,
    summary="Release expired money holds, points holds and promo code reservations",
)
def release_expired_holds(operator: Operator, key: IdempotencyKey, api: Api) -> ReleaseOut:
    rid = request_id(operator, key)
    money = api.job(api.wallet.ReleaseExpiredHolds, wallet_pb2.ReleaseExpiredHoldsRequest(request_id=rid))
    points = api.job(api.points.ReleaseExpiredHolds, points_pb2.ReleaseExpiredHoldsRequest(request_id=rid))
    codes = api.job(
        api.promotions.ReleaseExpiredReservations, promotions_pb2.ReleaseExpiredReservationsRequest(request_id=rid)
    )
    return ReleaseOut(
        wallet_holds_released=money.holds_released,
        money_released_minor=minor(money.amount_released),
        points_holds_released=points.holds_released,
        points_released=points.points_released,
        promo_code_reservations_released=codes.reservations_released,
    )
