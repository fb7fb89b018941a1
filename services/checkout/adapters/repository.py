"""Queries of the Checkout database, through one session (the unit of work's)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, func, or_, text, update
from sqlalchemy import select as sql_select
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, col, select

from services.checkout.adapters.tables import (
    OrderEventRow,
    OrderLineRow,
    OrderRow,
    ProductRow,
    ReturnLineRow,
    ReturnRow,
)
from services.checkout.domain.saga import OrderStatus
from shared import bulk
from shared.db import UtcDateTime

# Orders that count as sales in statistics.
SOLD = (
    OrderStatus.PAID.value,
    OrderStatus.DELIVERED.value,
    OrderStatus.PARTIALLY_RETURNED.value,
    OrderStatus.RETURNED.value,
)


@dataclass
class ReturnSnapshot:
    row: ReturnRow
    lines: list[ReturnLineRow]


@dataclass
class OrderSnapshot:
    """An order with everything its views show, detached from the session."""

    order: OrderRow
    lines: list[OrderLineRow]
    events: list[OrderEventRow]
    returns: list[ReturnSnapshot] = field(default_factory=list)


@dataclass(frozen=True)
class CustomerOrderStats:
    customer_id: str
    order_count: int
    gmv_minor: int
    wallet_order_count: int
    wallet_money_minor: int
    points_applied: int
    first_order: datetime | None
    last_order: datetime | None


# Statements of the order path, built once with bind parameters: building a statement per call
# costs more CPU than running its cached compiled form.
_PRODUCTS = select(ProductRow).where(col(ProductRow.sku).in_(bindparam("skus", expanding=True)))
_ORDER = select(OrderRow).where(OrderRow.order_id == bindparam("order_id")).execution_options(populate_existing=True)
_ORDER_LOCKED = _ORDER.with_for_update()
_ORDER_BY_REQUEST = select(OrderRow).where(OrderRow.request_id == bindparam("request_id"))
_LINES = (
    select(OrderLineRow)
    .where(OrderLineRow.order_id == bindparam("order_id"))
    .order_by(col(OrderLineRow.position))
    .execution_options(populate_existing=True)
)


_ORDERS: Any = OrderRow.__table__  # type: ignore[attr-defined]
_ORDER_LINES: Any = OrderLineRow.__table__  # type: ignore[attr-defined]
_ORDER_EVENTS: Any = OrderEventRow.__table__  # type: ignore[attr-defined]


@functools.cache
def _placed_statement(lines: int, events: int) -> tuple[Any, bulk.ValuesInsert, bulk.ValuesInsert, bulk.ValuesInsert]:
    """INSERT of a new order, its lines and its events as one statement, the order and the
    lines in WITH clauses (their foreign keys are checked at the statement's end), built once
    per number of lines and events; with the three INSERTs, which name its parameters."""
    order = bulk.values_insert(_ORDERS, 1, "o")
    placed_lines = bulk.values_insert(_ORDER_LINES, lines, "l")
    placed_events = bulk.values_insert(_ORDER_EVENTS, events, "e")
    sql = f"WITH placed_order AS ({order.sql}), placed_lines AS ({placed_lines.sql}) {placed_events.sql}"
    statement = text(sql).bindparams(*order.binds, *placed_lines.binds, *placed_events.binds)
    return statement, order, placed_lines, placed_events


class CheckoutRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: Any) -> None:
        self.session.add(row)

    # --- catalogue ------------------------------------------------------------------------

    def product(self, sku: str) -> ProductRow | None:
        return self.session.get(ProductRow, sku)

    def products(self, skus: Sequence[str]) -> dict[str, ProductRow]:
        rows = self.session.exec(_PRODUCTS, params={"skus": list(skus)}).all()
        return {row.sku: row for row in rows}

    def products_page(self, category: str, after: str | None, limit: int) -> list[ProductRow]:
        query = select(ProductRow)
        if category:
            query = query.where(ProductRow.category == category)
        if after is not None:
            query = query.where(col(ProductRow.sku) > after)
        return list(self.session.exec(query.order_by(col(ProductRow.sku)).limit(limit)).all())

    # --- orders ---------------------------------------------------------------------------

    def order(self, order_id: str, *, lock: bool = False) -> OrderRow | None:
        return self.session.exec(_ORDER_LOCKED if lock else _ORDER, params={"order_id": order_id}).first()

    def add_placed(self, order: OrderRow, lines: Sequence[OrderLineRow], events: Sequence[OrderEventRow]) -> None:
        """Write a new order with its lines and first status events, and leave `order` detached
        as the row now is (the saga driver records on it by its version).

        On PostgreSQL it is one statement (the order and its lines inserted in WITH clauses):
        in autocommit, a transaction by itself with one round trip, where the ORM's flush took
        three statements and BEGIN and COMMIT. Elsewhere the ORM writes the rows, in this
        session's transaction. A request id already placed raises IntegrityError either way."""
        if self.session.get_bind().dialect.name != "postgresql":
            self.session.add(order)
            self.session.flush()  # the order first: its lines and events refer to it
            self.session.add_all([*lines, *events])
            self.session.flush()
            self.session.expunge_all()
            return
        statement, order_insert, lines_insert, events_insert = _placed_statement(len(lines), len(events))
        params = order_insert.params_of(0, order)
        for number, line in enumerate(lines):
            params.update(lines_insert.params_of(number, line))
        for number, event in enumerate(events):
            params.update(events_insert.params_of(number, event))
        self.session.execute(statement, params)
        make_transient_to_detached(order)

    def order_by_request(self, request_id: str) -> OrderRow | None:
        return self.session.exec(_ORDER_BY_REQUEST, params={"request_id": request_id}).first()

    def lines(self, order_id: str) -> list[OrderLineRow]:
        return list(self.session.exec(_LINES, params={"order_id": order_id}).all())

    def set_line_points(self, order_id: str, points_by_position: dict[int, int]) -> None:
        """Set the points to earn of the order's lines at these positions."""
        for position, points in points_by_position.items():
            self.session.execute(
                update(OrderLineRow)
                .where(col(OrderLineRow.order_id) == order_id, col(OrderLineRow.position) == position)
                .values(points_to_earn=points)
            )

    def snapshot(self, order: OrderRow) -> OrderSnapshot:
        return self.snapshots([order])[0]

    def snapshots(self, orders: Sequence[OrderRow]) -> list[OrderSnapshot]:
        """The orders with their lines, events and returns: four queries for any number of
        orders (ListOrders pages), not four per order."""
        ids = [order.order_id for order in orders]
        if not ids:
            return []
        lines: dict[str, list[OrderLineRow]] = {order_id: [] for order_id in ids}
        for line in self.session.exec(
            select(OrderLineRow)
            .where(col(OrderLineRow.order_id).in_(ids))
            .order_by(col(OrderLineRow.order_id), col(OrderLineRow.position))
            .execution_options(populate_existing=True)
        ).all():
            lines[line.order_id].append(line)
        events: dict[str, list[OrderEventRow]] = {order_id: [] for order_id in ids}
        for event in self.session.exec(
            select(OrderEventRow).where(col(OrderEventRow.order_id).in_(ids)).order_by(col(OrderEventRow.id))
        ).all():
            events[event.order_id].append(event)
        return_rows = list(
            self.session.exec(
                select(ReturnRow)
                .where(col(ReturnRow.order_id).in_(ids))
                .order_by(col(ReturnRow.created_at), col(ReturnRow.return_id))
            ).all()
        )
        by_return: dict[str, list[ReturnLineRow]] = {row.return_id: [] for row in return_rows}
        if return_rows:
            for return_line in self.session.exec(
                select(ReturnLineRow)
                .where(col(ReturnLineRow.return_id).in_(list(by_return)))
                .order_by(col(ReturnLineRow.sku))
            ).all():
                by_return[return_line.return_id].append(return_line)
        returns: dict[str, list[ReturnSnapshot]] = {order_id: [] for order_id in ids}
        for row in return_rows:
            returns[row.order_id].append(ReturnSnapshot(row, by_return[row.return_id]))
        snapshots = [
            OrderSnapshot(order, lines[order.order_id], events[order.order_id], returns[order.order_id])
            for order in orders
        ]
        self.session.expunge_all()
        return snapshots

    def orders_page(
        self, customer_id: str, statuses: Sequence[str], after: tuple[datetime, str] | None, limit: int
    ) -> list[OrderRow]:
        query = select(OrderRow)
        if customer_id:
            query = query.where(OrderRow.customer_id == customer_id)
        if statuses:
            query = query.where(col(OrderRow.status).in_(list(statuses)))
        if after is not None:
            created, order_id = after
            query = query.where(
                or_(
                    col(OrderRow.created_at) < created,
                    and_(col(OrderRow.created_at) == created, col(OrderRow.order_id) < order_id),
                )
            )
        query = query.order_by(col(OrderRow.created_at).desc(), col(OrderRow.order_id).desc()).limit(limit)
        return list(self.session.exec(query).all())

    def open_sagas(self, moved_before: datetime, now: datetime, limit: int) -> list[str]:
        """Orders with saga steps left that have not moved since `moved_before` and that no
        driver holds."""
        query = (
            select(OrderRow.order_id)
            .where(
                col(OrderRow.saga_open).is_(True),
                col(OrderRow.saga_at) <= moved_before,
                or_(col(OrderRow.lease_until).is_(None), col(OrderRow.lease_until) <= now),
            )
            .order_by(col(OrderRow.saga_at))
            .limit(limit)
        )
        return list(self.session.exec(query).all())

    # --- returns --------------------------------------------------------------------------

    def return_row(self, return_id: str, *, lock: bool = False) -> ReturnRow | None:
        query = select(ReturnRow).where(ReturnRow.return_id == return_id).execution_options(populate_existing=True)
        if lock:
            query = query.with_for_update()
        return self.session.exec(query).first()

    def open_returns(self, moved_before: datetime, now: datetime, limit: int) -> list[str]:
        query = (
            select(ReturnRow.return_id)
            .where(
                ReturnRow.status == "PENDING",
                col(ReturnRow.saga_at) <= moved_before,
                or_(col(ReturnRow.lease_until).is_(None), col(ReturnRow.lease_until) <= now),
            )
            .order_by(col(ReturnRow.saga_at))
            .limit(limit)
        )
        return list(self.session.exec(query).all())

    # --- statistics -----------------------------------------------------------------------

    def statistics(
        self, start: datetime, end: datetime, customer_ids: Sequence[str], after: str | None, limit: int
    ) -> list[CustomerOrderStats]:
        kept = (col(OrderLineRow.quantity) - col(OrderLineRow.returned_quantity)) * col(OrderLineRow.unit_price_minor)
        gmv = (
            sql_select(col(OrderLineRow.order_id), func.sum(kept).label("gmv"))
            .group_by(col(OrderLineRow.order_id))
            .subquery()
        )
        wallet = col(OrderRow.payment_method) == "WALLET"
        query = (
            sql_select(
                col(OrderRow.customer_id),
                func.count(),
                func.coalesce(func.sum(gmv.c.gmv), 0),
                func.coalesce(func.sum(case((wallet, 1), else_=0)), 0),
                func.coalesce(
                    func.sum(case((wallet, OrderRow.money_paid_minor - OrderRow.money_refunded_minor), else_=0)), 0
                ),
                func.coalesce(func.sum(OrderRow.points_applied), 0),
                func.min(OrderRow.created_at, type_=UtcDateTime()),
                func.max(OrderRow.created_at, type_=UtcDateTime()),
            )
            .join(gmv, gmv.c.order_id == OrderRow.order_id)
            .where(
                col(OrderRow.status).in_(SOLD),
                col(OrderRow.created_at) >= start,
                col(OrderRow.created_at) < end,
            )
            .group_by(col(OrderRow.customer_id))
            .order_by(col(OrderRow.customer_id))
        )
        if customer_ids:
            query = query.where(col(OrderRow.customer_id).in_(list(customer_ids)))
        if after is not None:
            query = query.where(col(OrderRow.customer_id) > after)
        rows = self.session.execute(query.limit(limit)).all()
        return [
            CustomerOrderStats(
                customer_id=row[0],
                order_count=int(row[1]),
                gmv_minor=int(row[2]),
                wallet_order_count=int(row[3]),
                wallet_money_minor=int(row[4]),
                points_applied=int(row[5]),
                first_order=row[6],
                last_order=row[7],
            )
            for row in rows
        ]
