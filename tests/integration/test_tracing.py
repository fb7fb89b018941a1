"""One trace per request across services, with an in-memory exporter: client and server spans
with intact parents, database spans under the server span of their own service, outbox
deliveries linked to the request (here: the scheduled job) that wrote the message, request ids
and quantities on the spans and never a card token, and no spans for health checks."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared.clock import ManualClock
from shared.jobs import run_job
from shared.logs import JsonFormatter
from shared.settings import Env
from shared.telemetry import Telemetry
from tests.harness import Harness, RunningService
from tests.integration.test_wallet_interest import after_month
from tests.integration.tracing_support import (
    ancestors,
    assert_db_spans_under_own_server,
    by_id,
    is_db,
    only,
    service_of,
)
from tests.integration.wallet_support import rub

CARD_TOKEN = "tok_mastercard"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def telemetry(service: str, spans: InMemorySpanExporter) -> Telemetry:
    return Telemetry(service, environ={}, processors=(SimpleSpanProcessor(spans),))


@pytest.fixture
def traced(harness: Harness, spans: InMemorySpanExporter) -> Iterator[dict[str, RunningService]]:
    """Points, Promotions and Wallet, each reporting into the same in-memory exporter."""
    running = {}
    for service in ("points", "promotions", "wallet"):
        running[service] = harness.start(service, telemetry=telemetry(service, spans), background_relay=False)
    yield running


def test_a_request_through_wallet_and_promotions_is_one_trace_with_parents_intact(
    traced: dict[str, RunningService], spans: InMemorySpanExporter
) -> None:
    frontend = telemetry("frontend", spans)
    wallet = traced["wallet"]
    channel = frontend.intercept_channel(wallet.channel())
    stub = wallet_pb2_grpc.WalletServiceStub(channel)
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    with frontend.tracer.start_as_current_span("POST /v1/wallet/top-ups") as root:
        stub.TopUp(
            wallet_pb2.TopUpRequest(
                request_id="top-up-1", customer_id="c-trace", amount=rub(500_000), card_token=CARD_TOKEN
            )
        )
    trace_id = root.get_span_context().trace_id
    finished = spans.get_finished_spans()
    trace = [s for s in finished if s.context is not None and s.context.trace_id == trace_id]
    index = by_id(trace)

    assert {service_of(s) for s in trace} == {"frontend", "wallet", "promotions"}
    wallet_server = only(trace, "wallet", SpanKind.SERVER, "WalletService/TopUp")
    frontend_client = only(trace, "frontend", SpanKind.CLIENT, "WalletService/TopUp")
    assert wallet_server.parent is not None and wallet_server.parent.span_id == frontend_client.context.span_id
    assert frontend_client.parent is not None and frontend_client.parent.span_id == root.get_span_context().span_id
    # Wallet asks Promotions for the customer's mechanic: client span under Wallet's server span.
    promotions_servers = [s for s in trace if service_of(s) == "promotions" and s.kind == SpanKind.SERVER]
    assert promotions_servers
    for server in promotions_servers:
        client = index[server.parent.span_id]  # type: ignore[union-attr]
        assert (service_of(client), client.kind) == ("wallet", SpanKind.CLIENT)
        assert wallet_server in ancestors(client, index)
    assert assert_db_spans_under_own_server(trace, index) >= 2
    assert any(is_db(s) and service_of(s) == "promotions" for s in trace)

    # What an SRE searches by is on the server span; the card token is nowhere.
    attributes = wallet_server.attributes or {}
    assert attributes["loyalty.customer_id"] == "c-trace"
    assert attributes["loyalty.request_id"] == "top-up-1"
    assert attributes["loyalty.amount.amount_minor"] == 500_000
    assert all(CARD_TOKEN not in str(value) for s in finished for value in (s.attributes or {}).values())
    # Health checks are not traced.
    assert not [s for s in finished if "Health" in s.name]


def test_a_refused_rpc_names_its_reason_on_the_server_span(
    traced: dict[str, RunningService], spans: InMemorySpanExporter
) -> None:
    stub = wallet_pb2_grpc.WalletServiceStub(traced["wallet"].channel())
    with pytest.raises(grpc.RpcError):
        stub.GetWallet(wallet_pb2.GetWalletRequest(customer_id="nobody"))
    server = only(spans.get_finished_spans(), "wallet", SpanKind.SERVER, "WalletService/GetWallet")
    assert (server.attributes or {})["loyalty.rpc.reason"] == "WALLET_NOT_FOUND"
    assert (server.attributes or {})["loyalty.customer_id"] == "nobody"


def test_a_job_run_is_one_trace_and_its_outbox_delivery_links_back_to_it(
    traced: dict[str, RunningService], spans: InMemorySpanExporter, clock: ManualClock
) -> None:
    wallet = traced["wallet"]
    stub = wallet_pb2_grpc.WalletServiceStub(wallet.channel())
    stub.TopUp(
        wallet_pb2.TopUpRequest(request_id="t-1", customer_id="saver", amount=rub(5_000_000), card_token="tok_ok")
    )
    clock.set(after_month("2026-01"))
    spans.clear()

    jobs = telemetry("jobs", spans)
    answer = run_job(
        "post-monthly-interest",
        env=Env({"WALLET_TARGET": wallet.target}),
        telemetry=jobs,
        scheduled_at="2026-02-01T00:05:00+03:00",
    )
    assert answer.month == "2026-01"  # type: ignore[attr-defined]
    assert answer.wallets_posted == 1  # type: ignore[attr-defined]
    assert wallet.app.runtime.relay.deliver_due() == 1

    finished = spans.get_finished_spans()
    index = by_id(finished)
    job = only(finished, "jobs", SpanKind.INTERNAL, "job post-monthly-interest")
    assert (job.attributes or {})["loyalty.job.request_id"] == "job:post-monthly-interest:2026-01-31T21:05Z"
    post = only(finished, "wallet", SpanKind.SERVER, "WalletService/PostMonthlyInterest")
    assert job in ancestors(post, index)  # the background job's trace starts at its trigger
    assert post.context.trace_id == job.context.trace_id

    delivery = only(finished, "wallet", SpanKind.PRODUCER, "outbox deliver")
    assert [(link.context.trace_id, link.context.span_id) for link in delivery.links] == [
        (post.context.trace_id, post.context.span_id)
    ]
    credit = only(finished, "points", SpanKind.SERVER, "PointsService/BatchCreditPoints")
    assert delivery in ancestors(credit, index)
    assert credit.context.trace_id == delivery.context.trace_id != post.context.trace_id
    delivery_trace = [s for s in finished if s.context.trace_id == delivery.context.trace_id]
    assert any(is_db(s) and service_of(s) == "points" for s in delivery_trace)
    assert assert_db_spans_under_own_server(delivery_trace, index) >= 1


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_log_lines_written_while_serving_carry_the_trace_and_span_ids(
    traced: dict[str, RunningService], spans: InMemorySpanExporter
) -> None:
    lines = Lines()
    logger = logging.getLogger("shared")
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        stub = wallet_pb2_grpc.WalletServiceStub(traced["wallet"].channel())
        with pytest.raises(grpc.RpcError):
            stub.GetWallet(wallet_pb2.GetWalletRequest(customer_id="nobody"))
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    server = only(spans.get_finished_spans(), "wallet", SpanKind.SERVER, "WalletService/GetWallet")
    [refusal] = [line for line in lines.lines if line["message"] == "rpc refused"]
    assert refusal["trace_id"] == format(server.context.trace_id, "032x")
    assert refusal["span_id"] == format(server.context.span_id, "016x")
    assert refusal["reason"] == "WALLET_NOT_FOUND"


def test_an_idle_service_starts_no_traces(traced: dict[str, RunningService], spans: InMemorySpanExporter) -> None:
    spans.clear()
    runtime = traced["promotions"].app.runtime
    for _ in range(3):
        assert runtime.relay.deliver_due() == 0  # the relay's poll
    assert runtime.outbox.backlog(runtime.db)[0] == 0  # what the outbox gauges read at a scrape
    traced["promotions"].app.server.check_readiness()  # the health probe
    assert spans.get_finished_spans() == ()
