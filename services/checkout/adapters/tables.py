"""Tables of the Checkout database (its own metadata, apart from every other service).

`products` is the catalogue. `orders` keep the priced cart and the saga state: which steps are
done, the peer resources they made (points hold, wallet hold, promo code reservation) and a lease
that lets one driver at a time move the saga (the request that placed the order, or the
recovery worker once the lease has lapsed). `order_lines` keep the points applied to each unit,
so a partial return gives back exactly those; `order_events` the status history; `order_returns`
and `return_lines` the returns and their own small saga.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Column, Index, Integer, String, Text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.db import UtcDateTime
from shared.runtime_tables import add_runtime_tables


class CheckoutTable(SQLModel, registry=registry()):
    pass


def _amount(*, default: int | None = None) -> Column[int]:
    if default is None:
        return Column(BigInteger, nullable=False)
    return Column(BigInteger, nullable=False, server_default=str(default))


def _time(*, nullable: bool = False) -> Column[datetime]:
    return Column(UtcDateTime, nullable=nullable)


class ProductRow(CheckoutTable, table=True):
    __tablename__ = "products"
    __table_args__ = (
        Index("ix_products_category_sku", "category", "sku"),
        CheckConstraint("price_minor > 0", name="ck_products_price"),
    )

    sku: str = Field(primary_key=True, max_length=64)
    title: str = Field(max_length=200)
    category: str = Field(max_length=64)
    price_minor: int = Field(sa_column=_amount())
    created_at: datetime = Field(sa_column=_time())
    updated_at: datetime = Field(sa_column=_time())


# The order's version: the ORM adds one on every UPDATE of the row and writes only where the
# version is still the one it read (else StaleDataError). The saga driver keeps the order it last
# recorded in memory and records its next move by that version alone, without reading the row
# again under a lock; a change by anyone else in between makes that write miss, and the driver
# then records the way it always did, under the row lock (`Orders._record`).
_ORDER_VERSION = Column("version", Integer, nullable=False, server_default="1")


class OrderRow(CheckoutTable, table=True):
    __tablename__ = "orders"
    __mapper_args__ = {"version_id_col": _ORDER_VERSION}
    __table_args__ = (
        Index("ix_orders_customer_created", "customer_id", "created_at", "order_id"),
        Index("ix_orders_created", "created_at", "order_id"),
        Index("ix_orders_saga", "saga_open", "saga_at"),
        CheckConstraint("total_minor > 0", name="ck_orders_total"),
        CheckConstraint("points_applied >= 0", name="ck_orders_points"),
        CheckConstraint("money_paid_minor > 0", name="ck_orders_money"),
        CheckConstraint(
            "money_refunded_minor >= 0 AND money_refunded_minor <= money_paid_minor", name="ck_orders_refunded"
        ),
    )

    order_id: str = Field(primary_key=True, max_length=36)
    # The PlaceOrder request id, and the fingerprint of the request it came with.
    request_id: str = Field(max_length=128, unique=True)
    fingerprint: str = Field(max_length=64)
    customer_id: str = Field(max_length=64)
    status: str = Field(max_length=24)
    payment_method: str = Field(max_length=16)
    card_token: str = Field(default="", max_length=64)
    card_brand: str = Field(default="", max_length=32)
    card_last4: str = Field(default="", max_length=4)
    promo_code: str = Field(default="", max_length=64)
    total_minor: int = Field(sa_column=_amount())
    points_applied: int = Field(sa_column=_amount())
    money_paid_minor: int = Field(sa_column=_amount())
    points_to_earn: int = Field(default=0, sa_column=_amount(default=0))
    # Earned points not tied to a line (a campaign's fixed bonus, a fixed promo code reward):
    # reversed when the last unit is returned.
    order_level_points: int = Field(default=0, sa_column=_amount(default=0))
    # The explanation (PointsAward messages as JSON).
    explanation: str = Field(default="[]", sa_column=Column(Text, nullable=False, server_default="[]"))
    wallet_balance_minor: int = Field(default=0, sa_column=_amount(default=0))
    money_refunded_minor: int = Field(default=0, sa_column=_amount(default=0))
    failure_reason: str = Field(default="", max_length=64)
    failure_message: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))
    cancel_reason: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))
    # --- saga state
    steps_done: str = Field(default="", sa_column=Column(String(300), nullable=False, server_default=""))
    compensating: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default="false"))
    refused_step: str = Field(default="", max_length=24)
    cancel_requested: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default="false"))
    points_hold_id: str = Field(default="", max_length=64)
    wallet_hold_id: str = Field(default="", max_length=64)
    promo_reservation_id: str = Field(default="", max_length=64)
    # True while the saga has steps left (found by recovery); saga_at is its last move.
    saga_open: bool = Field(default=True, sa_column=Column(Boolean, nullable=False, server_default="true"))
    saga_at: datetime = Field(sa_column=_time())
    saga_attempts: int = Field(default=0)
    last_error: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))
    lease_owner: str = Field(default="", max_length=36)
    lease_until: datetime | None = Field(default=None, sa_column=_time(nullable=True))
    version: int = Field(default=1, sa_column=_ORDER_VERSION)
    # --- times
    created_at: datetime = Field(sa_column=_time())
    updated_at: datetime = Field(sa_column=_time())
    deliver_time: datetime | None = Field(default=None, sa_column=_time(nullable=True))
    return_window_end: datetime | None = Field(default=None, sa_column=_time(nullable=True))


class OrderLineRow(CheckoutTable, table=True):
    __tablename__ = "order_lines"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="ck_order_lines_quantity"),
        CheckConstraint("returned_quantity >= 0 AND returned_quantity <= quantity", name="ck_order_lines_returned"),
        CheckConstraint("points_applied >= 0", name="ck_order_lines_points"),
    )

    order_id: str = Field(primary_key=True, max_length=36, foreign_key="orders.order_id")
    position: int = Field(primary_key=True)
    sku: str = Field(max_length=64)
    title: str = Field(max_length=200)
    category: str = Field(max_length=64)
    quantity: int = Field(sa_column=_amount())
    unit_price_minor: int = Field(sa_column=_amount())
    points_applied: int = Field(sa_column=_amount())
    # Points applied per unit, comma-separated, in unit order.
    unit_points: str = Field(sa_column=Column(Text, nullable=False))
    points_to_earn: int = Field(default=0, sa_column=_amount(default=0))
    points_excluded: bool = Field(default=False)
    returned_quantity: int = Field(default=0, sa_column=_amount(default=0))


class OrderEventRow(CheckoutTable, table=True):
    __tablename__ = "order_events"
    __table_args__ = (Index("ix_order_events_order", "order_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(max_length=36, foreign_key="orders.order_id")
    status: str = Field(max_length=24)
    time: datetime = Field(sa_column=_time())
    reason: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))


class ReturnRow(CheckoutTable, table=True):
    __tablename__ = "order_returns"
    __table_args__ = (
        Index("ix_order_returns_order", "order_id", "created_at"),
        Index("ix_order_returns_saga", "status", "saga_at"),
    )

    return_id: str = Field(primary_key=True, max_length=36)
    order_id: str = Field(max_length=36, foreign_key="orders.order_id")
    status: str = Field(max_length=16)
    money_refunded_minor: int = Field(sa_column=_amount())
    points_returned: int = Field(sa_column=_amount())
    points_reversed: int = Field(sa_column=_amount())
    reason: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))
    steps_done: str = Field(default="", sa_column=Column(String(100), nullable=False, server_default=""))
    saga_at: datetime = Field(sa_column=_time())
    last_error: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))
    lease_owner: str = Field(default="", max_length=36)
    lease_until: datetime | None = Field(default=None, sa_column=_time(nullable=True))
    created_at: datetime = Field(sa_column=_time())


class ReturnLineRow(CheckoutTable, table=True):
    __tablename__ = "return_lines"

    return_id: str = Field(primary_key=True, max_length=36, foreign_key="order_returns.return_id")
    sku: str = Field(primary_key=True, max_length=64)
    quantity: int = Field(sa_column=_amount())
    money_refunded_minor: int = Field(sa_column=_amount())
    points_returned: int = Field(sa_column=_amount())
    points_reversed: int = Field(sa_column=_amount())


metadata = CheckoutTable.metadata
runtime_tables = add_runtime_tables(metadata)
