"""Instructions, not seconds: the Python side of the hot paths counted by callgrind.

    .venv/bin/python -m bench.instructions [--scenario credits orders] [--count N] [--keep DIR]

Times on this kind of machine move by 10-40 % from one run to the next, more than most single
changes are worth. An instruction count does not: the same code and data give the same count
within about 1 %, whatever else the machine is doing. So each scenario runs in a child process
under `valgrind --tool=callgrind --instr-atstart=no`: the services start in that process
(`tests.harness`: real gRPC servers on PostgreSQL databases of their own, with the background
relays and workers off, so nothing runs on a timer), warm up, and only then does this process
switch counting on (`callgrind_control -i on`); the child runs `count` units and counting goes
off again. Counted is every instruction of the child while on: the client stubs, gRPC, the
services' Python, SQLAlchemy and psycopg. Not counted: PostgreSQL, which runs in its own processes.

Scenarios:
- `credits`: one `BatchCreditPoints` of 1,000 new available credits (as the Wallet's interest
  delivery sends them) to Points; the unit is the batch.
- `interest`: the Wallet's `PostMonthlyInterest` (with the real Promotions answering the
  mechanics), up to the outbox messages it queues for Points (delivered apart: that is `credits`);
  the wallets are seeded as `bench.jobs` seeds them (PostgreSQL only), the unit is 1,000 wallets.
- `expiry`: Points' `ExpirePoints` of lots past their expiry, one per customer, seeded as
  `bench.jobs` seeds them (PostgreSQL only); the unit is 1,000 lots.
- `orders`: one `PlaceOrder` paid with 500 points and 500 RUB from the wallet, through the four
  services, and the outbox deliveries it causes (the pending earned points); the unit is the order.

Needs valgrind, and PostgreSQL (`--database-url`, or `BENCH_DATABASE_URL`, default the local server
with trust auth; `--sqlite` for SQLite files). `make bench-instructions` runs both scenarios.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.harness import Harness, RunningService

REPO = Path(__file__).resolve().parent.parent
UNITS = {  # each scenario and what its counted unit is
    "credits": "batch of 1,000 credits",
    "orders": "order",
    "interest": "1,000 wallets posted",
    "expiry": "1,000 lots expired",
}
SCENARIOS = tuple(UNITS)
POSTGRESQL_ONLY = frozenset({"interest", "expiry"})  # seeded with bench.jobs' SQL
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/postgres"
WARMUP = 3


# --- the child, under callgrind ------------------------------------------------------------------

Prepare = Callable[[int, str], Callable[[], None]]  # (units, label) -> the counted run, set up


def child(scenario: str, count: int, signals: Path) -> None:
    from shared.clock import ManualClock
    from tests.harness import Databases, Harness

    databases = Databases(Path(tempfile.mkdtemp(prefix="bench-instructions-")))
    harness = Harness(databases, ManualClock(datetime(2026, 11, 2, 9, tzinfo=UTC)))
    try:
        prepare = {"credits": _credits, "orders": _orders, "interest": _interest, "expiry": _expiry}[scenario](harness)
        prepare(WARMUP, "warm")()
        counted = prepare(count, "counted")
        (signals / "ready").write_text(str(os.getpid()))
        _wait_for(signals / "go")
        counted()
        (signals / "done").write_text("")
        _wait_for(signals / "stop")
    finally:
        harness.close()
        databases.drop_all()


def _wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.1)


def _start(harness: Harness, service: str) -> RunningService:
    """The service with nothing on a timer (counts would grow with the slow wall time under
    valgrind): no relay or workers, no health probe in the hour; the outboxes are delivered by hand.
    Peers get ten minutes to answer: under callgrind a call takes tens of times its usual time,
    which on a busy machine passed the harness's 2 s deadline (a refused order, not a count)."""
    return harness.start(
        service,
        background_relay=False,
        LOG_LEVEL="WARNING",
        HEALTH_PROBE_INTERVAL_MS="3600000",
        OUTBOX_POLL_INTERVAL_MS="3600000",
        PEER_DEADLINE_MS="600000",
        OUTBOX_LEASE_MS="1200000",  # above the deadline, as the settings ask
    )


