"""Benchmark of the request path: place-order, quote and balance reads through the HTTP gateway,
with the gRPC transport limit (an echo service) measured in the same run.

    .venv/bin/python -m bench.path [--customers 500] [--profile var/bench/profile]   (make bench-path)

What runs, each as its own process, as `make run` starts them but on PostgreSQL: the four
services (`python -m services.<name>`) and the gateway (`python -m gateway`), each service on its
own fresh database (`<prefix>_<run>_<service>`, created on BENCH_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/postgres, dropped at the end). Their configuration is the
defaults except: LOG_LEVEL=WARNING (so the access log and the per-RPC info lines are not what is
measured), OTEL_TRACES_EXPORTER=none (spans are still created, sampled and recorded as in
production; they are exported nowhere), METRICS_PORT set (the Prometheus endpoints the hops are
counted from). The load comes from `bench.loadgen`, an asyncio HTTP/1.1 client in a separate
process, with one bearer token per seeded customer, customers taken in turn (so two orders of one
customer are never in flight together and holds never queue on one row).

Steps and figures (printed, and written as JSON to --out):

1. echo: one unary hop, `bench.echo` server and client processes, `bare` grpcio and `project`
   (shared.server + shared.peers + telemetry), concurrency 1 (latency) and more (saturation).
2. seed: a product, and per customer a wallet top-up and a points credit (straight over gRPC).
3. cost of one order: orders placed one at a time (concurrency 1, which is also the latency at
   concurrency 1); RPCs answered per service and method from each service's Prometheus counters
   (the gateway's call to Checkout included, the outbox deliveries they cause too), and database
   transactions per service database from PostgreSQL's own `pg_stat_database` (commits +
   rollbacks; a statement in autocommit counts as one there), less the idle background (health
   probes, outbox polls) measured just before; and the statements and transactions each service
   counted itself (`loyalty.db.statements`, `loyalty.db.transactions`), with the round trips they
   make on PostgreSQL (each statement, a BEGIN and a COMMIT or ROLLBACK per transaction); CPU
   milliseconds per order of each process and of the machine.
4. saturation: closed loop at each --concurrency; the best rate.
5. latency at a fixed open-loop rate of half the best rate.
6. reads: quote, GET /v1/wallet, GET /v1/points at saturation (closed loop).
7. memory (VmRSS, VmHWM from /proc) of every process after seeding and after the load.
8. reconciliation: every wallet balance and points balance against what was seeded and what the
   201 answers say was paid; the orders by status; `shared.reconcile` over the four databases.

With --profile DIR, py-spy (`pip install py-spy`; it needs ptrace rights) records every process
during an extra closed-loop run at --profile-concurrency (samples of the thread holding the GIL)
and writes the raw stacks and a summary.
/proc/loadavg is recorded before and after every measurement: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from sqlalchemy import text
from sqlalchemy.engine import make_url

from gateway.auth import CUSTOMER, mint_token
from shared.db import Database, normalise_url
from shared.protoconv import money
from shared.reconcile import reconcile

REPO = Path(__file__).resolve().parent.parent
SERVICES = ("points", "promotions", "wallet", "checkout")
SECRET = "bench-path-secret-of-at-least-thirty-two-bytes"
SKU, PRICE_MINOR, POINTS_PER_ORDER = "bench-sku", 100_000, 500  # 1,000 RUB, 500 of them in points
TOP_UP_MINOR, POINTS_CREDIT = 15_000_000, 150_000  # 150,000 RUB and 150,000 points a customer


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def memory_of(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in MiB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {"rss_mib": 0, "hwm_mib": 0}
    values = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith("Vm")}
    return {"rss_mib": round(values.get("VmRSS", 0) / 1024), "hwm_mib": round(values.get("VmHWM", 0) / 1024)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has been busy so far (every process, PostgreSQL included)."""
    values = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


