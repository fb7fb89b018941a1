"""One trace per HTTP request: the gateway's server span, its gRPC client spans, the service's
server span, all under one trace id."""

from __future__ import annotations

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app import close, create_app
from shared.telemetry import Telemetry
from tests.harness import Harness
from tests.integration.gateway_support import as_customer, customer_id, gateway_settings


def test_an_http_request_is_one_trace_through_the_gateway_into_the_service(harness: Harness) -> None:
    service_spans, gateway_spans = InMemorySpanExporter(), InMemorySpanExporter()
    points = harness.start(
        "points", telemetry=Telemetry("points", environ={}, processors=(SimpleSpanProcessor(service_spans),))
    )
    telemetry = Telemetry("gateway", environ={}, processors=(SimpleSpanProcessor(gateway_spans),))
    app = create_app(gateway_settings({"points": points.target}), telemetry=telemetry)
    try:
        with TestClient(app) as api:
            answer = api.get("/v1/points", headers={**as_customer(customer_id()), "X-Request-Id": "rid-42"})
            assert answer.status_code == 200
    finally:
        close(app)

    by_kind = {span.kind.name: span for span in gateway_spans.get_finished_spans()}
    server, client = by_kind["SERVER"], by_kind["CLIENT"]
    assert server.name == "GET /v1/points"
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 200
    assert server.attributes["loyalty.request_id"] == "rid-42"
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    assert client.name.endswith("PointsService/GetBalance")
    service_server = [s for s in service_spans.get_finished_spans() if s.name.endswith("PointsService/GetBalance")]
    assert [s.context.trace_id for s in service_server] == [server.context.trace_id]


def test_a_callers_traceparent_is_continued(harness: Harness) -> None:
    spans = InMemorySpanExporter()
    points = harness.start("points")
    telemetry = Telemetry("gateway", environ={}, processors=(SimpleSpanProcessor(spans),))
    app = create_app(gateway_settings({"points": points.target}), telemetry=telemetry)
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    try:
        with TestClient(app) as api:
            headers = {**as_customer(customer_id()), "traceparent": f"00-{trace_id}-{parent_id}-01"}
            assert api.get("/v1/points", headers=headers).status_code == 200
    finally:
        close(app)
    server = next(span for span in spans.get_finished_spans() if span.kind.name == "SERVER")
    assert format(server.context.trace_id, "032x") == trace_id
    assert server.parent is not None and format(server.parent.span_id, "016x") == parent_id
