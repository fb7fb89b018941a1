"""Customer: quotes and orders (the Checkout service)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from loyalty.checkout.v1 import checkout_pb2
from loyalty.common.v1 import earning_pb2, payment_pb2
from pydantic import BaseModel, Field

from gateway.auth import Customer, authenticated
from gateway.convert import Body, NonNegativeInt64, Page, PositiveInt64, Text, enum_name, enum_value, instant, minor
from gateway.deps import Api, IdempotencyKey, PageSize, PageToken, request_id
from gateway.problems import PAYMENT_RESPONSES

router = APIRouter(tags=["checkout"])

Sku = Annotated[str, Field(min_length=1, max_length=64)]
OrderId = Annotated[str, Path(min_length=1, max_length=64, description="The order's id.")]
PaymentMethod = Literal["WALLET", "CARD"]
PromoCode = Annotated[str, Field(max_length=64)]


class LineIn(Body):
    sku: Sku
    quantity: PositiveInt64


class AwardOut(BaseModel):
    kind: str = Field(description="DEFAULT_RATE, CATEGORY_RATE, ORDER_AMOUNT_TIER, CAMPAIGN, PROMO_CODE or CASHBACK.")
    rule_id: str
    line_id: str = Field(description="The sku of the line; empty for an order-level award.")
    base_minor: int
    rate_bps: int
    points: int
    capped: bool
    description: str


def awards_out(awards: list[earning_pb2.PointsAward]) -> list[AwardOut]:
    return [
        AwardOut(
            kind=enum_name(earning_pb2.AwardKind, a.kind, "AWARD_KIND_"),
            rule_id=a.rule_id,
            line_id=a.line_id,
            base_minor=a.base_minor,
            rate_bps=a.rate_bps,
            points=a.points,
            capped=a.capped,
            description=a.description,
        )
        for a in awards
    ]


def lines_in(lines: list[LineIn]) -> list[checkout_pb2.LineItem]:
    return [checkout_pb2.LineItem(sku=line.sku, quantity=line.quantity) for line in lines]


def payment_method(name: PaymentMethod | None) -> int:
    return 0 if name is None else int(enum_value(payment_pb2.PaymentMethod, name, "PAYMENT_METHOD_"))


# --- catalogue ---------------------------------------------------------------------------------


class ProductOut(BaseModel):
    sku: str
    title: str
    category: str
    price_minor: int
    points_excluded: bool = Field(description="True when points cannot pay for the product's category.")
    created_at: datetime | None
    updated_at: datetime | None


def product_out(p: checkout_pb2.Product) -> ProductOut:
    return ProductOut(
        sku=p.sku,
        title=p.title,
        category=p.category,
        price_minor=minor(p.price),
        points_excluded=p.points_excluded,
        created_at=instant(p, "create_time"),
        updated_at=instant(p, "update_time"),
    )


class ProductsOut(Page):
    products: list[ProductOut]


@router.get(
    "/v1/catalog",
    response_model=ProductsOut,
    dependencies=[Depends(authenticated)],
    summary="The product catalogue by sku (any valid token)",
)
def list_products(
    api: Api,
    category: Annotated[str, Query(max_length=64, description="Only this category.")] = "",
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> ProductsOut:
    answer = api.call(
        api.checkout.ListProducts,
        checkout_pb2.ListProductsRequest(page_size=page_size, page_token=page_token, category=category),
    )
    return ProductsOut(products=[product_out(p) for p in answer.products], next_page_token=answer.next_page_token)


@router.get(
    "/v1/catalog/{sku}",
    response_model=ProductOut,
    dependencies=[Depends(authenticated)],
    summary="One product (any valid token)",
)
def get_product(sku: Annotated[str, Path(min_length=1, max_length=64)], api: Api) -> ProductOut:
    return product_out(api.call(api.checkout.GetProduct, checkout_pb2.GetProductRequest(sku=sku)).product)


# --- quote -------------------------------------------------------------------------------------


class QuoteIn(Body):
    lines: list[LineIn] = Field(max_length=200)
    promo_code: PromoCode | None = None
    points_to_use: NonNegativeInt64 = 0
    payment_method: PaymentMethod | None = Field(None, description="Assumed payment method, for cashback.")


class QuoteLineOut(BaseModel):
    sku: str
    title: str
    category: str
    quantity: int
    unit_price_minor: int
    amount_minor: int
    max_points: int
    points_applied: int
    money_due_minor: int
    points_to_earn: int
    points_excluded: bool


class QuoteOut(BaseModel):
    lines: list[QuoteLineOut]
    total_minor: int
    max_points: int
    points_applied: int
    money_due_minor: int
    points_to_earn: int
    explanation: list[AwardOut]
    promo_code: str
    available_points: int


@router.post(
    "/v1/checkout/quote", response_model=QuoteOut, summary="Price a cart: points cap, money due, points to earn"
)
def quote(body: QuoteIn, customer: Customer, api: Api) -> QuoteOut:
    answer = api.call(
        api.checkout.QuoteOrder,
        checkout_pb2.QuoteOrderRequest(
            customer_id=customer.sub,
            lines=lines_in(body.lines),
            promo_code=body.promo_code or "",
            points_to_use=body.points_to_use,
            payment_method=payment_method(body.payment_method),  # type: ignore[arg-type]
        ),
    )
    q = answer.quote
    return QuoteOut(
        lines=[
            QuoteLineOut(
                sku=line.sku,
                title=line.title,
                category=line.category,
                quantity=line.quantity,
                unit_price_minor=minor(line.unit_price),
                amount_minor=minor(line.amount),
                max_points=line.max_points,
                points_applied=line.points_applied,
                money_due_minor=minor(line.money_due),
                points_to_earn=line.points_to_earn,
                points_excluded=line.points_excluded,
            )
            for line in q.lines
        ],
        total_minor=minor(q.total),
        max_points=q.max_points,
        points_applied=q.points_applied,
        money_due_minor=minor(q.money_due),
        points_to_earn=q.points_to_earn,
        explanation=awards_out(list(q.explanation)),
        promo_code=q.promo_code,
        available_points=q.available_points,
    )


# --- orders ------------------------------------------------------------------------------------


class OrderLineOut(BaseModel):
    sku: str
    title: str
    category: str
    quantity: int
    unit_price_minor: int
    amount_minor: int
    points_applied: int
    money_paid_minor: int
    points_to_earn: int
    returned_quantity: int


class ReturnLineOut(BaseModel):
    sku: str
    quantity: int
    money_refunded_minor: int
    points_returned: int
    points_reversed: int


class ReturnOut(BaseModel):
    return_id: str
    order_id: str
    status: str = Field(description="PENDING or COMPLETED.")
    lines: list[ReturnLineOut]
    money_refunded_minor: int
    points_returned: int
    points_reversed: int
    reason: str
    created_at: datetime | None


class StatusChangeOut(BaseModel):
    status: str
    at: datetime | None
    reason: str


class OrderOut(BaseModel):
    order_id: str
    customer_id: str
    status: str = Field(description="PENDING, PAID, DELIVERED, CANCELLED, FAILED, PARTIALLY_RETURNED or RETURNED.")
    total_minor: int
    points_applied: int
    money_paid_minor: int
    points_to_earn: int
    money_refunded_minor: int
    payment_method: str
    card_brand: str
    card_last4: str
    promo_code: str
    failure_reason: str
    lines: list[OrderLineOut]
    explanation: list[AwardOut]
    returns: list[ReturnOut]
    history: list[StatusChangeOut]
    created_at: datetime | None
    delivered_at: datetime | None
    return_window_ends_at: datetime | None


def _status(value: int) -> str:
    return enum_name(checkout_pb2.OrderStatus, value, "ORDER_STATUS_")


def return_out(r: checkout_pb2.OrderReturn) -> ReturnOut:
    return ReturnOut(
        return_id=r.return_id,
        order_id=r.order_id,
        status=enum_name(checkout_pb2.ReturnStatus, r.status, "RETURN_STATUS_"),
        lines=[
            ReturnLineOut(
                sku=line.sku,
                quantity=line.quantity,
                money_refunded_minor=minor(line.money_refunded),
                points_returned=line.points_returned,
                points_reversed=line.points_reversed,
            )
            for line in r.lines
        ],
        money_refunded_minor=minor(r.money_refunded),
        points_returned=r.points_returned,
        points_reversed=r.points_reversed,
        reason=r.reason,
        created_at=instant(r, "create_time"),
    )


def order_out(order: checkout_pb2.Order) -> OrderOut:
    return OrderOut(
        order_id=order.order_id,
        customer_id=order.customer_id,
        status=_status(order.status),
        total_minor=minor(order.total),
        points_applied=order.points_applied,
        money_paid_minor=minor(order.money_paid),
        points_to_earn=order.points_to_earn,
        money_refunded_minor=minor(order.money_refunded),
        payment_method=enum_name(payment_pb2.PaymentMethod, order.payment_method, "PAYMENT_METHOD_"),
        card_brand=order.card.brand,
        card_last4=order.card.last4,
        promo_code=order.promo_code,
        failure_reason=order.failure_reason,
        lines=[
            OrderLineOut(
                sku=line.sku,
                title=line.title,
                category=line.category,
                quantity=line.quantity,
                unit_price_minor=minor(line.unit_price),
                amount_minor=minor(line.amount),
                points_applied=line.points_applied,
                money_paid_minor=minor(line.money_paid),
                points_to_earn=line.points_to_earn,
                returned_quantity=line.returned_quantity,
            )
            for line in order.lines
        ],
        explanation=awards_out(list(order.explanation)),
        returns=[return_out(r) for r in order.returns],
        history=[
            StatusChangeOut(status=_status(h.status), at=instant(h, "time"), reason=h.reason) for h in order.history
        ],
        created_at=instant(order, "create_time"),
        delivered_at=instant(order, "deliver_time"),
        return_window_ends_at=instant(order, "return_window_end_time"),
    )


class OrderIn(Body):
    lines: list[LineIn] = Field(max_length=200)
    promo_code: PromoCode | None = None
    points_to_use: NonNegativeInt64 = 0
    payment_method: PaymentMethod
    card_token: str | None = Field(None, max_length=128, description="Required for CARD.")


@router.post(
    "/v1/orders",
    response_model=OrderOut,
    status_code=201,
    responses=PAYMENT_RESPONSES,
    summary="Place and pay an order (points and wallet or card)",
)
def place_order(body: OrderIn, customer: Customer, key: IdempotencyKey, api: Api) -> OrderOut:
    answer = api.call(
        api.checkout.PlaceOrder,
        checkout_pb2.PlaceOrderRequest(
            request_id=request_id(customer, key),
            customer_id=customer.sub,
            lines=lines_in(body.lines),
            promo_code=body.promo_code or "",
            points_to_use=body.points_to_use,
            payment_method=payment_method(body.payment_method),  # type: ignore[arg-type]
            card_token=body.card_token or "",
        ),
    )
    return order_out(answer.order)


class OrdersOut(Page):
    orders: list[OrderOut]


@router.get("/v1/orders", response_model=OrdersOut, summary="The customer's orders, newest first")
def list_orders(customer: Customer, api: Api, page_size: PageSize = 0, page_token: PageToken = "") -> OrdersOut:
    answer = api.call(
        api.checkout.ListOrders,
        checkout_pb2.ListOrdersRequest(customer_id=customer.sub, page_size=page_size, page_token=page_token),
    )
    return OrdersOut(orders=[order_out(o) for o in answer.orders], next_page_token=answer.next_page_token)


@router.get("/v1/orders/{order_id}", response_model=OrderOut, summary="One of the customer's orders")
def get_order(order_id: OrderId, customer: Customer, api: Api) -> OrderOut:
    answer = api.call(api.checkout.GetOrder, checkout_pb2.GetOrderRequest(order_id=order_id, customer_id=customer.sub))
    return order_out(answer.order)


class CancelIn(Body):
    reason: Text = ""


@router.post(
    "/v1/orders/{order_id}/cancel",
    response_model=OrderOut,
    summary="Cancel an order before delivery (refunds everything)",
)
def cancel_order(
    order_id: OrderId, customer: Customer, key: IdempotencyKey, api: Api, body: CancelIn | None = None
) -> OrderOut:
    answer = api.call(
        api.checkout.CancelOrder,
        checkout_pb2.CancelOrderRequest(
            request_id=request_id(customer, key),
            order_id=order_id,
            customer_id=customer.sub,
            reason=body.reason if body else "",
        ),
    )
    return order_out(answer.order)


class ReturnIn(Body):
    lines: list[LineIn] = Field(max_length=200)
    reason: Text = ""


class ReturnAnswer(BaseModel):
    order_return: ReturnOut
    order: OrderOut


@router.post(
    "/v1/orders/{order_id}/returns",
    response_model=ReturnAnswer,
    status_code=201,
    summary="Return units of a delivered order within the return window",
)
def return_items(order_id: OrderId, body: ReturnIn, customer: Customer, key: IdempotencyKey, api: Api) -> ReturnAnswer:
    answer = api.call(
        api.checkout.ReturnOrderItems,
        checkout_pb2.ReturnOrderItemsRequest(
            request_id=request_id(customer, key),
            order_id=order_id,
            customer_id=customer.sub,
            lines=lines_in(body.lines),
            reason=body.reason,
        ),
    )
    return ReturnAnswer(order_return=return_out(answer.order_return), order=order_out(answer.order))
