"""Peers killed for real (docs/reliability.md): Points, Wallet and Promotions each run as a process
(`python -m services.<name>`) on their database and port, killed with SIGKILL by a failpoint
(`<service>.rpc.<Method>.before|after=kill`, shared/failpoints.py) just before or just after the
call commits, then started again; Checkout, and the other services, stay in-process.

Processes are slow to start, so each service runs a chain of cases: the process started again
after one case's kill is armed with the next case's failpoint (chosen so that finishing the first
case never reaches it). Points also gets killed in the middle of a load of credits, with no
failpoint. After every case: the credit arrived exactly once, or the order is PAID and charged
once with nothing held; at the end of each chain every outbox is delivered and the four databases
reconcile clean."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import grpc
import pytest
from loyalty.checkout.v1 import checkout_pb2 as pb

from shared.clock import ManualClock
from tests.clients import PointsClient, eventually, rid
from tests.harness import Databases, Harness
from tests.integration.checkout_support import Platform, fund, start_platform
from tests.integration.faults_support import (
    MONEY,
    PLATFORM_ENV,
    POINTS,
    PROFILE_REWARD,
    ServiceProcess,
    assert_outboxes_delivered,
    assert_reconciles,
    credited_once,
    delivered,
    drain,
    orders_of,
    outbox_rows,
    paid_once,
    post_interest,
    record_profile_action,
    settle_until,
    start_again,
)
from tests.integration.promotions_support import PromotionsClient
from tests.integration.test_restarts import Load
from tests.integration.wallet_support import WalletClient

CODE_POINTS = 50
# Real processes start slowly on a loaded machine: more than the suite's 120 s a test.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    databases = Databases(tmp_path_factory.mktemp("killed"))
    harness = Harness(databases, ManualClock())
    try:
        platform = start_platform(harness, env=PLATFORM_ENV)
        PromotionsClient(platform.services["promotions"].channel()).create_code("KILL50", fixed_points=CODE_POINTS)
        yield platform
    finally:
        harness.close()
        databases.drop_all()


@contextmanager
def as_process(platform: Platform, name: str, failpoints: str) -> Iterator[ServiceProcess]:
    """Replace the in-process service by a real process on the same database and port."""
    old = platform.services.pop(name)
    platform.harness.running.pop(name)
    old.stop()
    process = ServiceProcess(
        name, old.database_url, old.port, {peer: svc.target for peer, svc in platform.services.items()}
    )
    process.start(failpoints)
    if name == "points":
        platform.points = PointsClient(process.channel())
    elif name == "wallet":
        platform.wallet = WalletClient(channel=process.channel())
    try:
        yield process
    finally:
        process.stop()
        start_again(platform, name, old.database_url, old.port)


@dataclass(frozen=True)
class Case:
    failpoint: str  # what kills the process
    trigger: Callable[[str], None]  # makes the call, for this customer
    recovered: Callable[[str], bool]  # once the process is back and things settle


def run_chain(platform: Platform, process: ServiceProcess, cases: list[Case], prefix: str) -> None:
    """The process was started with the first case's failpoint; each case kills it, and it is
    started again with the next case's failpoint (the last time with none)."""
    for n, case in enumerate(cases):
        customer = f"{prefix}-{n}-{case.failpoint.split('.', 2)[-1]}"
        case.trigger(customer)
        # The call may not have been made yet: an order paused because another peer, just
        # started again, was not reconnected to; recovery and the relays move things on.
        assert eventually(lambda: process.wait_killed(0.5) or nudge(platform), 60) and process.wait_killed(0), (
            f"{case.failpoint} did not kill the process: {orders_of(platform, customer)}"
        )
        process.start(cases[n + 1].failpoint if n + 1 < len(cases) else "")
        assert settle_until(platform, partial(case.recovered, customer)), (
            f"{case.failpoint}: not recovered: {orders_of(platform, customer)} {platform.balances(customer)}"
        )


def nudge(platform: Platform) -> bool:
    """Move paused sagas and outbox messages on (after the saga lease and any backoff)."""
    platform.harness.clock.advance(timedelta(seconds=61))
    platform.checkout.recover()
    platform.deliver_outboxes()
    return False


def place(platform: Platform, customer: str, *, code: str = "") -> None:
    """Place an order; a peer killed under it leaves it PENDING (or the call fails outright).
    A call that failed before any order was made (a peer just started again and not yet
    reachable while pricing) is sent again with the same request id, until the order exists."""
    fund(platform, customer, money_minor=MONEY, points=POINTS)
    request_id = rid()
    for _ in range(10):
        try:
            order = platform.checkout.place(customer, ("kettle", 2), points=POINTS, code=code, request_id=request_id)
            assert order.status in (pb.ORDER_STATUS_PENDING, pb.ORDER_STATUS_PAID)
            return
        except grpc.RpcError as error:
            assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        if orders_of(platform, customer):
            return
        nudge(platform)
    raise AssertionError(f"no order was made for {customer}")


