"""The whole trace of a checkout (issue 9): an order paid with points and wallet money, placed
through the gateway's HTTP API against the four real services, every process reporting into one
in-memory exporter.

What is true, and asserted: the request is one trace rooted at the gateway's server span; it holds
spans of the gateway and of all four services; the gateway's client span parents Checkout's server
span, and Checkout's client spans parent the server spans of Wallet, Points and Promotions (the
saga's holds, captures and evaluation happen inside the request; Wallet also asks Promotions for
the customer's mechanic, so some Promotions server spans sit under Wallet's client spans); every
span's parent is in the
trace; every database span sits under a server span of its own service. Work that the request
leaves to an outbox (e.g. the order's points accrual and promo redemption messages) is delivered
later in a trace of its own whose delivery span *links* to the span that wrote the message,
rather than being its child; that is asserted too. No health check is traced, and neither the
card token nor the bearer token or JWT secret appears in any span attribute.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.app import close, create_app
from shared.telemetry import Telemetry
from tests.harness import Harness, RunningService
from tests.integration.gateway_support import SECRET, as_customer, as_operator, customer_id, gateway_settings, key
from tests.integration.tracing_support import assert_db_spans_under_own_server, by_id, is_db, only, service_of

CARD_TOKEN = "tok_mastercard"
SERVICES = ("points", "promotions", "wallet", "checkout")


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def telemetry(service: str, spans: InMemorySpanExporter) -> Telemetry:
    return Telemetry(service, environ={}, processors=(SimpleSpanProcessor(spans),))


@pytest.fixture
def traced(harness: Harness, spans: InMemorySpanExporter) -> dict[str, RunningService]:
    """The four services, outbox relays driven by the test, all reporting into `spans`."""
    return {name: harness.start(name, telemetry=telemetry(name, spans), background_relay=False) for name in SERVICES}


@pytest.fixture
def api(traced: dict[str, RunningService], spans: InMemorySpanExporter) -> Iterator[TestClient]:
    app = create_app(
        gateway_settings({name: svc.target for name, svc in traced.items()}), telemetry=telemetry("gateway", spans)
    )
    try:
        with TestClient(app) as client:
            yield client
    finally:
        close(app)


def test_a_checkout_through_the_gateway_is_one_trace_across_all_four_services(
    api: TestClient, traced: dict[str, RunningService], spans: InMemorySpanExporter
) -> None:
    cust = customer_id()
    put = api.put(
        "/v1/admin/catalog/kettle",
        json={"title": "Kettle", "category": "appliances", "price_minor": 50_000},
        headers=as_operator(),
    )
    assert put.status_code == 201, put.text
    top_up = api.post(
        "/v1/wallet/top-ups",
        json={"amount_minor": 500_000, "card_token": CARD_TOKEN},
        headers=as_customer(cust, key()),
    )
    assert top_up.status_code == 201, top_up.text
    adjust = api.post(
        f"/v1/admin/customers/{cust}/points-adjustments",
        json={"points": 300, "reason": "welcome"},
        headers=as_operator(key=key()),
    )
    assert adjust.status_code == 201, adjust.text
    assert api.get("/readyz").status_code == 200  # health checks of every backend: never traced
    for service in traced.values():
        service.app.runtime.relay.deliver_due()
    before = len(spans.get_finished_spans())

    headers = as_customer(cust, "order-1")
    placed = api.post(
        "/v1/orders",
        json={"lines": [{"sku": "kettle", "quantity": 2}], "points_to_use": 300, "payment_method": "WALLET"},
        headers=headers,
    )
    assert placed.status_code == 201, placed.text
    assert placed.json()["points_applied"] == 300 and placed.json()["money_paid_minor"] == 100_000 - 300 * 100
    delivered = sum(service.app.runtime.relay.deliver_due() for service in traced.values())

    everything = spans.get_finished_spans()  # the set-up's requests too: their secrets are checked
    finished = everything[before:]
    index = by_id(finished)
    root = only(finished, "gateway", SpanKind.SERVER, "POST /v1/orders")
    trace_id = root.context.trace_id
    trace = [s for s in finished if s.context.trace_id == trace_id]

    # One root, and every other span's parent is in the trace.
    assert root.parent is None
    assert [s.name for s in trace if s.parent is None] == [root.name]
    orphans = [s.name for s in trace if s.parent is not None and s.parent.span_id not in by_id(trace)]
    assert orphans == []
    assert {service_of(s) for s in trace} == {"gateway", *SERVICES}

    # gateway -> Checkout -> Wallet, Points, Promotions, each server span under a client span of
    # its caller.
    gateway_client = only(trace, "gateway", SpanKind.CLIENT, "CheckoutService/PlaceOrder")
    checkout_server = only(trace, "checkout", SpanKind.SERVER, "CheckoutService/PlaceOrder")
    assert gateway_client.parent is not None and gateway_client.parent.span_id == root.context.span_id
    assert checkout_server.parent is not None and checkout_server.parent.span_id == gateway_client.context.span_id
    assert (checkout_server.attributes or {})["loyalty.customer_id"] == cust
    for callee in ("wallet", "points", "promotions"):
        servers = [s for s in trace if service_of(s) == callee and s.kind == SpanKind.SERVER]
        assert servers, f"no {callee} server span in the order's trace"
        callers = {_caller(s, index) for s in servers}
        # Checkout calls each; Wallet also asks Promotions for the customer's mechanic.
        assert "checkout" in callers and callers <= {"checkout", "wallet"}, (callee, callers)
        assert all(checkout_server in _ancestors(s, index) for s in servers)

    # Database spans: in each of the four services, each under a server span of its own service.
    assert {service_of(s) for s in trace if is_db(s)} == set(SERVICES)
    assert assert_db_spans_under_own_server(trace, index) >= 4

    # The outbox deliveries the order caused run later, each a trace of its own linked to the
    # span (in the order's trace) that wrote the message.
    deliveries = [s for s in finished if s.kind == SpanKind.PRODUCER and s.name == "outbox deliver"]
    assert delivered >= 1 and deliveries, (  # it failed once in CI (SQLite, loaded): say why next time
        placed.json(),
        {name: svc.app.runtime.outbox.stats(svc.app.runtime.db) for name, svc in traced.items()},
    )
    for delivery in deliveries:
        assert delivery.context.trace_id != trace_id and delivery.parent is None
        assert [link.context.trace_id for link in delivery.links] == [trace_id]
        assert all(link.context.span_id in index for link in delivery.links)

    # Nothing secret in any attribute of any span, no health checks traced.
    bearer = headers["Authorization"].removeprefix("Bearer ")
    values = [str(value) for s in everything for value in (s.attributes or {}).values()]
    assert not [v for v in values if CARD_TOKEN in v or bearer in v or SECRET in v]
    assert any(s.name == "POST /v1/wallet/top-ups" for s in everything)
    assert not [s.name for s in everything if "Health" in s.name or s.name.endswith(("/readyz", "/healthz"))]


def _ancestors(span: ReadableSpan, index: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    found = []
    while span.parent is not None:
        span = index[span.parent.span_id]
        found.append(span)
    return found


def _caller(server: ReadableSpan, index: dict[int, ReadableSpan]) -> str:
    assert server.parent is not None
    client = index[server.parent.span_id]
    assert client.kind == SpanKind.CLIENT, (server.name, client.name)
    return service_of(client)
