"""Restarts under load (docs/reliability.md): while clients keep topping up wallets, crediting
points, placing orders and recording survey rewards, each service in turn is stopped and started
again on its database and port. A client retries an unanswered call with the same request id
until it is answered, as a real one would. Afterwards everything that was acknowledged is there,
exactly once, and the reconciliation is clean."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from loyalty.checkout.v1 import checkout_pb2 as pb
from loyalty.checkout.v1 import checkout_pb2_grpc
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from loyalty.promotions.v1 import promotions_pb2, promotions_pb2_grpc
from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from shared.clock import ManualClock
from tests.clients import rid
from tests.harness import START_ORDER, Databases, Harness
from tests.integration.checkout_support import WALLET, Platform, fund, start_platform
from tests.integration.faults_support import (
    PLATFORM_ENV,
    assert_outboxes_delivered,
    assert_reconciles,
    orders_of,
    restart,
    settle,
)
from tests.integration.wallet_support import rub

TOP_UP, CREDIT, SOAP, SURVEY_REWARD = 10_000, 10, 9_950, 100
ORDER_FUNDS = 5_000_000


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    databases = Databases(tmp_path_factory.mktemp("restarts"))
    harness = Harness(databases, ManualClock())
    try:
        yield start_platform(harness, env=PLATFORM_ENV)
    finally:
        harness.close()
        databases.drop_all()


@dataclass
class Load:
    """One client calling one service in a loop; what it was told is done, by request id."""

    name: str
    call: Callable[[str], Any]
    acknowledged: list[Any] = field(default_factory=list)
    retries: int = 0
    failure: BaseException | None = None

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                request_id = rid()
                end = time.monotonic() + 120
                while time.monotonic() < end:  # retry the same request until it is answered
                    try:
                        self.acknowledged.append(self.call(request_id))
                        break
                    except grpc.RpcError as error:
                        if not unanswered(error):
                            raise
                        self.retries += 1
                        time.sleep(0.05)
                else:
                    raise AssertionError(f"{self.name}: {request_id} was never answered")
        except BaseException as error:
            self.failure = error


RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.ABORTED,
}


def unanswered(error: grpc.RpcError) -> bool:
    """The call got no answer from the service: a retryable status, or the stream cut while the
    server stopped (the gRPC core reports that as INTERNAL with the details "CANCELLED", not an
    INTERNAL sent by a handler, whose details are the service's own message)."""
    code, details = error.code(), error.details()
    return code in RETRYABLE or (code == grpc.StatusCode.INTERNAL and details == "CANCELLED")


def test_each_service_restarted_mid_load_loses_nothing_it_acknowledged(platform: Platform) -> None:
    fund(platform, "load-orders", money_minor=ORDER_FUNDS)
    channels = {name: grpc.insecure_channel(svc.target) for name, svc in platform.services.items()}
    wallet = wallet_pb2_grpc.WalletServiceStub(channels["wallet"])
    points = points_pb2_grpc.PointsServiceStub(channels["points"])
    promotions = promotions_pb2_grpc.PromotionsServiceStub(channels["promotions"])
    checkout = checkout_pb2_grpc.CheckoutServiceStub(channels["checkout"])

    def top_up(request_id: str) -> Any:
        request = wallet_pb2.TopUpRequest(
            request_id=request_id, customer_id="load-wallet", amount=rub(TOP_UP), card_token="tok_ok"
        )
        return wallet.TopUp(request, timeout=5).top_up.top_up_id

    def credit(request_id: str) -> Any:
        request = points_pb2.CreditPointsRequest(
            request_id=request_id, customer_id="load-points", points=CREDIT, source=points_pb2.POINTS_SOURCE_CAMPAIGN
        )
        return points.CreditPoints(request, timeout=5).lot.lot_id

    def survey(request_id: str) -> Any:
        request = promotions_pb2.RecordProfileActionRequest(
            request_id=request_id,
            customer_id="load-surveys",
            action=promotions_pb2.PROFILE_ACTION_TYPE_SURVEY_COMPLETED,
            survey_id=request_id,
        )
        assert promotions.RecordProfileAction(request, timeout=5).points_awarded == SURVEY_REWARD
        return request_id

    def order(request_id: str) -> Any:
        request = pb.PlaceOrderRequest(
            request_id=request_id, customer_id="load-orders", lines=[pb.LineItem(sku="soap", quantity=1)]
        )
        request.payment_method = WALLET
        return checkout.PlaceOrder(request, timeout=30).order.order_id

    loads = [Load("top-ups", top_up), Load("credits", credit), Load("surveys", survey), Load("orders", order)]
    stop = threading.Event()
    threads = [threading.Thread(target=load.run, args=(stop,), name=load.name) for load in loads]
    for thread in threads:
        thread.start()
    try:
        for name in START_ORDER:  # points, promotions, wallet, checkout: each restarted in turn
            wait_for_progress(loads)
            restart(platform, name)
        wait_for_progress(loads)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=180)
        for channel in channels.values():
            channel.close()
    for load in loads:
        assert load.failure is None, f"{load.name}: {load.failure!r}"
    settle(platform)  # orders a restart left PENDING are finished; survey rewards delivered

    top_ups, credits, surveys, orders = (load.acknowledged for load in loads)
    assert len(set(top_ups)) == len(top_ups) and platform.wallet.balance("load-wallet") == TOP_UP * len(top_ups)
    assert len(set(credits)) == len(credits) and platform.points.balance("load-points").available == CREDIT * len(
        credits
    )
    assert platform.points.balance("load-surveys").available == SURVEY_REWARD * len(surveys)
    placed = orders_of(platform, "load-orders")
    assert sorted(o.order_id for o in placed) == sorted(set(orders)) and len(set(orders)) == len(orders)
    assert {o.status for o in placed} == {pb.ORDER_STATUS_PAID}
    assert platform.wallet.balance("load-orders") == ORDER_FUNDS - SOAP * len(orders)
    assert_outboxes_delivered(platform)
    assert_reconciles(platform)
    assert sum(load.retries for load in loads) > 0, "the restarts were felt by the clients"


def wait_for_progress(loads: list[Load], each: int = 3) -> None:
    """Let every client get a few more calls acknowledged (the services are up again)."""
    marks = [len(load.acknowledged) for load in loads]
    end = time.monotonic() + 60
    while any(
        len(load.acknowledged) < mark + each and load.failure is None for load, mark in zip(loads, marks, strict=True)
    ):
        if time.monotonic() > end:
            raise AssertionError("the load made no progress")
        time.sleep(0.02)