_SAMPLE = re.compile(r"^loyalty_rpc_server_requests_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


_DB_SAMPLE = re.compile(
    r'^loyalty_db_(?:statements_total(?:\{[^}]*\})?|transactions_total\{[^}]*outcome="(?P<outcome>\w+)"[^}]*\})\s+(?P<value>\S+)$'
)


def scraped_counts(metrics_port: int, sample: re.Pattern[str], key: Callable[[re.Match[str]], str]) -> Counter[str]:
    """The samples of one process's Prometheus endpoint that match `sample`, summed by `key`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
        body = answer.read().decode()
    counts: Counter[str] = Counter()
    for line in body.splitlines():
        match = sample.match(line)
        if match:
            counts[key(match)] += int(float(match["value"]))
    return counts


def db_counts(metrics_port: int) -> Counter[str]:
    """SQL statements sent and transactions committed or rolled back by one process
    (`loyalty.db.statements`, `loyalty.db.transactions`)."""
    return scraped_counts(metrics_port, _DB_SAMPLE, lambda match: match["outcome"] or "statements")


def rpc_counts(metrics_port: int) -> Counter[str]:
    """RPCs answered by one process, by `Service/Method`."""

    def method(match: re.Match[str]) -> str:
        labels = dict(_LABEL.findall(match["labels"]))
        return f"{labels.get('rpc_service', '').rsplit('.', 1)[-1]}/{labels.get('rpc_method', '')}"

    return scraped_counts(metrics_port, _SAMPLE, method)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    metrics_port: int = 0
    port: int = 0

    def tail(self, lines: int = 20) -> str:
        with suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class Platform:
    """Four services and the gateway as processes, each service on its own database."""

    urls: dict[str, str]
    workdir: Path
    env_overrides: Mapping[str, str] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    gateway_port: int = 0

    def start(self, timeout: float = 90.0) -> None:
        self.ports = {name: free_port() for name in SERVICES}
        self.gateway_port = free_port()
        base = dict(os.environ)
        base.update(
            {
                "LOYALTY_ENV": "bench",
                "LOYALTY_JWT_SECRET": SECRET,
                "LOG_LEVEL": "WARNING",
                "LOG_FORMAT": "json",
                "OTEL_TRACES_EXPORTER": "none",
                "OTEL_METRICS_EXPORTER": "none",
                "DB_AUTO_MIGRATE": "true",
                # A few hundred customers drive the whole load, far above a real customer's rate:
                # the per-customer limiter would answer 429 and the run would measure it instead.
                "GATEWAY_RATE_LIMIT_PER_SECOND": "0",
                "GATEWAY_PORT": str(self.gateway_port),
                "GATEWAY_HOST": "127.0.0.1",
            }
        )
        for name in SERVICES:
            base[f"{name.upper()}_TARGET"] = f"127.0.0.1:{self.ports[name]}"
            base[f"{name.upper()}_PORT"] = str(self.ports[name])
            base[f"{name.upper()}_DATABASE_URL"] = self.urls[name]
        base.update(self.env_overrides)
        for name in (*SERVICES, "gateway"):
            metrics_port = free_port()
            log = self.workdir / f"{name}.log"
            module = "gateway" if name == "gateway" else f"services.{name}"
            with log.open("wb") as out:
                popen = subprocess.Popen(
                    [sys.executable, "-m", module],
                    env={**base, "METRICS_PORT": str(metrics_port)},
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            port = self.gateway_port if name == "gateway" else self.ports[name]
            self.processes[name] = Process(name, popen, log, metrics_port, port)
        end = time.monotonic() + timeout
        waiting = set(self.processes)
        while waiting:
            for name in sorted(waiting):
                process = self.processes[name]
                if process.popen.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.popen.returncode}:\n{process.tail()}")
                if self._ready(name):
                    waiting.discard(name)
            if time.monotonic() > end:
                raise RuntimeError(f"not ready within {timeout} s: {sorted(waiting)}")
            time.sleep(0.2)

    def _ready(self, name: str) -> bool:
        if name == "gateway":
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.gateway_port}/readyz", timeout=2) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False
        with grpc.insecure_channel(f"127.0.0.1:{self.ports[name]}") as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
            return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def memory(self) -> dict[str, dict[str, int]]:
        return {name: memory_of(process.popen.pid) for name, process in self.processes.items()}

    def rpc_counts(self) -> dict[str, Counter[str]]:
        return {name: rpc_counts(process.metrics_port) for name, process in self.processes.items() if name in SERVICES}

    def db_counts(self) -> dict[str, Counter[str]]:
        return {name: db_counts(process.metrics_port) for name, process in self.processes.items() if name in SERVICES}

    def stop(self) -> None:
        for process in reversed(self.processes.values()):
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()


# --- databases ---------------------------------------------------------------------------------


@dataclass
class Databases:
    """One database per service: fresh PostgreSQL databases on the admin URL, or SQLite files."""

    admin_url: str | None
    sqlite_dir: Path | None
    prefix: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def names(self) -> dict[str, str]:
        return {name: f"{self.prefix}_{self.run}_{name}" for name in SERVICES}

    def urls(self) -> dict[str, str]:
        if self.admin_url is None:
            assert self.sqlite_dir is not None
            return {name: f"sqlite:///{self.sqlite_dir / f'{name}.db'}" for name in SERVICES}
        url = make_url(normalise_url(self.admin_url))
        return {name: url.set(database=db).render_as_string(hide_password=False) for name, db in self.names().items()}

    def _admin(self) -> Any:
        import psycopg

        url = make_url(self.admin_url or "")
        return psycopg.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password,
            dbname=url.database or "postgres",
            autocommit=True,
        )

    def create(self) -> None:
        if self.admin_url is None:
            return
        with self._admin() as connection:
            for db in self.names().values():
                connection.execute(f'CREATE DATABASE "{db}"')

    def drop(self) -> None:
        if self.admin_url is None:
            return
        with self._admin() as connection:
            for db in self.names().values():
                connection.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    def transactions(self) -> dict[str, int] | None:
        """Commits + rollbacks so far in each service database (PostgreSQL's statistics)."""
        if self.admin_url is None:
            return None
        names = self.names()
        with self._admin() as connection:
            rows = connection.execute(
                "SELECT datname, xact_commit + xact_rollback FROM pg_stat_database WHERE datname = ANY(%s)",
                [list(names.values())],
            ).fetchall()
        by_db = {str(row[0]): int(row[1]) for row in rows}
        return {name: by_db.get(db, 0) for name, db in names.items()}


# --- seeding -----------------------------------------------------------------------------------


def customer_ids(run: str, count: int) -> list[str]:
    return [f"bench-{run}-{index:06d}" for index in range(count)]


def seed_customer(
    wallet: wallet_pb2_grpc.WalletServiceStub,
    points: points_pb2_grpc.PointsServiceStub,
    customer: str,
    timeout: float = 30,
) -> None:
    """A customer's wallet money and points for the orders of a benchmark (`TOP_UP_MINOR`, `POINTS_CREDIT`)."""
    wallet.TopUp(
        wallet_pb2.TopUpRequest(
            request_id=f"{customer}:top-up", customer_id=customer, amount=money(TOP_UP_MINOR), card_token="tok_ok"
        ),
        timeout=timeout,
    )
    points.CreditPoints(
        points_pb2.CreditPointsRequest(
            request_id=f"{customer}:points",
            customer_id=customer,
            points=POINTS_CREDIT,
            source=points_pb2.POINTS_SOURCE_CAMPAIGN,
            reference="bench:seed",
        ),
        timeout=timeout,
    )


def seed(platform: Platform, customers: Sequence[str]) -> None:
    with grpc.insecure_channel(platform.target("checkout")) as channel:
        checkout_pb2_grpc.CheckoutServiceStub(channel).UpsertProduct(
            checkout_pb2.UpsertProductRequest(
                request_id="bench-product",
                product=checkout_pb2.Product(
                    sku=SKU, title="Bench product", category="electronics", price=money(PRICE_MINOR)
                ),
            ),
            timeout=10,
        )
    wallet_channel = grpc.insecure_channel(platform.target("wallet"))
    points_channel = grpc.insecure_channel(platform.target("points"))
    wallet = wallet_pb2_grpc.WalletServiceStub(wallet_channel)
    points = points_pb2_grpc.PointsServiceStub(points_channel)

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda customer: seed_customer(wallet, points, customer), customers))
    finally:
        wallet_channel.close()
        points_channel.close()


