"""`shared.peers.Peers`: stubs built once, and two independent reads made at once."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator

import pytest
from loyalty.points.v1 import points_pb2, points_pb2_grpc

from shared.errors import NotFound, PeerUnavailable
from shared.peers import Peers

WHO = contextvars.ContextVar("who", default="nobody")


@pytest.fixture
def peers() -> Iterator[Peers]:
    made = Peers({"points": "127.0.0.1:1"})
    yield made
    made.close()


def test_a_stub_is_built_once_per_peer_and_type(peers: Peers) -> None:
    stub = peers.stub("points", points_pb2_grpc.PointsServiceStub)
    assert peers.stub("points", points_pb2_grpc.PointsServiceStub) is stub
    peers.close()  # a closed channel's stubs go with it
    assert peers.stub("points", points_pb2_grpc.PointsServiceStub) is not stub


def test_both_runs_the_two_reads_at_the_same_time_in_the_callers_context(peers: Peers) -> None:
    second_started = threading.Event()

    def first() -> str:
        # Made one after the other, this would wait for a call that has not started yet.
        assert second_started.wait(5), "the second read did not run while the first one was waiting"
        return "points"

    def second() -> str:
        second_started.set()
        return f"wallet for {WHO.get()} on {threading.current_thread().name}"

    WHO.set("c-1")
    points, wallet = peers.both(first, second)
    assert points == "points" and wallet.startswith("wallet for c-1 on peer-read")


def test_both_raises_the_first_error_and_never_leaves_the_other_call_running(peers: Peers) -> None:
    done: list[str] = []
    release = threading.Event()

    def slow() -> int:
        release.wait(5)
        done.append("second")
        return 2

    def failing() -> int:
        release.set()
        raise NotFound("WALLET_NOT_FOUND", "no wallet")

    with pytest.raises(NotFound):
        peers.both(failing, slow)
    assert done == ["second"], "the second call finished before the error came back"

    def down() -> int:
        raise PeerUnavailable("UNAVAILABLE", "wallet down")

    with pytest.raises(PeerUnavailable):
        peers.both(lambda: 1, down)


def test_both_of_real_calls_to_a_missing_peer_is_unavailable(peers: Peers) -> None:
    stub = peers.stub("points", points_pb2_grpc.PointsServiceStub)

    def balance() -> int:
        return int(
            peers.call(stub.GetBalance, points_pb2.GetBalanceRequest(customer_id="c"), idempotent=False).available
        )

    with pytest.raises(PeerUnavailable):
        peers.both(balance, balance)


def test_closing_while_a_read_is_still_running_lets_it_finish(peers: Peers) -> None:
    """`close` waits for the pool outside its lock: a read still running may need the lock for a
    stub it has not built yet (with the lock held, close and that read waited on each other)."""
    go_on = threading.Event()
    stubs: list[object] = []

    def second() -> None:
        go_on.wait(5)
        stubs.append(peers.stub("points", points_pb2_grpc.PointsServiceStub))

    reading = threading.Thread(target=peers.both, args=(lambda: None, second))
    reading.start()
    closing = threading.Thread(target=peers.close)
    closing.start()
    closing.join(0.2)  # close is waiting for the read
    go_on.set()
    closing.join(5)
    reading.join(5)
    assert not closing.is_alive() and not reading.is_alive() and len(stubs) == 1
