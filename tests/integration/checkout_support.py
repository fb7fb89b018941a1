"""Checkout tests: the four real services, a client per service, a small catalogue, and a way to
see every balance a checkout touches."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from google.protobuf.duration_pb2 import Duration
from loyalty.checkout.v1 import checkout_pb2 as pb
from loyalty.checkout.v1 import checkout_pb2_grpc
from loyalty.common.v1 import payment_pb2

from shared.protoconv import money
from shared.telemetry import Telemetry
from tests.clients import PointsClient, rid
from tests.harness import Harness, RunningService
from tests.integration.wallet_support import WalletClient

WALLET = payment_pb2.PAYMENT_METHOD_WALLET
CARD = payment_pb2.PAYMENT_METHOD_CARD
UNSPECIFIED = payment_pb2.PAYMENT_METHOD_UNSPECIFIED

# sku: (title, category, price in kopecks)
CATALOGUE = {
    "pen": ("Pen", "stationery", 100),  # 1 RUB: takes no points
    "soap": ("Soap", "household", 9950),  # 99.50 RUB: at most 98 points a unit
    "kettle": ("Kettle", "appliances", 50000),  # 500 RUB
    "gift": ("Gift card 1000", "gift-cards", 100000),  # points cannot pay for it
    "phone": ("Phone", "electronics", 2000000),  # 20,000 RUB
}


class CheckoutClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = checkout_pb2_grpc.CheckoutServiceStub(channel)

    def upsert(self, sku: str, title: str, category: str, price_minor: int) -> pb.UpsertProductResponse:
        product = pb.Product(sku=sku, title=title, category=category, price=money(price_minor))
        return self.stub.UpsertProduct(pb.UpsertProductRequest(request_id=rid(), product=product), timeout=10)

    def quote(
        self,
        customer: str,
        *lines: tuple[str, int],
        points: int = 0,
        code: str = "",
        method: payment_pb2.PaymentMethod.ValueType = WALLET,
    ) -> pb.Quote:
        request = pb.QuoteOrderRequest(
            customer_id=customer,
            lines=[pb.LineItem(sku=sku, quantity=quantity) for sku, quantity in lines],
            points_to_use=points,
            promo_code=code,
            payment_method=method,
        )
        return self.stub.QuoteOrder(request, timeout=10).quote

    def place(
        self,
        customer: str,
        *lines: tuple[str, int],
        points: int = 0,
        code: str = "",
        method: payment_pb2.PaymentMethod.ValueType = WALLET,
        token: str = "",
        request_id: str | None = None,
    ) -> pb.Order:
        request = pb.PlaceOrderRequest(
            request_id=rid() if request_id is None else request_id,
            customer_id=customer,
            lines=[pb.LineItem(sku=sku, quantity=quantity) for sku, quantity in lines],
            points_to_use=points,
            promo_code=code,
            payment_method=method,
            card_token=token,
        )
        return self.stub.PlaceOrder(request, timeout=30).order

    def order(self, order_id: str, customer: str = "") -> pb.Order:
        return self.stub.GetOrder(pb.GetOrderRequest(order_id=order_id, customer_id=customer), timeout=10).order

    def deliver(self, order_id: str, request_id: str | None = None) -> pb.Order:
        request = pb.DeliverOrderRequest(request_id=request_id or rid(), order_id=order_id)
        return self.stub.DeliverOrder(request, timeout=10).order

    def cancel(self, order_id: str, customer: str = "", reason: str = "", request_id: str | None = None) -> pb.Order:
        request = pb.CancelOrderRequest(
            request_id=request_id or rid(), order_id=order_id, customer_id=customer, reason=reason
        )
        return self.stub.CancelOrder(request, timeout=30).order

    def return_items(
        self, order_id: str, *lines: tuple[str, int], customer: str = "", request_id: str | None = None
    ) -> pb.ReturnOrderItemsResponse:
        request = pb.ReturnOrderItemsRequest(
            request_id=request_id or rid(),
            order_id=order_id,
            customer_id=customer,
            lines=[pb.LineItem(sku=sku, quantity=quantity) for sku, quantity in lines],
            reason="did not fit",
        )
        return self.stub.ReturnOrderItems(request, timeout=30)

    def recover(self, stuck_seconds: int = 0) -> pb.RecoverOrdersResponse:
        request = pb.RecoverOrdersRequest(request_id=rid(), stuck_for=Duration(seconds=stuck_seconds))
        return self.stub.RecoverOrders(request, timeout=60)


@dataclass
class Platform:
    """The four services and their clients."""

    harness: Harness
    services: dict[str, RunningService]
    checkout: CheckoutClient
    wallet: WalletClient
    points: PointsClient

    def deliver_outboxes(self) -> None:
        """Deliver every outbox (Checkout -> Points, Promotions -> Points) until they are empty."""
        for _ in range(10):
            moved = sum(svc.app.runtime.relay.deliver_due() for svc in self.services.values())
            if not moved:
                return

    def restart_checkout(self, **overrides: str) -> None:
        """Stop the Checkout app and start a new one on the same database (a process restart)."""
        old = self.services["checkout"]
        self.harness.running.pop("checkout", None)
        with contextlib.suppress(Exception):  # a 'crashed' app may already be half stopped
            old.stop()
        self.services["checkout"] = self.harness.start(
            "checkout",
            database_url=old.database_url,
            background_relay=False,
            **overrides,  # type: ignore[arg-type]
        )
        self.checkout = CheckoutClient(self.services["checkout"].channel())

    def balances(self, customer: str) -> Balances:
        points = self.points.balance(customer)
        try:
            wallet = self.wallet.wallet(customer)
            money_minor, held = wallet.balance.amount_minor, wallet.held.amount_minor
        except grpc.RpcError:
            money_minor, held = 0, 0
        return Balances(money_minor, held, points.available, points.pending, points.held)


@dataclass(frozen=True)
class Balances:
    wallet: int
    wallet_held: int
    available: int
    pending: int
    points_held: int


def start_platform(
    harness: Harness,
    telemetry: Telemetry | None = None,
    env: Mapping[str, str] | None = None,
    **checkout_overrides: str,
) -> Platform:
    """Points, Promotions, Wallet and Checkout with their relays off: the tests deliver. `env`
    overrides settings of all four."""
    services = {}
    common = dict(env or {})
    for name in ("points", "promotions", "wallet"):
        services[name] = harness.start(name, background_relay=False, **common)  # type: ignore[arg-type]
    services["checkout"] = harness.start(
        "checkout",
        background_relay=False,
        telemetry=telemetry,
        **{**common, **checkout_overrides},  # type: ignore[arg-type]
    )
    platform = Platform(
        harness=harness,
        services=services,
        checkout=CheckoutClient(services["checkout"].channel()),
        wallet=WalletClient(services["wallet"]),
        points=PointsClient(services["points"].channel()),
    )
    for sku, (title, category, price) in CATALOGUE.items():
        platform.checkout.upsert(sku, title, category, price)
    return platform


def fund(platform: Platform, customer: str, *, money_minor: int = 0, points: int = 0) -> None:
    if money_minor:
        platform.wallet.top_up(customer, money_minor)
    if points:
        platform.points.credit(customer, points, "CAMPAIGN", reference="welcome")
