"""Customer: the points balance and history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from loyalty.points.v1 import points_pb2
from pydantic import BaseModel, Field

from gateway.auth import Customer
from gateway.convert import Page, enum_name, instant
from gateway.deps import Api, PageSize, PageToken

router = APIRouter(prefix="/v1/points", tags=["points"])


class ExpiringOut(BaseModel):
    points: int
    expires_at: datetime | None
    date: str = Field(description="Day of expiry, YYYY-MM-DD in the programme's time zone.")


class BalanceOut(BaseModel):
    available: int = Field(description="Spendable now.")
    pending: int = Field(description="Earned, not spendable yet (orders not delivered or within the return window).")
    held: int = Field(description="Reserved by orders being placed.")
    expiring: list[ExpiringOut] = Field(description="Points expiring within the window, by day, soonest first.")


@router.get("", response_model=BalanceOut, summary="The customer's points balance")
def balance(
    customer: Customer,
    api: Api,
    expiring_within_days: Annotated[int, Query(ge=0, le=3650, description="Window of `expiring`; 0 means 30.")] = 0,
) -> BalanceOut:
    answer = api.call(
        api.points.GetBalance,
        points_pb2.GetBalanceRequest(customer_id=customer.sub, expiring_within_days=expiring_within_days),
    )
    return BalanceOut(
        available=answer.available,
        pending=answer.pending,
        held=answer.held,
        expiring=[
            ExpiringOut(points=e.points, expires_at=instant(e, "expires_at"), date=e.date) for e in answer.expiring
        ],
    )


class HistoryEntryOut(BaseModel):
    entry_id: str
    type: str = Field(description="CREDITED, CREDITED_PENDING, ACTIVATED, HELD, SPENT, RETURNED, EXPIRED, ...")
    available_delta: int
    pending_delta: int
    held_delta: int
    source: str
    reference: str
    description: str
    unrecovered_points: int
    created_at: datetime | None


class HistoryOut(Page):
    entries: list[HistoryEntryOut]


@router.get("/history", response_model=HistoryOut, summary="Every change of the points balance, newest first")
def history(customer: Customer, api: Api, page_size: PageSize = 0, page_token: PageToken = "") -> HistoryOut:
    answer = api.call(
        api.points.ListHistory,
        points_pb2.ListHistoryRequest(customer_id=customer.sub, page_size=page_size, page_token=page_token),
    )
    return HistoryOut(
        entries=[
            HistoryEntryOut(
                entry_id=e.entry_id,
                type=enum_name(points_pb2.HistoryEntryType, e.type, "HISTORY_ENTRY_TYPE_"),
                available_delta=e.available_delta,
                pending_delta=e.pending_delta,
                held_delta=e.held_delta,
                source=enum_name(points_pb2.PointsSource, e.source, "POINTS_SOURCE_"),
                reference=e.reference,
                description=e.description,
                unrecovered_points=e.unrecovered_points,
                created_at=instant(e, "create_time"),
            )
            for e in answer.entries
        ],
        next_page_token=answer.next_page_token,
    )
