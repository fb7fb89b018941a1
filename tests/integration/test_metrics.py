"""Metrics appear after calls: per-RPC requests, errors (with reason) and durations; business
counters counted once (a replay counts nothing); outbox backlog and age; the Prometheus scrape
endpoint; the HTTP middleware, and the gateway's per-route metrics on its own endpoint."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy import text

from shared.clock import ManualClock
from shared.db import Database
from shared.metrics import HttpMetricsMiddleware
from shared.telemetry import Telemetry
from tests.clients import PointsClient, refused
from tests.harness import Harness, free_port
from tests.integration.test_outbox import record_contacts_updated
from tests.integration.wallet_support import rub


def points_of(reader: InMemoryMetricReader) -> Iterator[tuple[str, dict[str, Any], Any]]:
    data = reader.get_metrics_data()
    if data is None:
        return
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    yield metric.name, dict(point.attributes or {}), point


def value(reader: InMemoryMetricReader, name: str, **attributes: Any) -> int:
    """Sum of a counter's (or a gauge's) points whose attributes include `attributes`."""
    return sum(
        int(point.value)
        for metric, attrs, point in points_of(reader)
        if metric == name and all(attrs.get(k) == v for k, v in attributes.items())
    )


def histogram_count(reader: InMemoryMetricReader, name: str, **attributes: Any) -> int:
    return sum(
        int(point.count)
        for metric, attrs, point in points_of(reader)
        if metric == name and all(attrs.get(k) == v for k, v in attributes.items())
    )


def measured(service: str) -> tuple[Telemetry, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    return Telemetry(service, environ={}, metric_readers=(reader,)), reader


def test_rpc_requests_errors_and_durations_are_measured_per_method(harness: Harness) -> None:
    telemetry, reader = measured("points")
    points = harness.start("points", telemetry=telemetry)
    client = PointsClient(points.channel())
    client.credit("c-1", 100)
    client.credit("c-1", 50)
    assert refused(lambda: client.hold("c-1", 1_000)).reason == "INSUFFICIENT_POINTS"
    health_pb2_grpc.HealthStub(points.channel()).Check(health_pb2.HealthCheckRequest())

    method = {"rpc.service": "loyalty.points.v1.PointsService"}
    assert value(reader, "loyalty.rpc.server.requests", **method, **{"rpc.method": "CreditPoints"}) == 2
    assert (
        value(reader, "loyalty.rpc.server.requests", **{"rpc.method": "CreditPoints", "rpc.grpc.status_code": "OK"})
        == 2
    )
    assert (
        value(
            reader,
            "loyalty.rpc.server.errors",
            **{
                "rpc.method": "HoldPoints",
                "rpc.grpc.status_code": "FAILED_PRECONDITION",
                "loyalty.rpc.reason": "INSUFFICIENT_POINTS",
            },
        )
        == 1
    )
    assert value(reader, "loyalty.rpc.server.errors", **{"rpc.method": "CreditPoints"}) == 0
    assert histogram_count(reader, "loyalty.rpc.server.duration", **{"rpc.method": "CreditPoints"}) == 2
    assert histogram_count(reader, "loyalty.rpc.server.duration", **{"rpc.method": "HoldPoints"}) == 1
    assert not [attrs for name, attrs, _ in points_of(reader) if "Health" in str(attrs.get("rpc.service"))]


def test_points_credited_spent_and_expired_are_counted_once(harness: Harness, clock: ManualClock) -> None:
    telemetry, reader = measured("points")
    client = PointsClient(harness.start("points", telemetry=telemetry).channel())
    client.credit("c-1", 100, "CAMPAIGN", request_id="credit-1")
    client.credit("c-1", 100, "CAMPAIGN", request_id="credit-1")  # a replay: nothing new
    client.credit("c-1", 30, "PURCHASE", pending=True, reference="order-9")
    client.credit("c-2", 40, "CAMPAIGN", expires_at=clock.now() + timedelta(days=1))
    client.credit("c-3", 25, "CAMPAIGN", expires_at=clock.now() + timedelta(days=1))
    hold = client.hold("c-1", 60)
    client.capture(hold.hold_id)
    clock.advance(timedelta(days=2))
    client.credit("c-3", 1, "CAMPAIGN")  # c-3's book settles first: its lot expires here, not in the job
    assert client.expire(request_id="expire-1").points_expired == 40
    client.expire(request_id="expire-1")  # a replayed job run
    client.expire(request_id="expire-2")  # nothing left to expire

    assert value(reader, "loyalty.points.credited", source="CAMPAIGN", pending=False) == 166
    assert value(reader, "loyalty.points.credited", source="PURCHASE", pending=True) == 30
    assert value(reader, "loyalty.points.spent") == 60
    assert value(reader, "loyalty.points.expired") == 65


def test_money_topped_up_is_counted_when_the_top_up_succeeds(harness: Harness) -> None:
    telemetry, reader = measured("wallet")
    harness.start("points")
    harness.start("promotions")
    wallet = harness.start("wallet", telemetry=telemetry)
    stub = wallet_pb2_grpc.WalletServiceStub(wallet.channel())
    request = wallet_pb2.TopUpRequest(request_id="t-1", customer_id="c-1", amount=rub(250_000), card_token="tok_ok")
    stub.TopUp(request)
    stub.TopUp(request)  # a retry of the same top-up
    declined = wallet_pb2.TopUpRequest(
        request_id="t-2", customer_id="c-1", amount=rub(10_000), card_token="tok_declined"
    )
    assert refused(lambda: stub.TopUp(declined)).reason == "CARD_DECLINED"
    assert value(reader, "loyalty.wallet.topped_up", currency="RUB") == 250_000


def test_outbox_backlog_age_and_deliveries(harness: Harness, clock: ManualClock) -> None:
    telemetry, reader = measured("promotions")
    points = harness.start("points")
    promotions = harness.start("promotions", telemetry=telemetry, background_relay=False)
    assert value(reader, "loyalty.outbox.pending") == 0
    record_contacts_updated(promotions)
    clock.advance(timedelta(seconds=90))
    assert value(reader, "loyalty.outbox.pending") == 1
    assert value(reader, "loyalty.outbox.oldest_age") == 90
    assert promotions.app.runtime.relay.deliver_due() == 1
    assert value(reader, "loyalty.outbox.pending") == 0
    assert value(reader, "loyalty.outbox.oldest_age") == 0
    assert value(reader, "loyalty.outbox.deliveries", outcome="delivered") == 1
    assert points.target  # the receiver was up


def test_saga_failures_and_http_routes_are_recorded_through_the_shared_api() -> None:
    telemetry, reader = measured("gateway")
    metrics = telemetry.metrics
    metrics.saga_failed("hold_money")
    metrics.saga_failed("hold_money")
    metrics.saga_failed("not-a-step")
    with metrics.http_request("POST", "/v1/orders/{order_id}/pay") as done:
        done(201)
    with pytest.raises(RuntimeError), metrics.http_request("GET", "/v1/wallet"):
        raise RuntimeError("handler crashed")
    assert value(reader, "loyalty.checkout.saga.failures", step="hold_money") == 2
    assert value(reader, "loyalty.checkout.saga.failures", step="other") == 1
    route = {"http.route": "/v1/orders/{order_id}/pay", "http.response.status_code": 201}
    assert value(reader, "loyalty.http.server.requests", **route) == 1
    assert histogram_count(reader, "loyalty.http.server.duration", **route) == 1
    assert (
        value(reader, "loyalty.http.server.requests", **{"http.route": "/v1/wallet", "http.response.status_code": 500})
        == 1
    )


def test_the_prometheus_endpoint_serves_the_service_metrics(harness: Harness) -> None:
    port = free_port()
    points = harness.start("points", METRICS_PORT=str(port))
    PointsClient(points.channel()).credit("c-1", 7)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    lines = body.splitlines()
    assert any(
        line.startswith("loyalty_rpc_server_requests_total{")
        and 'rpc_method="CreditPoints"' in line
        and line.endswith(" 1.0")
        for line in lines
    ), body
    assert any(line.startswith("loyalty_points_credited_total{") and line.endswith(" 7.0") for line in lines)
    assert any(line.startswith("loyalty_rpc_server_duration_seconds_bucket{") for line in lines)
    assert any(line.startswith("loyalty_outbox_pending") for line in lines)
    assert 'service_name="points"' in body


def test_the_asgi_middleware_labels_requests_by_route_template_never_by_path() -> None:
    telemetry, reader = measured("gateway")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"].startswith("/v1/orders/"):
            scope["route"] = SimpleNamespace(path="/v1/orders/{order_id}")  # what Starlette's router does
            if scope["path"].endswith("/boom"):
                raise RuntimeError("handler crashed")
            await send({"type": "http.response.start", "status": 200})
        else:
            await send({"type": "http.response.start", "status": 404 if scope["path"] != "/healthz" else 200})
        await send({"type": "http.response.body", "body": b""})

    middleware = HttpMetricsMiddleware(app, telemetry.metrics)

    async def call(path: str) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request"}

        async def send(_message: dict[str, Any]) -> None:
            return None

        await middleware({"type": "http", "method": "GET", "path": path}, receive, send)

    async def traffic() -> None:
        for order in ("o-1", "o-2", "o-3"):
            await call(f"/v1/orders/{order}")
        await call("/no/such/page")
        await call("/healthz")
        with pytest.raises(RuntimeError):
            await call("/v1/orders/o-4/boom")

    asyncio.run(traffic())
    routes = {attrs["http.route"] for name, attrs, _ in points_of(reader) if name == "loyalty.http.server.requests"}
    assert routes == {"/v1/orders/{order_id}", "unmatched"}
    assert value(reader, "loyalty.http.server.requests", **{"http.route": "/v1/orders/{order_id}"}) == 4
    ok = {"http.route": "/v1/orders/{order_id}", "http.response.status_code": 200}
    assert histogram_count(reader, "loyalty.http.server.duration", **ok) == 3
    crashed = {"http.route": "/v1/orders/{order_id}", "http.response.status_code": 500}
    assert value(reader, "loyalty.http.server.requests", **crashed) == 1
    assert value(reader, "loyalty.http.server.requests", **{"http.response.status_code": 404}) == 1


def test_a_failed_checkout_saga_is_counted_by_the_step_that_failed(harness: Harness) -> None:
    from tests.integration.checkout_support import CARD, CheckoutClient, fund, start_platform

    telemetry, reader = measured("checkout")
    platform = start_platform(harness, telemetry=telemetry)
    fund(platform, "m-1", money_minor=10_000)
    checkout = CheckoutClient(platform.services["checkout"].channel())
    assert refused(lambda: checkout.place("m-1", ("kettle", 1))).reason == "INSUFFICIENT_FUNDS"
    assert refused(lambda: checkout.place("m-1", ("kettle", 1), method=CARD, token="tok_declined")).reason == (
        "CARD_DECLINED"
    )
    checkout.place("m-1", ("pen", 1))  # paid: not counted
    assert value(reader, "loyalty.checkout.saga.failures", step="hold_money") == 2


def test_the_gateway_measures_each_request_by_route_template_on_its_prometheus_endpoint(harness: Harness) -> None:
    from fastapi.testclient import TestClient

    from gateway.app import close, create_app
    from tests.integration.gateway_support import as_operator, gateway_settings, key

    points = harness.start("points")
    port = free_port()
    telemetry = Telemetry("gateway", environ={"METRICS_PORT": str(port)})
    app = create_app(gateway_settings({"points": points.target}, GATEWAY_HOST="127.0.0.1"), telemetry=telemetry)
    try:
        with TestClient(app) as api:  # its start-up opens the endpoint
            for customer in ("c-http-1", "c-http-2"):
                answer = api.post(
                    f"/v1/admin/customers/{customer}/points-adjustments",
                    json={"points": 5, "reason": "goodwill"},
                    headers=as_operator(key=key()),
                )
                assert answer.status_code == 201, answer.text
            assert api.get("/no/such/page").status_code == 404
            assert api.get("/healthz").status_code == 200
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                body = response.read().decode()
    finally:
        close(app)
    requests = [line for line in body.splitlines() if line.startswith("loyalty_http_server_requests_total{")]
    route = 'http_route="/v1/admin/customers/{customer_id}/points-adjustments"'
    assert [line for line in requests if route in line and 'http_response_status_code="201"' in line and
            'http_request_method="POST"' in line and line.endswith(" 2.0")], body  # fmt: skip
    assert any('http_route="unmatched"' in line and line.endswith(" 1.0") for line in requests), body
    assert not [line for line in requests if "c-http-" in line or "/healthz" in line or "/no/such" in line]
    assert any(
        line.startswith("loyalty_http_server_duration_seconds_bucket{") and route in line for line in body.splitlines()
    )
    assert 'service_name="gateway"' in body


def test_statements_and_transactions_of_the_database_are_counted(harness: Harness) -> None:
    """`loyalty.db.statements` and `loyalty.db.transactions`: a unit of work counts its statements
    and its commit or rollback; a read through `Database.read` is one statement, on PostgreSQL
    outside any transaction (autocommit: no BEGIN, COMMIT or ROLLBACK round trip)."""
    telemetry, reader = measured("points")
    database = Database(harness.databases.new("metrics"))
    telemetry.metrics.watch_database(database.engine)

    def counts() -> tuple[int, int, int]:
        return (
            value(reader, "loyalty.db.statements"),
            value(reader, "loyalty.db.transactions", outcome="commit"),
            value(reader, "loyalty.db.transactions", outcome="rollback"),
        )

    try:
        with database.unit_of_work() as uow:
            uow.session.execute(text("CREATE TABLE counted (n integer NOT NULL)"))
            uow.session.execute(text("INSERT INTO counted VALUES (1)"))
            uow.commit()
        written = counts()
        with database.unit_of_work() as uow:
            uow.session.execute(text("UPDATE counted SET n = 2"))  # rolled back
        rolled_back = counts()
        with database.read() as session:
            assert session.execute(text("SELECT n FROM counted")).scalar_one() == 1
        read = counts()
    finally:
        database.dispose()
    sqlite = harness.databases.backend == "sqlite"
    # SQLite's BEGIN IMMEDIATE is a statement of its own.
    assert written == (2 + sqlite, 1, 0)
    assert rolled_back == (written[0] + 1 + sqlite, 1, 1)
    if sqlite:
        assert read == (rolled_back[0] + 2, 1, 2)  # a unit of work, rolled back
    else:
        assert read == (rolled_back[0] + 1, 1, 1)