def _credits(harness: Harness) -> Prepare:
    from loyalty.points.v1 import points_pb2, points_pb2_grpc

    points = _start(harness, "points")
    stub = points_pb2_grpc.PointsServiceStub(points.channel())

    def batch(label: str, number: int) -> points_pb2.BatchCreditPointsRequest:
        request = points_pb2.BatchCreditPointsRequest(request_id=f"batch-{label}-{number}")
        for item in range(1000):
            request.requests.add(
                request_id=f"wallet-interest-2026-10-{label}-{number}-{item}",
                customer_id=f"customer-{label}-{number:03d}-{item:04d}",
                points=591,
                source=points_pb2.POINTS_SOURCE_WALLET_INTEREST,
                reference="wallet-interest:2026-10",
            )
        return request

    def prepare(units: int, label: str) -> Callable[[], None]:
        requests = [batch(label, number) for number in range(units)]

        def run() -> None:
            for request in requests:
                answer = stub.BatchCreditPoints(request, timeout=600)
                assert all(result.lot.lot_id for result in answer.results), answer

        return run

    return prepare


def _seed_conninfo(service: RunningService, scenario: str) -> str:
    """The libpq address of the service's database, which `bench.jobs` seeds with PostgreSQL's SQL."""
    from sqlalchemy.engine import make_url

    url = make_url(service.database_url)
    if url.get_backend_name() != "postgresql":
        raise SystemExit(f"the {scenario} scenario seeds with PostgreSQL's generate_series: run it on PostgreSQL")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _interest(harness: Harness) -> Prepare:
    """The warm-up posts the month before the counted one, on the same wallets (so the counted
    month reads their carries, as every month after the first does)."""
    from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc

    from bench.jobs import seed_wallets
    from shared.calendar import Month

    _start(harness, "promotions")
    wallet = _start(harness, "wallet")
    stub = wallet_pb2_grpc.WalletServiceStub(wallet.channel())
    conninfo = _seed_conninfo(wallet, "interest")
    month = Month(2026, 10)  # over on the harness's clock (2026-11-02)

    def post(which: Month, label: str) -> None:
        posted = stub.PostMonthlyInterest(
            wallet_pb2.PostMonthlyInterestRequest(request_id=f"interest-{label}", month=str(which)), timeout=600
        )
        assert posted.wallets_posted > 0 and posted.points_posted > 0, posted

    def prepare(units: int, label: str) -> Callable[[], None]:
        if label == "warm":  # the warm-up needs the counted wallets: it runs in the counted set-up
            return lambda: None
        seed_wallets(conninfo, units * 1000, month)
        post(month.previous(), "warm")
        return lambda: post(month, label)

    return prepare


def _expiry(harness: Harness) -> Prepare:
    """Each set of lots is seeded apart (ids of its own) and expired by one `ExpirePoints`."""
    from loyalty.points.v1 import points_pb2, points_pb2_grpc

    from bench.jobs import seed_lots

    points = _start(harness, "points")
    stub = points_pb2_grpc.PointsServiceStub(points.channel())
    conninfo = _seed_conninfo(points, "expiry")

    def prepare(units: int, label: str) -> Callable[[], None]:
        lots = units * 1000
        seed_lots(conninfo, lots, lots, harness.clock.now(), prefix=f"{label}-")

        def run() -> None:
            expired = stub.ExpirePoints(points_pb2.ExpirePointsRequest(request_id=f"expiry-{label}"), timeout=600)
            assert expired.lots_expired == lots, expired

        return run

    return prepare


