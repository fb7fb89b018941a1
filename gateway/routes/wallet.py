"""Customer: the wallet, top-ups, statement and yield calculator."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from loyalty.wallet.v1 import wallet_pb2
from pydantic import BaseModel, Field

from gateway.auth import Customer
from gateway.convert import (
    CURRENCY,
    INT64_MAX,
    Body,
    MechanicOut,
    Page,
    PositiveInt64,
    enum_name,
    instant,
    mechanic_out,
    minor,
    money,
)
from gateway.deps import Api, IdempotencyKey, PageSize, PageToken, request_id
from gateway.problems import PAYMENT_RESPONSES

router = APIRouter(prefix="/v1/wallet", tags=["wallet"])


class WalletOut(BaseModel):
    wallet_id: str
    customer_id: str
    status: str = Field(description="ACTIVE, FROZEN or CLOSED.")
    balance_minor: int = Field(description="Money in the wallet, kopecks, including what holds reserve.")
    held_minor: int
    available_minor: int
    currency: str
    mechanic: MechanicOut


def wallet_out(wallet: wallet_pb2.Wallet) -> WalletOut:
    return WalletOut(
        wallet_id=wallet.wallet_id,
        customer_id=wallet.customer_id,
        status=enum_name(wallet_pb2.WalletStatus, wallet.status, "WALLET_STATUS_"),
        balance_minor=minor(wallet.balance),
        held_minor=minor(wallet.held),
        available_minor=minor(wallet.available),
        currency=wallet.balance.currency_code or CURRENCY,
        mechanic=mechanic_out(wallet.mechanic),
    )


@router.get("", response_model=WalletOut, summary="The customer's wallet")
def get_wallet(customer: Customer, api: Api) -> WalletOut:
    answer = api.call(api.wallet.GetWallet, wallet_pb2.GetWalletRequest(customer_id=customer.sub))
    return wallet_out(answer.wallet)


class TopUpIn(Body):
    amount_minor: PositiveInt64
    card_token: str = Field(
        min_length=1,
        max_length=128,
        description="Acquirer token; the simulator knows tok_ok, tok_declined, tok_timeout.",
    )


class TopUpOut(BaseModel):
    top_up_id: str
    status: str = Field(description="SUCCEEDED, or PENDING when the acquirer timed out (retry with the same key).")
    amount_minor: int
    balance_minor: int
    card_brand: str
    card_last4: str


@router.post(
    "/top-ups",
    response_model=TopUpOut,
    status_code=201,
    responses=PAYMENT_RESPONSES,
    summary="Top the wallet up from a bank card (opens the wallet if needed)",
)
def top_up(body: TopUpIn, customer: Customer, key: IdempotencyKey, api: Api) -> TopUpOut:
    answer = api.call(
        api.wallet.TopUp,
        wallet_pb2.TopUpRequest(
            request_id=request_id(customer, key),
            customer_id=customer.sub,
            amount=money(body.amount_minor),
            card_token=body.card_token,
        ),
    )
    top = answer.top_up
    return TopUpOut(
        top_up_id=top.top_up_id,
        status=enum_name(wallet_pb2.TopUpStatus, top.status, "TOP_UP_STATUS_"),
        amount_minor=minor(top.amount),
        balance_minor=minor(answer.wallet.balance),
        card_brand=top.card.brand,
        card_last4=top.card.last4,
    )


class StatementEntryOut(BaseModel):
    entry_id: str
    type: str = Field(description="TOP_UP, PAYMENT, REFUND or CORRECTION.")
    amount_minor: int = Field(description="Signed: positive money in, negative money out.")
    balance_after_minor: int
    reference: str
    description: str
    created_at: datetime | None


class StatementOut(Page):
    entries: list[StatementEntryOut]


@router.get("/statement", response_model=StatementOut, summary="Movements of the wallet balance, newest first")
def statement(customer: Customer, api: Api, page_size: PageSize = 0, page_token: PageToken = "") -> StatementOut:
    answer = api.call(
        api.wallet.ListStatementEntries,
        wallet_pb2.ListStatementEntriesRequest(customer_id=customer.sub, page_size=page_size, page_token=page_token),
    )
    return StatementOut(
        entries=[
            StatementEntryOut(
                entry_id=e.entry_id,
                type=enum_name(wallet_pb2.StatementEntryType, e.type, "STATEMENT_ENTRY_TYPE_"),
                amount_minor=minor(e.amount),
                balance_after_minor=minor(e.balance_after),
                reference=e.reference,
                description=e.description,
                created_at=instant(e, "create_time"),
            )
            for e in answer.entries
        ],
        next_page_token=answer.next_page_token,
    )


class YieldMonthOut(BaseModel):
    month_number: int
    month: str = Field(description="YYYY-MM")
    points: int


class YieldOut(BaseModel):
    months: list[YieldMonthOut]
    total_points: int
    mechanic: MechanicOut


@router.get("/yield", response_model=YieldOut, summary="Points an amount kept in the wallet would earn")
def projected_yield(
    customer: Customer,
    api: Api,
    amount_minor: Annotated[int, Query(gt=0, le=INT64_MAX, description="Amount kept, kopecks.")],
    months: Annotated[int, Query(ge=1, le=120, description="Term in months.")],
) -> YieldOut:
    answer = api.call(
        api.wallet.CalculateYield,
        wallet_pb2.CalculateYieldRequest(customer_id=customer.sub, amount=money(amount_minor), months=months),
    )
    return YieldOut(
        months=[YieldMonthOut(month_number=m.month_number, month=m.month, points=m.points) for m in answer.months],
        total_points=answer.total_points,
        mechanic=mechanic_out(answer.mechanic),
    )
