"""Concurrent spending of one customer's points: the database, not luck, keeps the balance whole."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import grpc
from loyalty.points.v1 import points_pb2 as pb

from shared.errors import from_rpc_error
from tests.clients import PointsClient
from tests.harness import RunningService

WORKERS = 20


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls at the same moment; each result is the answer or the domain error."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return call()
        except grpc.RpcError as error:
            return from_rpc_error(error)

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def test_twenty_concurrent_holds_beyond_the_balance_only_the_ones_that_fit_succeed(points: RunningService) -> None:
    api = PointsClient(points.channel())
    api.credit("c-1", 100)
    api.credit("c-1", 40, expires_at=None)
    results = race([partial(api.hold, "c-1", 10, reference=f"order-{n}") for n in range(WORKERS)])
    holds = [r for r in results if isinstance(r, pb.Hold)]
    refusals = [r for r in results if not isinstance(r, pb.Hold)]
    assert len(holds) == 14 and len(refusals) == 6
    assert {error.reason for error in refusals} == {"INSUFFICIENT_POINTS"}
    balance = api.balance("c-1")
    assert (balance.available, balance.held) == (0, 140)
    lots = api.lots("c-1")
    assert all(lot.held <= lot.remaining for lot in lots)
    assert sum(a.points for hold in holds for a in hold.allocations) == 140


def test_concurrent_holds_of_different_sizes_never_overdraw(points: RunningService) -> None:
    api = PointsClient(points.channel())
    api.credit("c-1", 250)
    sizes = [7 + 3 * n for n in range(WORKERS)]  # 7..64, 710 in all
    results = race([partial(api.hold, "c-1", size) for size in sizes])
    taken = sum(r.points for r in results if isinstance(r, pb.Hold))
    balance = api.balance("c-1")
    assert balance.held == taken and balance.available == 250 - taken >= 0
    # Whatever was refused did not fit in what was left when it was refused, which is at least what is left now.
    assert all(size > balance.available for size, r in zip(sizes, results, strict=True) if not isinstance(r, pb.Hold))


def test_the_same_hold_sent_twenty_times_at_once_holds_once(points: RunningService) -> None:
    api = PointsClient(points.channel())
    api.credit("c-1", 100)
    results = race([lambda: api.hold("c-1", 30, request_id="checkout-order-9-hold") for _ in range(WORKERS)])
    assert all(isinstance(r, pb.Hold) for r in results)
    assert len({r.hold_id for r in results}) == 1
    assert api.balance("c-1").held == 30


def test_concurrent_captures_releases_and_credits_keep_the_ledger_whole(points: RunningService) -> None:
    api = PointsClient(points.channel())
    api.credit("c-1", 200)
    holds = [api.hold("c-1", 10, reference=f"order-{n}") for n in range(10)]
    calls: list[Callable[[], Any]] = []
    for n, hold in enumerate(holds):
        calls.append(partial(api.capture, hold.hold_id, 6))
        calls.append(partial(api.release, hold.hold_id) if n % 2 else partial(api.capture, hold.hold_id))
    calls += [partial(api.credit, "c-1", 1, reference=f"bonus-{n}") for n in range(5)]
    race(calls)
    balance = api.balance("c-1")
    final = [api.get_hold(hold.hold_id) for hold in holds]
    spent = sum(hold.captured for hold in final)
    assert all(hold.status in (pb.HOLD_STATUS_CAPTURED, pb.HOLD_STATUS_RELEASED) for hold in final)
    assert balance.held == 0 and balance.available == 205 - spent
    lines = api.history("c-1")
    assert sum(line.available_delta for line in lines) == balance.available
