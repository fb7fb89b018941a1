"""The CheckoutService servicer: turns requests into use cases and results into responses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from loyalty.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from loyalty.common.v1 import payment_pb2

from services.checkout.adapters.repository import CheckoutRepository, CustomerOrderStats, OrderSnapshot
from services.checkout.adapters.tables import ProductRow
from services.checkout.domain.pricing import KOPECKS_PER_POINT, PointsPolicy, Product
from services.checkout.domain.saga import OrderStatus
from services.checkout.service_layer.orders import METHOD_VALUES, Orders, explanation_of
from services.checkout.service_layer.pricing import Catalogue, PricedCart, Pricer
from shared.clock import Clock
from shared.db import Database, UnitOfWork
from shared.errors import InvalidArgument
from shared.idempotency import Idempotency
from shared.pagination import decode_token, encode_token, page_size
from shared.protoconv import (
    from_duration,
    from_timestamp,
    money,
    money_minor,
    optional_timestamp,
    to_duration,
    to_timestamp,
)
from shared.validation import validate_customer_id

R = TypeVar("R", bound=Message)
# RecoverOrders looks back at most this far (beyond it `now - stuck_for` leaves the calendar).
MAX_STUCK_FOR = timedelta(days=3650)

SERVICE_NAME = checkout_pb2.DESCRIPTOR.services_by_name["CheckoutService"].full_name
MAX_STATISTICS_CUSTOMERS = 1000

STATUS = {status: getattr(checkout_pb2, f"ORDER_STATUS_{status.value}") for status in OrderStatus}
STATUS_NAMES = {value: status.value for status, value in STATUS.items()}
RETURN_STATUS = {"PENDING": checkout_pb2.RETURN_STATUS_PENDING, "COMPLETED": checkout_pb2.RETURN_STATUS_COMPLETED}


def product_to_proto(row: ProductRow, policy: PointsPolicy) -> checkout_pb2.Product:
    return checkout_pb2.Product(
        sku=row.sku,
        title=row.title,
        category=row.category,
        price=money(row.price_minor),
        points_excluded=policy.excludes(row.category),
        create_time=to_timestamp(row.created_at),
        update_time=to_timestamp(row.updated_at),
    )


def quote_to_proto(
    cart: PricedCart, promo_code: str, method: payment_pb2.PaymentMethod.ValueType
) -> checkout_pb2.Quote:
    earned = {line.line_id: line.points for line in cart.evaluation.lines}
    explanation = [award for line in cart.evaluation.lines for award in line.awards]
    explanation += list(cart.evaluation.order_awards)
    lines = []
    for index, line in enumerate(cart.lines):
        applied = cart.line_points(index)
        lines.append(
            checkout_pb2.QuoteLine(
                sku=line.product.sku,
                title=line.product.title,
                category=line.product.category,
                quantity=line.quantity,
                unit_price=money(line.product.price_minor),
                amount=money(line.amount_minor),
                max_points=line.max_points,
                points_applied=applied,
                unit_points=cart.unit_points[index],
                money_due=money(line.amount_minor - applied * KOPECKS_PER_POINT),
                points_to_earn=earned.get(line.product.sku, 0),
                points_excluded=line.excluded,
            )
        )
    return checkout_pb2.Quote(
        lines=lines,
        total=money(cart.total_minor),
        max_points=cart.max_points,
        points_applied=cart.points_applied,
        money_due=money(cart.money_due_minor),
        points_to_earn=cart.evaluation.total_points,
        explanation=explanation,
        promo_code=promo_code.strip().upper(),
        available_points=cart.available_points,
        payment_method=method,
    )


def order_to_proto(snapshot: OrderSnapshot) -> checkout_pb2.Order:
    order = snapshot.order
    message = checkout_pb2.Order(
        order_id=order.order_id,
        customer_id=order.customer_id,
        status=STATUS[OrderStatus(order.status)],
        total=money(order.total_minor),
        points_applied=order.points_applied,
        money_paid=money(order.money_paid_minor),
        points_to_earn=order.points_to_earn,
        explanation=explanation_of(order),
        payment_method=METHOD_VALUES[order.payment_method],
        promo_code=order.promo_code,
        failure_reason=order.failure_reason if order.status == OrderStatus.FAILED.value else "",
        create_time=to_timestamp(order.created_at),
        update_time=to_timestamp(order.updated_at),
        money_refunded=money(order.money_refunded_minor),
        points_hold_id=order.points_hold_id,
        wallet_hold_id=order.wallet_hold_id,
        promo_code_reservation_id=order.promo_reservation_id,
    )
    if order.payment_method == "CARD":
        message.card.token, message.card.brand, message.card.last4 = (
            order.card_token,
            order.card_brand,
            order.card_last4,
        )
    if order.deliver_time is not None:
        message.deliver_time.CopyFrom(to_timestamp(order.deliver_time))
    if order.return_window_end is not None:
        message.return_window_end_time.CopyFrom(to_timestamp(order.return_window_end))
    for line in snapshot.lines:
        applied = [int(points) for points in line.unit_points.split(",")]
        message.lines.append(
            checkout_pb2.OrderLine(
                sku=line.sku,
                title=line.title,
                category=line.category,
                quantity=line.quantity,
                unit_price=money(line.unit_price_minor),
                amount=money(line.quantity * line.unit_price_minor),
                points_applied=line.points_applied,
                unit_points=applied,
                money_paid=money(line.quantity * line.unit_price_minor - line.points_applied * KOPECKS_PER_POINT),
                points_to_earn=line.points_to_earn,
                returned_quantity=line.returned_quantity,
            )
        )
    for event in snapshot.events:
        message.history.append(
            checkout_pb2.OrderStatusChange(
                status=STATUS[OrderStatus(event.status)], time=to_timestamp(event.time), reason=event.reason
            )
        )
    for item in snapshot.returns:
        message.returns.append(
            checkout_pb2.OrderReturn(
                return_id=item.row.return_id,
                order_id=item.row.order_id,
                lines=[
                    checkout_pb2.ReturnLine(
                        sku=line.sku,
                        quantity=line.quantity,
                        money_refunded=money(line.money_refunded_minor),
                        points_returned=line.points_returned,
                        points_reversed=line.points_reversed,
                    )
                    for line in item.lines
                ],
                money_refunded=money(item.row.money_refunded_minor),
                points_returned=item.row.points_returned,
                points_reversed=item.row.points_reversed,
                status=RETURN_STATUS[item.row.status],
                reason=item.row.reason,
                create_time=to_timestamp(item.row.created_at),
            )
        )
    return message


def statistics_to_proto(stats: CustomerOrderStats) -> checkout_pb2.OrderStatistics:
    message = checkout_pb2.OrderStatistics(
        customer_id=stats.customer_id,
        order_count=stats.order_count,
        gmv=money(stats.gmv_minor),
        average_order_value=money(stats.gmv_minor // stats.order_count if stats.order_count else 0),
        wallet_order_count=stats.wallet_order_count,
        wallet_money_paid=money(stats.wallet_money_minor),
        points_applied=stats.points_applied,
    )
    if stats.first_order is not None:
        message.first_order_time.CopyFrom(to_timestamp(stats.first_order))
    if stats.last_order is not None:
        message.last_order_time.CopyFrom(to_timestamp(stats.last_order))
    return message


class CheckoutServicer(checkout_pb2_grpc.CheckoutServiceServicer):
    def __init__(
        self,
        *,
        database: Database,
        clock: Clock,
        catalogue: Catalogue,
        pricer: Pricer,
        orders: Orders,
        idempotency: Idempotency,
    ) -> None:
        self._db = database
        self._clock = clock
        self._catalogue = catalogue
        self._pricer = pricer
        self._orders = orders
        self._idempotency = idempotency

    @property
    def _policy(self) -> PointsPolicy:
        return self._pricer.policy

    def _run(self, method: str, request: Message, response: type[R], effect: Callable[[UnitOfWork], R]) -> R:
        return self._idempotency.run(f"CheckoutService/{method}", request, response, effect)

    # --- catalogue ------------------------------------------------------------------------

    def UpsertProduct(
        self, request: checkout_pb2.UpsertProductRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.UpsertProductResponse:
        product = Product(
            sku=request.product.sku,
            title=request.product.title,
            category=request.product.category,
            price_minor=money_minor(request.product.price, "product.price"),
        )

        def effect(uow: UnitOfWork) -> checkout_pb2.UpsertProductResponse:
            row, created = self._catalogue.upsert(uow, product)
            return checkout_pb2.UpsertProductResponse(product=product_to_proto(row, self._policy), created=created)

        return self._run("UpsertProduct", request, checkout_pb2.UpsertProductResponse, effect)

    def GetProduct(
        self, request: checkout_pb2.GetProductRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.GetProductResponse:
        products = self._pricer.products([(request.sku, 1)])
        with self._db.read() as session:
            row = CheckoutRepository(session).product(products[0][0].sku)
            assert row is not None
            return checkout_pb2.GetProductResponse(product=product_to_proto(row, self._policy))

    def ListProducts(
        self, request: checkout_pb2.ListProductsRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.ListProductsResponse:
        size = page_size(request.page_size)
        after = decode_token("products", request.page_token, [str])
        with self._db.read() as session:
            rows = CheckoutRepository(session).products_page(request.category, after[0] if after else None, size + 1)
            response = checkout_pb2.ListProductsResponse(
                products=[product_to_proto(row, self._policy) for row in rows[:size]]
            )
            if len(rows) > size:
                response.next_page_token = encode_token("products", [rows[size - 1].sku])
            return response

    def GetPointsPolicy(
        self, request: checkout_pb2.GetPointsPolicyRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.GetPointsPolicyResponse:
        policy = self._policy
        return checkout_pb2.GetPointsPolicyResponse(
            policy=checkout_pb2.PointsPolicy(
                min_money_per_unit=money(policy.min_money_per_unit_minor),
                max_points_share_bps=policy.max_points_share_bps,
                excluded_categories=sorted(policy.excluded_categories),
                return_window=to_duration(policy.return_window),
            )
        )

    # --- quotes and orders ----------------------------------------------------------------

    def QuoteOrder(
        self, request: checkout_pb2.QuoteOrderRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.QuoteOrderResponse:
        validate_customer_id(request.customer_id)
        cart = self._pricer.price_request(request)
        return checkout_pb2.QuoteOrderResponse(quote=quote_to_proto(cart, request.promo_code, request.payment_method))

    def PlaceOrder(
        self, request: checkout_pb2.PlaceOrderRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.PlaceOrderResponse:
        return checkout_pb2.PlaceOrderResponse(order=order_to_proto(self._orders.place(request)))

    def GetOrder(
        self, request: checkout_pb2.GetOrderRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.GetOrderResponse:
        return checkout_pb2.GetOrderResponse(
            order=order_to_proto(self._orders.snapshot(request.order_id, request.customer_id))
        )

    def ListOrders(
        self, request: checkout_pb2.ListOrdersRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.ListOrdersResponse:
        size = page_size(request.page_size)
        after = decode_token("orders", request.page_token, [str, str])
        statuses = []
        for value in request.statuses:
            if value not in STATUS_NAMES:
                raise InvalidArgument.field("statuses", f"unknown order status {value}", "INVALID_STATUS")
            statuses.append(STATUS_NAMES[value])
        with self._db.read() as session:
            repo = CheckoutRepository(session)
            key = (from_timestamp_iso(after[0]), after[1]) if after else None
            rows = repo.orders_page(request.customer_id, statuses, key, size + 1)
            snapshots = repo.snapshots(rows[:size])
            response = checkout_pb2.ListOrdersResponse(orders=[order_to_proto(s) for s in snapshots])
            if len(rows) > size:
                last = snapshots[-1].order
                response.next_page_token = encode_token("orders", [last.created_at.isoformat(), last.order_id])
            return response

    def DeliverOrder(
        self, request: checkout_pb2.DeliverOrderRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.DeliverOrderResponse:
        snapshot = self._orders.deliver(request, optional_timestamp(request, "deliver_time"))
        return checkout_pb2.DeliverOrderResponse(order=order_to_proto(snapshot))

    def CancelOrder(
        self, request: checkout_pb2.CancelOrderRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.CancelOrderResponse:
        return checkout_pb2.CancelOrderResponse(order=order_to_proto(self._orders.cancel(request)))

    def ReturnOrderItems(
        self, request: checkout_pb2.ReturnOrderItemsRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.ReturnOrderItemsResponse:
        return_id, snapshot = self._orders.return_items(request)
        order = order_to_proto(snapshot)
        made = next(item for item in order.returns if item.return_id == return_id)
        return checkout_pb2.ReturnOrderItemsResponse(order_return=made, order=order)

    def RecoverOrders(
        self, request: checkout_pb2.RecoverOrdersRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.RecoverOrdersResponse:
        stuck_for = from_duration(request.stuck_for, "stuck_for") if request.HasField("stuck_for") else None
        if stuck_for is not None and not timedelta(0) <= stuck_for <= MAX_STUCK_FOR:
            raise InvalidArgument.field(
                "stuck_for", f"must be between 0 and {MAX_STUCK_FOR.days} days", "INVALID_STUCK_FOR"
            )

        def work() -> checkout_pb2.RecoverOrdersResponse:
            done = self._orders.recover(stuck_for)
            return checkout_pb2.RecoverOrdersResponse(
                examined=done.examined, completed=done.completed, compensated=done.compensated
            )

        return self._idempotency.run_job(
            "CheckoutService/RecoverOrders", request, checkout_pb2.RecoverOrdersResponse, work
        )

    def ListOrderStatistics(
        self, request: checkout_pb2.ListOrderStatisticsRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.ListOrderStatisticsResponse:
        if len(request.customer_ids) > MAX_STATISTICS_CUSTOMERS:
            raise InvalidArgument.field(
                "customer_ids", f"at most {MAX_STATISTICS_CUSTOMERS} customers", "TOO_MANY_CUSTOMERS"
            )
        if not request.HasField("start_time") or not request.HasField("end_time"):
            raise InvalidArgument.field("start_time", "start_time and end_time are required", "PERIOD_REQUIRED")
        start, end = from_timestamp(request.start_time, "start_time"), from_timestamp(request.end_time, "end_time")
        if end <= start:
            raise InvalidArgument.field("end_time", "must be after start_time", "INVALID_PERIOD")
        size = page_size(request.page_size, default=MAX_STATISTICS_CUSTOMERS)
        after = decode_token("order-statistics", request.page_token, [str])
        wanted = sorted(set(request.customer_ids))
        if after:
            wanted = [customer for customer in wanted if customer > after[0]]
        with self._db.read() as session:
            rows = CheckoutRepository(session).statistics(
                start, end, wanted if request.customer_ids else [], after[0] if after else None, size + 1
            )
        if request.customer_ids:  # every customer asked for answers, with zeros when idle
            found = {row.customer_id: row for row in rows}
            rows = [
                found.get(customer) or CustomerOrderStats(customer, 0, 0, 0, 0, 0, None, None) for customer in wanted
            ][: size + 1]
        response = checkout_pb2.ListOrderStatisticsResponse(statistics=[statistics_to_proto(r) for r in rows[:size]])
        if len(rows) > size:
            response.next_page_token = encode_token("order-statistics", [rows[size - 1].customer_id])
        return response


def from_timestamp_iso(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArgument.field("page_token", "is not a page token of this list", "INVALID_PAGE_TOKEN") from None