def _orders(harness: Harness) -> Prepare:
    from loyalty.checkout.v1 import checkout_pb2, checkout_pb2_grpc
    from loyalty.common.v1 import payment_pb2
    from loyalty.points.v1 import points_pb2_grpc
    from loyalty.wallet.v1 import wallet_pb2_grpc

    from bench.path import POINTS_PER_ORDER, PRICE_MINOR, SKU, seed_customer
    from shared.protoconv import money

    services = [_start(harness, name) for name in ("points", "promotions", "wallet", "checkout")]
    points, _, wallet, checkout = (service.channel() for service in services)
    checkout_stub = checkout_pb2_grpc.CheckoutServiceStub(checkout)
    wallet_stub = wallet_pb2_grpc.WalletServiceStub(wallet)
    points_stub = points_pb2_grpc.PointsServiceStub(points)
    relays = [service.app.runtime.relay for service in services]
    product = checkout_pb2.Product(sku=SKU, title="Bench product", category="electronics", price=money(PRICE_MINOR))
    checkout_stub.UpsertProduct(checkout_pb2.UpsertProductRequest(request_id="product", product=product), timeout=600)

    def deliver() -> None:  # what the last calls left in the outboxes (an order's earned points)
        for relay in relays:
            relay.deliver_due()

    def prepare(units: int, label: str) -> Callable[[], None]:
        customers = [f"bench-{label}-{number:04d}" for number in range(units)]
        for customer in customers:  # one order each, so no order waits for another's hold
            seed_customer(wallet_stub, points_stub, customer, timeout=600)
        deliver()

        def run() -> None:
            for customer in customers:
                order = checkout_stub.PlaceOrder(
                    checkout_pb2.PlaceOrderRequest(
                        request_id=f"{customer}:order",
                        customer_id=customer,
                        lines=[checkout_pb2.LineItem(sku=SKU, quantity=1)],
                        points_to_use=POINTS_PER_ORDER,
                        payment_method=payment_pb2.PAYMENT_METHOD_WALLET,
                    ),
                    timeout=600,
                ).order
                assert order.status == checkout_pb2.ORDER_STATUS_PAID, order
                deliver()

        return run

    return prepare


# --- the parent ----------------------------------------------------------------------------------


def measure(scenario: str, count: int, keep: Path | None, database_url: str | None) -> dict[str, float]:
    """Run `scenario` under callgrind; `database_url` a PostgreSQL server (a database of its
    own for each service, dropped after), or None for SQLite files."""
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as scratch:
        signals = Path(scratch)
        out = (keep or signals) / f"callgrind.{scenario}.out"
        env = {name: value for name, value in os.environ.items() if name != "TEST_DATABASE_URL"}
        if database_url:
            env["TEST_DATABASE_URL"] = database_url
        started = time.perf_counter()
        process = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "bench.instructions",
                "--child",
                scenario,
                str(count),
                str(signals),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_child(signals / "ready", process)
            _instrument(process.pid, True)
            (signals / "go").write_text("")
            _wait_child(signals / "done", process)
            _instrument(process.pid, False)
            (signals / "stop").write_text("")
            _, errors = process.communicate(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
        if process.returncode != 0:
            raise SystemExit(f"{scenario}: the child failed ({process.returncode}):\n{errors[-4000:]}")
        total = sum(
            int(line.split()[1])
            for path in out.parent.glob(out.name + "*")
            for line in path.read_text().splitlines()
            if line.startswith("totals:")
        )
    return {"instructions": total, "per_unit": total / count, "seconds": time.perf_counter() - started}


def _wait_child(path: Path, process: subprocess.Popen[str]) -> None:
    while not path.exists():
        if process.poll() is not None:
            _, errors = process.communicate()
            raise SystemExit(f"the child stopped early ({process.returncode}):\n{errors[-4000:]}")
        time.sleep(0.2)


def _instrument(pid: int, on: bool) -> None:
    subprocess.run(
        ["callgrind_control", "-i", "on" if on else "off", str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--scenario",
        nargs="+",
        choices=SCENARIOS,
        default=None,
        help="default: all (on SQLite, all but interest and expiry)",
    )
    parser.add_argument("--count", type=int, default=10, help="units counted (batches or orders)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the callgrind files here (callgrind_annotate)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE),
        help="PostgreSQL server (default BENCH_DATABASE_URL or the local one)",
    )
    parser.add_argument("--sqlite", action="store_true", help="SQLite files instead of PostgreSQL")
    parser.add_argument("--child", nargs=3, metavar=("SCENARIO", "COUNT", "SIGNALS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), Path(args.child[2]))
        return
    scenarios = args.scenario or [name for name in SCENARIOS if not (args.sqlite and name in POSTGRESQL_ONLY)]
    if args.sqlite and POSTGRESQL_ONLY & set(scenarios):
        parser.error(
            f"{', '.join(sorted(POSTGRESQL_ONLY & set(scenarios)))}: PostgreSQL only (its seed is SQL of PostgreSQL's)"
        )
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    for scenario in scenarios:
        unit = UNITS[scenario]
        found = measure(scenario, args.count, args.keep, None if args.sqlite else args.database_url)
        print(
            f"{scenario}: {found['per_unit'] / 1e6:,.1f} million instructions per {unit}"
            f" ({found['instructions']:,} for {args.count}; {found['seconds']:.0f} s under callgrind)",
            flush=True,
        )


if __name__ == "__main__":
    main()
