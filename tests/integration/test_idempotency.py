"""AIP-155 on a real service: a replay returns the first answer; a conflicting replay is refused."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from sqlalchemy import event

from shared.errors import AlreadyExists, InvalidArgument, from_rpc_error
from tests.harness import RunningService


def credit(request_id: str, points: int = 100, customer: str = "c-1") -> points_pb2.CreditPointsRequest:
    return points_pb2.CreditPointsRequest(
        request_id=request_id,
        customer_id=customer,
        points=points,
        source=points_pb2.POINTS_SOURCE_PROMO_CODE,
        reference="promo:WELCOME",
    )


def balance(stub: points_pb2_grpc.PointsServiceStub, customer: str = "c-1") -> int:
    return stub.GetBalance(points_pb2.GetBalanceRequest(customer_id=customer)).available


def test_a_replay_returns_the_first_answer_and_changes_nothing(points: RunningService) -> None:
    stub = points_pb2_grpc.PointsServiceStub(points.channel())
    first = stub.CreditPoints(credit("req-1"))
    replay = stub.CreditPoints(credit("req-1"))
    assert replay == first
    assert balance(stub) == 100


def test_the_same_id_with_a_different_request_is_rejected(points: RunningService) -> None:
    stub = points_pb2_grpc.PointsServiceStub(points.channel())
    stub.CreditPoints(credit("req-1", points=100))
    with pytest.raises(grpc.RpcError) as raised:
        stub.CreditPoints(credit("req-1", points=5000))
    error = from_rpc_error(raised.value)
    assert isinstance(error, AlreadyExists)
    assert error.reason == "IDEMPOTENCY_KEY_REUSED"
    assert balance(stub) == 100


def test_concurrent_first_attempts_take_effect_once(points: RunningService) -> None:
    stub = points_pb2_grpc.PointsServiceStub(points.channel())
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: stub.CreditPoints(credit("req-race")), range(16)))
    assert len({a.lot.lot_id for a in answers}) == 1
    assert balance(stub) == 100


def test_a_refused_request_leaves_no_key_so_a_corrected_retry_works(points: RunningService) -> None:
    stub = points_pb2_grpc.PointsServiceStub(points.channel())
    with pytest.raises(grpc.RpcError) as raised:
        stub.CreditPoints(credit("req-2", points=0))
    assert isinstance(from_rpc_error(raised.value), InvalidArgument)
    assert balance(stub) == 0
    with pytest.raises(grpc.RpcError) as again:
        stub.CreditPoints(credit("req-2", points=0))
    assert from_rpc_error(again.value).reason == "INVALID_POINTS_AMOUNT"


def test_a_mutation_without_a_request_id_is_refused(points: RunningService) -> None:
    stub = points_pb2_grpc.PointsServiceStub(points.channel())
    with pytest.raises(grpc.RpcError) as raised:
        stub.CreditPoints(credit(""))
    error = from_rpc_error(raised.value)
    assert (type(error), error.reason) == (InvalidArgument, "REQUEST_ID_REQUIRED")
    assert error.field_violations[0].field == "request_id"


def test_a_new_request_writes_its_key_once_with_its_answer(points: RunningService) -> None:
    """One statement on the keys per new request: the key inserted with the answer after the
    effect (claiming it first and storing the answer later took two)."""
    stub = points_pb2_grpc.PointsServiceStub(points.channel())
    stub.CreditPoints(credit("req-warm", customer="c-warm"))
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = points.app.runtime.db.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        first = stub.CreditPoints(credit("req-once"))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    on_keys = [statement for statement in statements if "idempotency_keys" in statement]
    assert len(on_keys) == 1 and on_keys[0].startswith("INSERT") and "response" in on_keys[0]
    assert stub.CreditPoints(credit("req-once")) == first


def test_a_replay_whose_effect_now_refuses_answers_with_the_first_answer(points: RunningService) -> None:
    """A replay runs the effect before it meets the key; when the effect refuses because of what
    the first request did (the points are spent, the hold is captured), the stored answer is
    still the answer."""
    stub = points_pb2_grpc.PointsServiceStub(points.channel())
    stub.CreditPoints(credit("req-credit", points=100))
    hold_request = points_pb2.HoldPointsRequest(request_id="req-hold", customer_id="c-1", points=100, reference="o-1")
    hold = stub.HoldPoints(hold_request)
    capture_request = points_pb2.CaptureHoldRequest(request_id="req-capture", hold_id=hold.hold.hold_id, points=100)
    captured = stub.CaptureHold(capture_request)
    assert balance(stub) == 0
    assert stub.HoldPoints(hold_request) == hold  # holding 100 again would find none free
    assert stub.CaptureHold(capture_request) == captured  # the hold is captured already
    assert balance(stub) == 0
    other = points_pb2.HoldPointsRequest(request_id="req-hold-2", customer_id="c-1", points=100, reference="o-2")
    with pytest.raises(grpc.RpcError) as raised:
        stub.HoldPoints(other)  # a new request is refused as before
    assert from_rpc_error(raised.value).reason == "INSUFFICIENT_POINTS"