# --- load --------------------------------------------------------------------------------------


@dataclass
class Loader:
    platform: Platform
    tokens: list[str]
    workdir: Path
    results: list[dict[str, Any]] = field(default_factory=list)
    runs: int = 0

    def run(self, scenario: str, mode: str, **load: Any) -> dict[str, Any]:
        self.runs += 1
        plan = {
            "host": "127.0.0.1",
            "port": self.platform.gateway_port,
            "tokens": self.tokens,
            "scenario": scenario,
            "mode": mode,
            "run_id": f"{uuid.uuid4().hex[:10]}",
            "sku": SKU,
            "points_to_use": POINTS_PER_ORDER,
            **load,
        }
        plan_path = self.workdir / f"plan-{self.runs}.json"
        out_path = self.workdir / f"result-{self.runs}.json"
        plan_path.write_text(json.dumps(plan))
        before = loadavg()
        subprocess.run(
            [sys.executable, "-m", "bench.loadgen", "--plan", str(plan_path), "--out", str(out_path)],
            cwd=REPO,
            check=True,
        )
        result: dict[str, Any] = json.loads(out_path.read_text())
        result["loadavg_before"], result["loadavg_after"] = before, loadavg()
        self.results.append(result)
        return result

    def paid(self) -> tuple[int, int, int]:
        """Orders placed (201), money and points they paid, over every run so far."""
        orders = [r for r in self.results if r["scenario"] == "order"]
        return (
            sum(r["orders"] for r in orders),
            sum(r["money_paid_minor"] for r in orders),
            sum(r["points_applied"] for r in orders),
        )