def test_points_killed_before_and_after_it_commits_credits_and_saga_calls(platform: Platform) -> None:
    relay = {name: platform.services[name].app.runtime.relay for name in ("wallet", "promotions")}
    interest: dict[str, tuple[str, int]] = {}

    def post(customer: str) -> None:
        interest[customer] = post_interest(platform, customer)
        assert relay["wallet"].deliver_due() == 0

    def reward(customer: str) -> None:
        record_profile_action(platform.services["promotions"].channel(), customer)
        assert relay["promotions"].deliver_due() == 0

    def interest_once(customer: str) -> bool:
        credited_once(platform.points, customer, *interest[customer])
        return True

    def reward_once(customer: str) -> bool:
        credited_once(platform.points, customer, "profile:CONTACTS_UPDATED", PROFILE_REWARD)
        return True

    cases = [
        Case("points.rpc.BatchCreditPoints.before=kill", post, interest_once),
        Case("points.rpc.CreditPoints.after=kill", reward, reward_once),
        Case("points.rpc.BatchCreditPoints.after=kill", post, interest_once),
        Case("points.rpc.CreditPoints.before=kill", reward, reward_once),
        Case("points.rpc.CaptureHold.before=kill", partial(place, platform), partial(paid_once, platform)),
        Case("points.rpc.HoldPoints.after=kill", partial(place, platform), partial(paid_once, platform)),
    ]
    with as_process(platform, "points", cases[0].failpoint) as points:
        run_chain(platform, points, cases, "killed-points")

        # And killed with no warning in the middle of a load of credits, then started again.
        client = PointsClient(points.channel())

        def credit(request_id: str) -> str:
            return client.credit("points-load", 10, request_id=request_id, reference=request_id).lot_id

        load = Load("credits", credit)
        stop = threading.Event()
        thread = threading.Thread(target=load.run, args=(stop,))
        thread.start()
        try:
            assert eventually(lambda: len(load.acknowledged) >= 5, 30)
            points.kill()
            points.start()
            mark = len(load.acknowledged)
            assert eventually(lambda: len(load.acknowledged) >= mark + 5, 30)
        finally:
            stop.set()
            thread.join(timeout=60)
        assert load.failure is None, repr(load.failure)
        assert client.balance("points-load").available == 10 * len(load.acknowledged) > 0
        assert points.starts == len(cases) + 2
        drain(platform)
        assert_outboxes_delivered(platform)
        assert_reconciles(platform, points=points.database_url)
    assert_reconciles(platform)


def test_wallet_killed_before_and_after_it_commits_saga_calls(platform: Platform) -> None:
    # Finishing an order killed at HoldMoney calls CaptureHold too: HoldMoney comes last.
    cases = [
        Case("wallet.rpc.CaptureHold.after=kill", partial(place, platform), partial(paid_once, platform)),
        Case("wallet.rpc.HoldMoney.after=kill", partial(place, platform), partial(paid_once, platform)),
    ]
    with as_process(platform, "wallet", cases[0].failpoint) as wallet:
        run_chain(platform, wallet, cases, "killed-wallet")
        assert wallet.starts == len(cases) + 1
        assert_outboxes_delivered(platform)
        assert_reconciles(platform, wallet=wallet.database_url)
    assert_reconciles(platform)


def test_promotions_killed_before_and_after_it_commits_saga_calls(platform: Platform) -> None:
    promotions_db = platform.services["promotions"].database_url
    used_before = PromotionsClient(platform.services["promotions"].channel()).code("KILL50").used_count
    place_with_code = partial(place, platform, code="KILL50")
    # The code's reward travels Promotions -> Points through the Promotions process's own outbox.
    paid_with_code = partial(paid_once, platform, code_points=CODE_POINTS)
    # Finishing an order killed at a call makes that call and the ones after it: later calls first.
    cases = [
        Case("promotions.rpc.AccrueOrderPoints.after=kill", place_with_code, paid_with_code),
        Case("promotions.rpc.ConfirmPromoCodeReservation.before=kill", place_with_code, paid_with_code),
        Case("promotions.rpc.ReservePromoCode.after=kill", place_with_code, paid_with_code),
    ]
    with as_process(platform, "promotions", cases[0].failpoint) as promotions:
        run_chain(platform, promotions, cases, "killed-promotions")
        code = PromotionsClient(promotions.channel()).code("KILL50")
        assert (code.used_count, code.reserved_count) == (used_before + len(cases), 0)
        assert promotions.starts == len(cases) + 1
        assert eventually(lambda: delivered(promotions.database_url), 30), outbox_rows(promotions.database_url)
        assert_outboxes_delivered(platform)
        assert_reconciles(platform, promotions=promotions.database_url)
    drain(platform)
    assert_reconciles(platform, promotions=promotions_db)
