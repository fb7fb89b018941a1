"""Tools of the reliability tests (docs/reliability.md): restart a service in-process on its own
port and database, run one as a real process to SIGKILL it, drain the outboxes under the
ManualClock, count outbox messages, and reconcile the four databases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.checkout.v1 import checkout_pb2 as pb
from loyalty.promotions.v1 import promotions_pb2, promotions_pb2_grpc
from sqlalchemy import text

from shared.calendar import ProgrammeCalendar
from shared.db import Database
from shared.outbox import OutboxStats
from shared.reconcile import check
from tests.clients import PointsClient, rid
from tests.harness import RunningService
from tests.integration.checkout_support import Balances, CheckoutClient, Platform
from tests.integration.wallet_support import WalletClient

ROOT = Path(__file__).resolve().parents[2]
# Recovery resumes a paused order however long the faults (and a loaded machine) made it wait: the
# saga timeout's compensation is a case of its own (test_checkout_saga.py).
# The tests move the shared clock a minute at a time while they wait for a killed or restarted
# peer (recovery and the outbox backoff need it); on a loaded machine that adds up to more than
# the 15 minutes of a saga's holds, which then expire and fail the order (HOLD_EXPIRED), which is
# not what these tests are about. So the saga's timeout and its holds' lives are a day here.
PLATFORM_ENV = {
    "CHECKOUT_SAGA_TIMEOUT_SECONDS": "86400",
    "CHECKOUT_HOLD_TTL_SECONDS": "86400",
    "GRPC_MAX_CONCURRENT_RPCS": "200",
}


def restart(platform: Platform, name: str, **env: str) -> RunningService:
    """Stop an in-process service and start a new one on the same database and port (its
    callers' channels reconnect to it), as a process restart does."""
    old = platform.services[name]
    platform.harness.running.pop(name, None)
    old.stop()
    return start_again(platform, name, old.database_url, old.port, **env)


def start_again(platform: Platform, name: str, database_url: str, port: int, **env: str) -> RunningService:
    service = platform.harness.start(
        name,
        database_url=database_url,
        background_relay=False,
        **{f"{name.upper()}_PORT": str(port), **env},  # type: ignore[arg-type]
    )
    platform.services[name] = service
    if name == "checkout":
        platform.checkout = CheckoutClient(service.channel())
    elif name == "wallet":
        platform.wallet = WalletClient(service)
    elif name == "points":
        platform.points = PointsClient(service.channel())
    return service


def outbox(service: RunningService) -> OutboxStats:
    runtime = service.app.runtime
    return runtime.outbox.stats(runtime.db)


def drain(platform: Platform, seconds: float = 20) -> None:
    """Deliver every in-process outbox until none has a pending message: time moves past any
    backoff each round, and a peer that just came back gets a moment to be reconnected to."""
    clock = platform.harness.clock
    end = time.monotonic() + seconds
    while True:
        clock.advance(timedelta(seconds=61))  # past the relay's longest backoff
        platform.deliver_outboxes()
        if not any(outbox(svc).pending for svc in platform.services.values()):
            return
        if time.monotonic() > end:
            raise AssertionError(
                "the outboxes did not drain: " + repr({n: outbox(s) for n, s in platform.services.items()})
            )
        time.sleep(0.1)


def settle(platform: Platform) -> None:
    """Time passes beyond the saga lease, recovery runs, the outboxes drain, recovery runs again
    (a step paused by a peer that was down is resumed)."""
    clock = platform.harness.clock
    for _ in range(3):
        clock.advance(timedelta(seconds=61))
        platform.checkout.recover()
        drain(platform)


def assert_outboxes_delivered(platform: Platform) -> None:
    """Every message of every in-process outbox delivered; none given up on (DEAD)."""
    for name, service in platform.services.items():
        stats = outbox(service)
        assert (stats.pending, stats.dead) == (0, 0), f"{name} outbox: {stats}"


def assert_reconciles(platform: Platform, **database_urls: str) -> str:
    """The four databases (of the in-process services, or those named) reconcile clean."""
    urls = {name: svc.database_url for name, svc in platform.services.items()}
    urls.update(database_urls)
    report, mismatches = check(urls)
    assert mismatches == 0, report
    return report


def orders_of(platform: Platform, customer: str) -> list[pb.Order]:
    return list(platform.checkout.stub.ListOrders(pb.ListOrdersRequest(customer_id=customer, page_size=100)).orders)


def no_holds(balances: Balances) -> bool:
    return balances.wallet_held == 0 and balances.points_held == 0


START_SECONDS = 90  # the longest a process may take to serve; about 2 s on an idle machine
_READINESS_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 250),
]