def line(result: Mapping[str, Any]) -> str:
    load = f"c={result['concurrency']}" if result["mode"] == "closed" else f"open {result['offered_rate']}/s"
    return (
        f"{result['scenario']:<6} {load:<14} {result['rate']:>8.1f}/s  p50 {result['p50_ms']:>7.1f} ms  "
        f"p99 {result['p99_ms']:>7.1f} ms  statuses {result['statuses']}  load {result['loadavg_before']} -> "
        f"{result['loadavg_after']}"
    )


# --- echo --------------------------------------------------------------------------------------


def echo(modes: Sequence[str], concurrencies: Sequence[int], seconds: float) -> list[dict[str, Any]]:
    results = []
    for mode in modes:
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.echo", "serve", "--mode", mode, "--port", str(port)],
            cwd=REPO,
            stdout=subprocess.PIPE,
        )
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"echo server ({mode}) did not start")
            for concurrency in concurrencies:
                before = loadavg()
                answer = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.echo",
                        "load",
                        "--mode",
                        mode,
                        "--target",
                        f"127.0.0.1:{port}",
                        "--concurrency",
                        str(concurrency),
                        "--seconds",
                        str(seconds),
                    ],
                    cwd=REPO,
                    check=True,
                    capture_output=True,
                )
                result = json.loads(answer.stdout)
                result["loadavg_before"], result["loadavg_after"] = before, loadavg()
                print(
                    f"echo {mode:<7} c={concurrency:<3} {result['rate']:>8.1f}/s  p50 {result['p50_ms']:.3f} ms  "
                    f"p99 {result['p99_ms']:.3f} ms  load {before} -> {result['loadavg_after']}",
                    flush=True,
                )
                results.append(result)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)
    return results


# --- profiling ---------------------------------------------------------------------------------


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


