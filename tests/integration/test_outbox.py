"""The outbox: a message survives a restart of the sender and an outage of the receiver, and
is applied exactly once."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from loyalty.promotions.v1 import promotions_pb2, promotions_pb2_grpc

from services.promotions.adapters import points_peer
from shared.clock import ManualClock
from shared.outbox import OutboxStatus
from tests.harness import Harness, RunningService, free_port


def record_contacts_updated(
    promotions: RunningService, request_id: str = "act-1"
) -> promotions_pb2.RecordProfileActionResponse:
    stub = promotions_pb2_grpc.PromotionsServiceStub(promotions.channel())
    return stub.RecordProfileAction(
        promotions_pb2.RecordProfileActionRequest(
            request_id=request_id, customer_id="c-1", action=promotions_pb2.PROFILE_ACTION_TYPE_CONTACTS_UPDATED
        )
    )


def points_balance(points: RunningService) -> points_pb2.GetBalanceResponse:
    stub = points_pb2_grpc.PointsServiceStub(points.channel())
    return stub.GetBalance(points_pb2.GetBalanceRequest(customer_id="c-1"))


def outbox_rows(service: RunningService) -> list[dict[str, object]]:
    table = service.app.runtime.outbox.table
    with service.app.runtime.db.unit_of_work() as uow:
        return [dict(row._mapping) for row in uow.session.execute(table.select().order_by(table.c.id))]


def test_outage_of_receiver_and_restart_of_sender_deliver_exactly_once(harness: Harness, clock: ManualClock) -> None:
    points_port = free_port()
    points_target = f"127.0.0.1:{points_port}"

    # The receiver is down: the action is acknowledged and its credit waits in the outbox.
    promotions = harness.start("promotions", peers={"points": points_target}, background_relay=False)
    assert record_contacts_updated(promotions).points_awarded == 50
    relay = promotions.app.runtime.relay
    for _ in range(3):
        assert relay.deliver_due() == 0
        clock.advance(timedelta(minutes=5))
    [row] = outbox_rows(promotions)
    assert row["status"] == OutboxStatus.PENDING
    assert row["attempts"] == 3
    assert "UNAVAILABLE" in str(row["last_error"])

    # The sender restarts on the same database; nothing was lost.
    database_url = promotions.database_url
    harness.stop("promotions")
    promotions = harness.start(
        "promotions", database_url=database_url, peers={"points": points_target}, background_relay=False
    )
    [row] = outbox_rows(promotions)
    assert row["status"] == OutboxStatus.PENDING

    # The receiver comes back; the message is delivered once (the channel may need a moment to
    # reconnect, so the relay may meet UNAVAILABLE a few more times first).
    points = harness.start("points", POINTS_PORT=str(points_port))
    delivered = 0
    for _ in range(100):
        clock.advance(timedelta(minutes=5))
        delivered += promotions.app.runtime.relay.deliver_due()
        if delivered:
            break
        time.sleep(0.1)
    assert delivered == 1
    [row] = outbox_rows(promotions)
    assert row["status"] == OutboxStatus.DELIVERED
    assert isinstance(row["attempts"], int) and row["attempts"] >= 4
    assert row["last_error"] is None
    assert points_balance(points).available == 50

    # A redelivery (say the relay died after the call, before recording it) changes nothing.
    promotions.app.runtime.peers.call_raw("points", points_peer.CREDIT_POINTS, _payload_of(promotions))
    assert points_balance(points).available == 50

    # And the action itself cannot be rewarded twice, whatever the request id.
    again = record_contacts_updated(promotions, request_id="act-2")
    assert (again.points_awarded, again.already_rewarded) == (0, True)
    assert len(outbox_rows(promotions)) == 1


def _payload_of(service: RunningService) -> bytes:
    [row] = outbox_rows(service)
    payload = row["payload"]
    assert isinstance(payload, bytes)
    return payload


def test_a_peer_s_refusal_is_recorded_with_its_reason_and_not_retried(harness: Harness) -> None:
    points = harness.start("points")
    promotions = harness.start("promotions", peers={"points": points.target}, background_relay=False)
    runtime = promotions.app.runtime
    bad = points_peer.credit_request(request_id="bad-1", customer_id="c-1", points=0, survey=False, reference="x")
    with runtime.db.unit_of_work() as uow:
        runtime.outbox.enqueue(uow, peer="points", method=points_peer.CREDIT_POINTS, request=bad)
        uow.commit()
    assert runtime.relay.deliver_due() == 0
    [row] = outbox_rows(promotions)
    assert row["status"] == OutboxStatus.DEAD
    assert str(row["last_error"]).startswith("INVALID_ARGUMENT INVALID_POINTS_AMOUNT")
    assert runtime.outbox.stats(runtime.db).dead == 1


def test_the_background_relay_delivers_without_being_asked(harness: Harness) -> None:
    points = harness.start("points")
    promotions = harness.start("promotions")
    record_contacts_updated(promotions)
    for _ in range(200):  # the relay polls every 50 ms here; allow it ten seconds
        if points_balance(points).available == 50:
            break
        time.sleep(0.05)
    assert points_balance(points).available == 50


def test_an_outbox_request_without_request_id_is_a_programming_error(harness: Harness) -> None:
    promotions = harness.start("promotions")
    runtime = promotions.app.runtime
    with runtime.db.unit_of_work() as uow, pytest.raises(ValueError, match="request_id"):
        runtime.outbox.enqueue(
            uow, peer="points", method=points_peer.CREDIT_POINTS, request=points_pb2.CreditPointsRequest()
        )


def test_backoff_grows_and_is_capped(harness: Harness) -> None:
    relay = harness.start("promotions").app.runtime.relay
    delays = [relay.backoff(n) for n in range(1, 40)]
    assert all(timedelta(0) < d <= timedelta(seconds=60) for d in delays)
    assert delays[-1] >= timedelta(seconds=30)


def test_a_delivery_is_traced_and_linked_to_the_request_that_caused_it(harness: Harness) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from shared.telemetry import Telemetry

    spans = InMemorySpanExporter()
    telemetry = Telemetry("promotions", environ={}, processors=(SimpleSpanProcessor(spans),))
    points = harness.start("points")
    promotions = harness.start(
        "promotions", peers={"points": points.target}, telemetry=telemetry, background_relay=False
    )
    record_contacts_updated(promotions)
    assert promotions.app.runtime.relay.deliver_due() == 1
    finished = spans.get_finished_spans()
    [server] = [s for s in finished if s.name.endswith("RecordProfileAction")]
    [delivery] = [s for s in finished if s.name == "outbox deliver"]
    [client] = [s for s in finished if s.name.endswith("PointsService/CreditPoints")]
    assert server.context is not None and delivery.context is not None and client.context is not None
    assert [link.context.trace_id for link in delivery.links] == [server.context.trace_id]
    assert delivery.context.trace_id != server.context.trace_id
    assert client.parent is not None and client.parent.span_id == delivery.context.span_id
