"""The outbox: a message survives a restart of the sender and an outage of the receiver, and
is applied exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from loyalty.promotions.v1 import promotions_pb2, promotions_pb2_grpc

from services.promotions.adapters import points_peer
from shared.clock import ManualClock
from shared.outbox import OutboxRelay, OutboxStatus
from shared.outbox_batches import BATCH_CREDIT_POINTS
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


class _Peers:
    """A stand-in for `Peers`: answers every delivery with `answer()` (which may block or fail)."""

    def __init__(self, answer: Callable[[bytes], bytes]) -> None:
        self.answer = answer
        self.payloads: list[bytes] = []

    def call_raw(self, peer: str, method: str, payload: bytes, *, deadline_ms: int | None = None) -> bytes:
        self.payloads.append(payload)
        return self.answer(payload)


def _enqueue_credits(promotions: RunningService, count: int) -> None:
    runtime = promotions.app.runtime
    with runtime.db.unit_of_work() as uow:
        for n in range(count):
            request = points_peer.credit_request(
                request_id=f"many-{n}", customer_id=f"c-{n}", points=5, survey=False, reference=f"r-{n}"
            )
            runtime.outbox.enqueue(uow, peer="points", method=points_peer.CREDIT_POINTS, request=request)
        uow.commit()


def test_a_pass_delivers_its_messages_concurrently(harness: Harness, clock: ManualClock) -> None:
    # The peer answers only once three deliveries are in flight together: one at a time, the
    # barrier would break and nothing would be delivered.
    together = threading.Barrier(3, timeout=20)

    def answer(payload: bytes) -> bytes:
        together.wait()
        return b""

    promotions = harness.start("promotions", background_relay=False)
    runtime = promotions.app.runtime
    _enqueue_credits(promotions, 6)
    relay = OutboxRelay(runtime.db, runtime.outbox, _Peers(answer), clock, concurrency=3)  # type: ignore[arg-type]
    assert relay.deliver_due() == 6
    assert [row["status"] for row in outbox_rows(promotions)] == [OutboxStatus.DELIVERED] * 6
    assert relay.deliver_due() == 0


def test_a_message_whose_lease_ran_out_before_its_turn_is_left_for_the_next_claim(
    harness: Harness, clock: ManualClock
) -> None:
    def slow(payload: bytes) -> bytes:
        clock.advance(timedelta(seconds=31))  # the first delivery outlives the lease of the batch
        return b""

    promotions = harness.start("promotions", background_relay=False)
    runtime = promotions.app.runtime
    _enqueue_credits(promotions, 2)
    peers = _Peers(slow)
    relay = OutboxRelay(runtime.db, runtime.outbox, peers, clock, lease_ms=30_000)  # type: ignore[arg-type]
    assert relay.deliver_due() == 1
    first, second = outbox_rows(promotions)
    assert (first["status"], second["status"], second["attempts"]) == (OutboxStatus.DELIVERED, "PENDING", 0)
    assert len(peers.payloads) == 1  # not sent on a lapsed lease: another relay may hold it now
    assert relay.deliver_due() == 1
    assert [row["status"] for row in outbox_rows(promotions)] == [OutboxStatus.DELIVERED] * 2
    assert len(peers.payloads) == 2


def test_a_relay_whose_lease_lapsed_does_not_record_over_the_relay_that_delivered(
    harness: Harness, clock: ManualClock
) -> None:
    # Two replicas: the first claims a batch and stalls past its lease; the second claims it and
    # delivers it, refused in part (a dead letter for the refused item). The first then finishes:
    # its outcome is not recorded again, and no second dead letter appears.
    points = harness.start("points")
    promotions = harness.start("promotions", peers={"points": points.target}, background_relay=False)
    runtime = promotions.app.runtime
    batch = points_pb2.BatchCreditPointsRequest(
        request_id="two-relays",
        requests=[
            points_peer.credit_request(request_id="two-ok", customer_id="c-2", points=7, survey=False, reference="a"),
            points_peer.credit_request(request_id="two-bad", customer_id="c-2", points=0, survey=False, reference="b"),
        ],
    )
    with runtime.db.unit_of_work() as uow:
        runtime.outbox.enqueue(uow, peer="points", method=BATCH_CREDIT_POINTS, request=batch)
        uow.commit()
    first = OutboxRelay(runtime.db, runtime.outbox, runtime.peers, clock, lease_ms=30_000)
    second = OutboxRelay(runtime.db, runtime.outbox, runtime.peers, clock, lease_ms=30_000)
    [stalled], _ = first._claim()
    clock.advance(timedelta(seconds=31))
    assert second.deliver_due() == 1
    assert first._deliver(stalled) is False  # delivered again (harmless: keyed), not recorded again
    rows = outbox_rows(promotions)
    assert [(row["status"], row["attempts"]) for row in rows] == [(OutboxStatus.DELIVERED, 1), (OutboxStatus.DEAD, 1)]
    stub = points_pb2_grpc.PointsServiceStub(points.channel())
    assert stub.GetBalance(points_pb2.GetBalanceRequest(customer_id="c-2")).available == 7