@contextmanager
def profiled(platform: Platform, directory: Path | None, seconds: float) -> Iterator[None]:
    """py-spy records every process of the platform while the block runs (samples of the
    thread holding the GIL only, so the profile shows Python CPU, not threads waiting on I/O)."""
    spy = py_spy() if directory is not None else None
    if directory is None or spy is None:
        if directory is not None:
            print("py-spy not found (pip install py-spy): no profile", flush=True)
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    recorders = [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(process.popen.pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "100",
                "--nonblocking",
                "--gil",  # only the thread holding the GIL: where the CPU goes, not who waits on a socket
                "--format",
                "raw",
                "--output",
                str(directory / f"{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, process in platform.processes.items()
    ]
    try:
        yield
    finally:
        for recorder in recorders:
            recorder.wait(timeout=seconds + 30)
    for name in platform.processes:
        raw = directory / f"{name}.txt"
        if raw.exists():
            (directory / f"{name}.summary.txt").write_text(summarise(raw.read_text()))


def summarise(raw: str, top: int = 30) -> str:
    """Per function: share of samples anywhere on the stack (inclusive) and on top (self)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for row in raw.splitlines():
        stack, _, count_text = row.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    if total == 0:
        return "no samples\n"
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"{100 * n / total:6.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"{100 * n / total:6.1f}%  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines) + "\n"


# --- the cost of one order ---------------------------------------------------------------------


def order_cost(
    platform: Platform, databases: Databases, loader: Loader, seconds: float, stats_wait: float
) -> dict[str, Any]:
    """Place orders one at a time; count RPCs and database transactions per order."""
    idle_seconds = stats_wait
    if databases.admin_url is not None:
        time.sleep(stats_wait)  # what came before (the seeding) reaches the statistics first
    tx0, db0 = databases.transactions(), platform.db_counts()
    time.sleep(idle_seconds)
    tx1, db1 = databases.transactions(), platform.db_counts()
    t1 = time.monotonic()
    rpc_before = platform.rpc_counts()
    cpu_before = {name: cpu_seconds(process.popen.pid) for name, process in platform.processes.items()}
    machine_before = machine_cpu_seconds()
    result = loader.run("order", "closed", concurrency=1, duration=seconds, warmup=0.0)
    time.sleep(stats_wait)  # the outbox deliveries that follow, and the statistics flush
    machine_after = machine_cpu_seconds()
    cpu_after = {name: cpu_seconds(process.popen.pid) for name, process in platform.processes.items()}
    rpc_after = platform.rpc_counts()
    tx2, db2 = databases.transactions(), platform.db_counts()
    elapsed = time.monotonic() - t1
    orders = result["orders"]
    hops: dict[str, float] = {}
    for service in SERVICES:
        delta = rpc_after[service] - rpc_before[service]
        for method, count in sorted(delta.items()):
            hops[method] = round(count / max(orders, 1), 2)
    transactions: dict[str, float] | None = None
    if tx0 is not None and tx1 is not None and tx2 is not None:
        transactions = {}
        for service in SERVICES:
            background = (tx1[service] - tx0[service]) / idle_seconds * elapsed
            transactions[service] = round((tx2[service] - tx1[service] - background) / max(orders, 1), 1)
    # Statements and transactions per order, as each service counts them (less the idle
    # background of its outbox polls, as above); round trips on PostgreSQL: each statement, and
    # a BEGIN and a COMMIT or ROLLBACK per transaction (autocommit statements have neither).
    statements: dict[str, dict[str, float]] = {}
    for service in SERVICES:

        def per_order(kinds: Sequence[str], service: str = service) -> float:
            idle = sum(db1[service][k] - db0[service][k] for k in kinds) / idle_seconds * elapsed
            return round((sum(db2[service][k] - db1[service][k] for k in kinds) - idle) / max(int(orders), 1), 1)

        sent, ended = per_order(["statements"]), per_order(["commit", "rollback"])
        statements[service] = {"statements": sent, "transactions": ended, "round_trips": round(sent + 2 * ended, 1)}
    # CPU per order (milliseconds): each process, and the whole machine (PostgreSQL, the load
    # generator and the idle background included), over the orders and the deliveries after them.
    cpu = {name: round((cpu_after[name] - cpu_before[name]) * 1000 / max(orders, 1), 1) for name in cpu_before}
    cpu["machine"] = round((machine_after - machine_before) * 1000 / max(orders, 1), 1)
    return {
        "orders": orders,
        "latency": result,
        "cpu_ms_per_order": cpu,
        "rpcs_per_order": hops,
        "hops_per_order": round(sum(hops.values()), 2),
        "transactions_per_order": transactions,
        "statements_per_order": statements,
        "round_trips_per_order": round(sum(s["round_trips"] for s in statements.values()), 1),
        "transactions_total": round(sum(transactions.values()), 1) if transactions else None,
    }


# --- reconciliation ----------------------------------------------------------------------------


def settle(databases: Databases, timeout: float = 60.0) -> dict[str, int]:
    """Wait until no order's saga is open (an answer the client gave up on, a 503, may still be
    completing); the orders by status."""
    database = Database(databases.urls()["checkout"], pool_size=1)
    try:
        end = time.monotonic() + timeout
        while True:
            with database.engine.connect() as connection:
                statuses = {
                    str(status): int(count)
                    for status, count in connection.execute(text("SELECT status, count(*) FROM orders GROUP BY status"))
                }
                open_sagas = connection.execute(text("SELECT count(*) FROM orders WHERE saga_open")).scalar_one()
            if not open_sagas or time.monotonic() > end:
                return statuses
            time.sleep(0.5)
    finally:
        database.dispose()


def check_balances(
    platform: Platform, databases: Databases, customers: Sequence[str], loader: Loader
) -> dict[str, Any]:
    """Money and points never lost or doubled: the balances are what was seeded less what the PAID
    orders (Checkout's own records) say they took, nothing stays held, every order ended PAID or
    FAILED, and `shared.reconcile` finds nothing across the four databases. Also: how many
    orders the clients were told were placed (201) against how many were."""
    placed, _money_201, _points_201 = loader.paid()
    statuses = settle(databases)
    wallet_channel = grpc.insecure_channel(platform.target("wallet"))
    points_channel = grpc.insecure_channel(platform.target("points"))
    wallet = wallet_pb2_grpc.WalletServiceStub(wallet_channel)
    points = points_pb2_grpc.PointsServiceStub(points_channel)

    def balances(customer: str) -> tuple[int, int, int, int]:
        w = wallet.GetWallet(wallet_pb2.GetWalletRequest(customer_id=customer), timeout=30).wallet
        p = points.GetBalance(points_pb2.GetBalanceRequest(customer_id=customer), timeout=30)
        return w.balance.amount_minor, w.held.amount_minor, p.available, p.held

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            rows = list(pool.map(balances, customers))
    finally:
        wallet_channel.close()
        points_channel.close()
    money_left = sum(row[0] for row in rows)
    money_held = sum(row[1] for row in rows)
    points_left = sum(row[2] for row in rows)
    points_held = sum(row[3] for row in rows)
    dbs = {name: Database(url, pool_size=1) for name, url in databases.urls().items()}
    try:
        with dbs["checkout"].engine.connect() as connection:
            money_paid, points_paid = connection.execute(
                text(
                    "SELECT coalesce(sum(money_paid_minor - money_refunded_minor), 0), "
                    "coalesce(sum(points_applied), 0) FROM orders WHERE status = 'PAID'"
                )
            ).one()
        audits, _checked, cross = reconcile(dbs)
    finally:
        for database in dbs.values():
            database.dispose()
    findings = [str(f) for audit in audits for f in audit.findings] + [str(f) for f in cross]
    expected_money = len(customers) * TOP_UP_MINOR - int(money_paid)
    expected_points = len(customers) * POINTS_CREDIT - int(points_paid)
    ended = statuses.get("PAID", 0) + statuses.get("FAILED", 0)
    ok = (
        money_left == expected_money
        and points_left == expected_points
        and money_held == 0
        and points_held == 0
        and sum(statuses.values()) == ended
        and statuses.get("PAID", 0) >= placed
        and not findings
    )
    return {
        "ok": ok,
        "orders_answered_201": placed,
        "orders_by_status": statuses,
        "money_paid_minor": int(money_paid),
        "wallet_balances_minor": money_left,
        "wallet_expected_minor": expected_money,
        "wallet_held_minor": money_held,
        "points_paid": int(points_paid),
        "points_available": points_left,
        "points_expected": expected_points,
        "points_held": points_held,
        "reconcile_findings": findings,
    }


# --- the run -----------------------------------------------------------------------------------


def ints(text_value: str) -> list[int]:
    return [int(part) for part in text_value.split(",") if part.strip()]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.path", description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--concurrency", default="4,8,16,32,64", help="closed-loop levels of the saturation search")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds of each saturation level")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--c1-seconds", type=float, default=15.0, help="orders one at a time (latency and cost)")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="open loop at half the best rate")
    parser.add_argument("--read-seconds", type=float, default=10.0)
    parser.add_argument("--read-concurrency", default="16,32")
    parser.add_argument("--echo-seconds", type=float, default=5.0)
    parser.add_argument("--echo-concurrency", default="1,4,16")
    parser.add_argument("--skip-echo", action="store_true")
    parser.add_argument("--stats-wait", type=float, default=11.0, help="seconds for PostgreSQL statistics to flush")
    parser.add_argument("--profile", type=Path, default=None, help="record py-spy profiles into this directory")
    parser.add_argument("--profile-concurrency", type=int, default=16)
    parser.add_argument("--profile-seconds", type=float, default=15.0)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL to create the run's databases on (BENCH_DATABASE_URL)",
    )
    parser.add_argument("--sqlite", action="store_true", help="SQLite files instead of PostgreSQL (smoke tests)")
    parser.add_argument("--db-prefix", default="bench_path")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for every process (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="write every figure as JSON here")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_start": loadavg(),
        },
        "customers": args.customers,
        "database": "sqlite" if args.sqlite else "postgresql",
    }
    if not args.skip_echo:
        report["echo"] = echo(["bare", "project"], ints(args.echo_concurrency), args.echo_seconds)
    workdir = Path(tempfile.mkdtemp(prefix="bench-path-"))
    databases = Databases(None if args.sqlite else args.database_url, workdir if args.sqlite else None, args.db_prefix)
    overrides = dict(item.split("=", 1) for item in args.env)
    platform_ = Platform(databases.urls(), workdir, overrides)
    databases.create()
    try:
        platform_.start()
        customers = customer_ids(databases.run, args.customers)
        started = time.monotonic()
        seed(platform_, customers)
        report["seed_seconds"] = round(time.monotonic() - started, 1)
        print(f"seeded {len(customers)} customers in {report['seed_seconds']} s", flush=True)
        report["memory_idle"] = platform_.memory()
        tokens = [mint_token(SECRET, customer, [CUSTOMER], ttl_seconds=6 * 3600) for customer in customers]
        loader = Loader(platform_, tokens, workdir)

        cost = order_cost(platform_, databases, loader, args.c1_seconds, args.stats_wait)
        report["order_cost"] = cost
        print(line(cost["latency"]), flush=True)
        print(f"hops per order {cost['hops_per_order']}: {cost['rpcs_per_order']}", flush=True)
        print(f"transactions per order: {cost['transactions_per_order']}", flush=True)
        print(f"CPU ms per order: {cost['cpu_ms_per_order']}", flush=True)
        print(
            f"statements per order: {cost['statements_per_order']}; "
            f"round trips to the databases: {cost['round_trips_per_order']}",
            flush=True,
        )

        saturation = []
        for concurrency in ints(args.concurrency):
            result = loader.run("order", "closed", concurrency=concurrency, duration=args.seconds, warmup=args.warmup)
            saturation.append(result)
            print(line(result), flush=True)
        best = max(saturation, key=lambda r: r["rate"])
        report["saturation"] = saturation
        report["best"] = {"rate": best["rate"], "concurrency": best["concurrency"]}

        rate = max(best["rate"] / 2, 1.0)
        fixed = loader.run("order", "open", rate=rate, duration=args.latency_seconds)
        report["latency_at_half"] = fixed
        print(line(fixed), flush=True)

        reads: dict[str, list[dict[str, Any]]] = {}
        for scenario in ("quote", "wallet", "points"):
            reads[scenario] = []
            for concurrency in ints(args.read_concurrency):
                result = loader.run(
                    scenario, "closed", concurrency=concurrency, duration=args.read_seconds, warmup=args.warmup
                )
                reads[scenario].append(result)
                print(line(result), flush=True)
        report["reads"] = reads

        if args.profile is not None:
            with profiled(platform_, args.profile, args.profile_seconds):
                result = loader.run(
                    "order", "closed", concurrency=args.profile_concurrency, duration=args.profile_seconds, warmup=0.0
                )
            report["profiled_run"] = result
            print(f"profiled: {line(result)}; stacks in {args.profile}", flush=True)

        report["memory_after"] = platform_.memory()
        for name in platform_.processes:
            print(
                f"memory {name:<11} idle {report['memory_idle'][name]}  after {report['memory_after'][name]}",
                flush=True,
            )
        report["reconciliation"] = check_balances(platform_, databases, customers, loader)
        print(f"reconciliation: {report['reconciliation']}", flush=True)
        if not args.skip_echo:
            echo_best = max(r["rate"] for r in report["echo"] if r["mode"] == "project")
            hops = cost["hops_per_order"]
            report["ratio"] = {
                "echo_rate_project": echo_best,
                "hops_per_order": hops,
                "echo_limit_orders_per_s": round(echo_best / hops, 1) if hops else None,
                "order_rate_over_limit": round(best["rate"] / (echo_best / hops), 3) if hops else None,
            }
            print(f"ratio: {report['ratio']}", flush=True)
    finally:
        platform_.stop()
        databases.drop()
        report["machine"]["loadavg_end"] = loadavg()
        if os.environ.get("BENCH_KEEP_LOGS") != "1":
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    report = run(args)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0 if report.get("reconciliation", {}).get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