class ServiceProcess:
    """A service run as a real process (`python -m services.<name>`), so it can be SIGKILLed:
    on a given database and port, its peers at the given targets, with failpoints armed."""

    def __init__(self, name: str, database_url: str, port: int, peers: Mapping[str, str], **env: str) -> None:
        self.name = name
        self.database_url = database_url
        self.port = port
        self.peers = dict(peers)
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._channels: list[grpc.Channel] = []

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.Channel:
        channel = grpc.insecure_channel(self.target)
        self._channels.append(channel)
        return channel

    def start(self, failpoints: str = "") -> None:
        up = self.name.upper()
        env = dict(os.environ)
        env.update({f"{peer.upper()}_TARGET": target for peer, target in self.peers.items()})
        env.update(
            {
                f"{up}_PORT": str(self.port),
                f"{up}_DATABASE_URL": self.database_url,
                "DB_POOL_SIZE": "4",
                "GRPC_MAX_WORKERS": "8",
                "HEALTH_PROBE_INTERVAL_MS": "100",
                "OUTBOX_POLL_INTERVAL_MS": "50",
                "OUTBOX_MAX_BACKOFF_MS": "300",
                "PEER_DEADLINE_MS": "1500",
                "OUTBOX_LEASE_MS": "2000",  # a relay killed mid-delivery holds its messages this long
                "SHUTDOWN_GRACE_MS": "500",
                "LOG_LEVEL": "ERROR",
                "OTEL_TRACES_EXPORTER": "none",
                "FAILPOINTS": failpoints,
                **self.env,
            }
        )
        self.process = subprocess.Popen([sys.executable, "-m", f"services.{self.name}"], env=env, cwd=ROOT)
        self.starts += 1
        # The process takes a second or two to start, many more on a machine busy with two suites.
        # gRPC's default reconnect backoff grows to minutes between attempts, so the channel that
        # waits for it tries every 100-250 ms instead, and the wait ends within that of the start.
        channel = grpc.insecure_channel(self.target, options=_READINESS_OPTIONS)
        try:
            health = health_pb2_grpc.HealthStub(channel)
            end = time.monotonic() + START_SECONDS
            while True:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1, wait_for_ready=True).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if self.process.poll() is not None or time.monotonic() > end:
                    raise AssertionError(f"{self.name} did not start (exit {self.process.poll()})")
                time.sleep(0.05)
        finally:
            channel.close()

    def wait_killed(self, seconds: float = 20) -> bool:
        """Whether the process died of SIGKILL (a failpoint's) within `seconds`."""
        assert self.process is not None
        if seconds <= 0:
            return self.process.poll() == -signal.SIGKILL
        try:
            return self.process.wait(timeout=seconds) == -signal.SIGKILL
        except subprocess.TimeoutExpired:
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for channel in self._channels:
            channel.close()
        self._channels.clear()


# --- the two outbox flows into Points --------------------------------------------------------

MOSCOW = ProgrammeCalendar("Europe/Moscow")
INTEREST_TOP_UP = 5_000_000  # 50,000 RUB
PROFILE_REWARD = 50  # PROMOTIONS_REWARD_CONTACTS_UPDATED


def post_interest(platform: Platform, customer: str, wallet: WalletClient | None = None) -> tuple[str, int]:
    """Top up `customer`, end the month, post its interest (Wallet queues BatchCreditPoints in
    its outbox). Returns the credit's reference and the points the wallet says it posted."""
    wallet = wallet or platform.wallet
    clock = platform.harness.clock
    wallet.top_up(customer, INTEREST_TOP_UP)
    wallet_id = wallet.wallet(customer).wallet_id
    month = MOSCOW.month_of(clock.now())
    clock.set(MOSCOW.month_end(month) + timedelta(hours=1))
    request_id = rid()
    for attempt in range(5):  # the job is retried with its request id when Promotions was too slow to answer
        try:
            wallet.post_interest(str(month), request_id=request_id)
            break
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or attempt == 4:
                raise
    [accrual] = [a for a in wallet.accruals(customer) if a.month == str(month)]
    assert accrual.points > 0
    return f"interest:{wallet_id}:{month}", accrual.points


def record_profile_action(promotions: grpc.Channel, customer: str) -> None:
    """CONTACTS_UPDATED: Promotions queues a CreditPoints of the reward in its outbox."""
    stub = promotions_pb2_grpc.PromotionsServiceStub(promotions)
    request = promotions_pb2.RecordProfileActionRequest(
        request_id=rid(), customer_id=customer, action=promotions_pb2.PROFILE_ACTION_TYPE_CONTACTS_UPDATED
    )
    assert stub.RecordProfileAction(request, timeout=10).points_awarded == PROFILE_REWARD


def credited_once(points: PointsClient, customer: str, reference: str, amount: int) -> None:
    """Exactly one lot for the reference, of the amount, and nothing else for the customer."""
    lots = [(lot.reference, lot.amount) for lot in points.lots(customer)]
    assert lots == [(reference, amount)], lots
    assert points.balance(customer).available == amount


# --- an order of the saga tests ----------------------------------------------------------------

MONEY, POINTS = 100_000, 600
MONEY_PAID = 2 * 50_000 - POINTS * 100  # two kettles, 600 points off


def paid_once(platform: Platform, customer: str, code_points: int = 0) -> bool:
    """The customer's one order is PAID, charged once, nothing held, its points pending."""
    orders = orders_of(platform, customer)
    if len(orders) != 1 or orders[0].status != pb.ORDER_STATUS_PAID:
        return False
    purchase = sum(line.points_to_earn for line in orders[0].lines)
    return platform.balances(customer) == Balances(MONEY - MONEY_PAID, 0, 0, purchase + code_points, 0)


def settle_until(platform: Platform, done: Callable[[], bool], seconds: float = 90) -> bool:
    """Settle until `done` holds: a peer that was restarted may take a moment to be reconnected to."""
    end = time.monotonic() + seconds
    while True:
        settle(platform)
        if done():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.2)


def outbox_rows(database_url: str) -> list[tuple[str, str, int, str | None]]:
    """(method, status, attempts, last error) of every outbox message in a service's database
    (of a service run as a process, whose relay the test cannot drive)."""
    database = Database(database_url)
    try:
        with database.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT method, status, attempts, last_error FROM outbox_messages ORDER BY id")
            ).all()
    finally:
        database.dispose()
    return [(str(m), str(s), int(a), e) for m, s, a, e in rows]


def delivered(database_url: str) -> bool:
    return all(status == "DELIVERED" for _, status, _, _ in outbox_rows(database_url))
