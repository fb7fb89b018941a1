"""Operator: the product catalogue and delivery of orders."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from loyalty.checkout.v1 import checkout_pb2
from pydantic import BaseModel, Field

from gateway.auth import Operator
from gateway.convert import Body, Name, PositiveInt64, money
from gateway.deps import Api, IdempotencyKey, OptionalIdempotencyKey, request_id
from gateway.routes.checkout import OrderId, OrderOut, ProductOut, order_out, product_out

router = APIRouter(prefix="/v1/admin", tags=["admin: checkout"])


class ProductIn(Body):
    title: Name
    category: Annotated[str, Field(min_length=1, max_length=64)]
    price_minor: PositiveInt64


class UpsertOut(BaseModel):
    product: ProductOut
    created: bool = Field(description="True when the sku was new (the answer is then 201).")


@router.put(
    "/catalog/{sku}",
    response_model=UpsertOut,
    responses={201: {"model": UpsertOut, "description": "Created"}},
    summary="Create or replace a product",
)
def upsert_product(
    sku: Annotated[str, Path(min_length=1, max_length=64)],
    body: ProductIn,
    operator: Operator,
    api: Api,
    response: Response,
    key: OptionalIdempotencyKey = None,
) -> UpsertOut:
    answer = api.call(
        api.checkout.UpsertProduct,
        checkout_pb2.UpsertProductRequest(
            request_id=request_id(operator, key),
            product=checkout_pb2.Product(
                sku=sku, title=body.title, category=body.category, price=money(body.price_minor)
            ),
        ),
    )
    response.status_code = 201 if answer.created else 200
    return UpsertOut(product=product_out(answer.product), created=answer.created)


@router.post("/orders/{order_id}/deliver", response_model=OrderOut, summary="Mark a paid order delivered")
def deliver_order(order_id: OrderId, operator: Operator, key: IdempotencyKey, api: Api) -> OrderOut:
    answer = api.call(
        api.checkout.DeliverOrder,
        checkout_pb2.DeliverOrderRequest(request_id=request_id(operator, key), order_id=order_id),
    )
    return order_out(answer.order)
