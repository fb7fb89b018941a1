"""Benchmark: the batch jobs at a million customers, with their SQL limits, on PostgreSQL.

    .venv/bin/python -m bench.jobs [--wallets 1000000] [--lots N] [--profile DIR] [--skip-limits]

What runs: the real Promotions, Points and Wallet services, each as its own process
(`python -m services.<name>`, as in production, so they do not share one interpreter lock), each
on its own fresh PostgreSQL database created for the run and dropped after it
(BENCH_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/postgres). Migrations are the
services' own (applied on start).

1. Seed (timed apart): N wallets opened before the month, each with a top-up before it and three
   movements in it (a top-up, a payment, a top-up): N wallets, 4N ledger transfers and 4N
   statement entries, by INSERT ... SELECT over generate_series. (Ledger postings and accounts
   are not seeded: nothing the jobs read.)
2. SQL limits beside the system, on the same database: the month's interest of every wallet as ONE
   INSERT ... SELECT (end-of-day balances through width_bucket and a window, average basis,
   12 % a year) into a copy of `interest_accruals` with its keys and constraints; then the same
   with a points-ledger row per account written by the same statement.
3. `PostMonthlyInterest` through gRPC, timed until every point is credited in Points (the
   Wallet's outbox relay delivers BatchCreditPoints): the posting, the relay and Points' credits
   run at once. Checked: the accruals equal the SQL limit's to the micro-point, the Points lots of
   the month sum to the accruals' points, one lot per positive accrual, the outbox is delivered.
4. The same month again under a new request id: timed, and nothing may change.
5. N (or --lots) points lots past their expiry are seeded on the same customers (with their
   credit history lines and balances); the expiry as one SQL statement on a copy of them (lots,
   history lines, balances); then `ExpirePoints` through gRPC, checked: every lot written off,
   the balances moved by exactly that, history still sums to the balances.

The interest and expiry steps also report the CPU they cost per wallet or lot: each service
process's own CPU time (/proc) and the machine's, the difference being PostgreSQL and everything
else; and PostgreSQL's processes on their own (`PostgresCpu`, when the server runs on this
machine): the backends of each service's database, of other databases, and the server's
background processes.

`--profile DIR` runs each service under `py-spy record --gil` (raw collapsed stacks in DIR: only the
thread holding the interpreter lock is sampled, so the profile is where the Python CPU goes, not
which threads wait) and prints the hottest functions of each after the run. Never part of the
test suite.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from sqlalchemy.engine import make_url

from bench.path import cpu_seconds, machine_cpu_seconds
from shared.calendar import Month, ProgrammeCalendar
from shared.db import normalise_url

CALENDAR = ProgrammeCalendar("Europe/Moscow")
SERVICES = ("promotions", "points", "wallet")


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" tasks")[0].strip() if Path("/proc/loadavg").exists() else "?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Results:
    rows: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def get(self, label: str) -> float:
        return dict(self.rows)[label]


@contextmanager
def timed(label: str, results: Results) -> Iterator[None]:
    print(f"{label} ...", flush=True)
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    results.rows.append((label, elapsed))
    print(f"  {label}: {elapsed:.2f} s   (load {loadavg()})", flush=True)


class Cluster:
    """The PostgreSQL server: one database per service, created and dropped by the run."""

    def __init__(self, server_url: str) -> None:
        self.url = make_url(normalise_url(server_url))
        self.prefix = f"bench_jobs_{uuid.uuid4().hex[:8]}"
        self.admin = psycopg.connect(self._conninfo(self.url.database or "postgres"), autocommit=True)
        self.names: list[str] = []

    def _conninfo(self, dbname: str) -> str:
        u = self.url
        password = f" password={u.password}" if u.password else ""
        host, port, user = u.host or "127.0.0.1", u.port or 5432, u.username or "postgres"
        return f"host={host} port={port} user={user}{password} dbname={dbname}"

    def create(self, service: str) -> tuple[str, str]:
        """(SQLAlchemy URL for the service, libpq conninfo for the bench)."""
        name = f"{self.prefix}_{service}"
        self.admin.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False), self._conninfo(name)

    def drop_all(self) -> None:
        for name in self.names:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.close()


class PostgresCpu:
    """CPU of PostgreSQL's own processes while a step runs, by what they work for: the backends
    of each service's database (`<prefix>_<service>`; the bench's checks after the RPC count
    there too, a few count queries), backends of other databases, and the server's background
    processes (checkpointer, background and WAL writers, autovacuum).
    Read from /proc by a thread every 0.2 s: a backend that ends between two reads loses at most
    its last 0.2 s. Only for a server on this machine; elsewhere it finds nothing."""

    PERIOD = 0.2

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._first: dict[tuple[int, str], float] = {}  # (pid, start time) -> CPU when first seen
        self._last: dict[tuple[int, str], tuple[str, float]] = {}  # -> (role, CPU when last seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="postgres-cpu", daemon=True)

    def __enter__(self) -> PostgresCpu:
        self._sample(initial=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(initial=False)

    def _run(self) -> None:
        while not self._stop.wait(self.PERIOD):
            self._sample(initial=False)

    def _role(self, command: str) -> str | None:
        if not command.startswith("postgres: "):
            return None
        words = command.split()
        # A backend: "postgres: <cluster>: <user> <database> <client>(<port>) <state>".
        if len(words) >= 5 and "(" in words[4]:
            database = words[3]
            return database.removeprefix(f"{self.prefix}_") if database.startswith(self.prefix) else "other backends"
        return "server (checkpointer, writers, autovacuum)"

    def _sample(self, *, initial: bool) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                command = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            role = self._role(command.strip())
            if role is None:
                continue
            key, used = (int(entry.name), fields[19]), (int(fields[11]) + int(fields[12])) / tick
            # A process first seen after the start began inside the step: all its CPU counts.
            self._first.setdefault(key, used if initial else 0.0)
            self._last[key] = (role, used)

    def used(self) -> dict[str, float]:
        """CPU seconds by role, most first."""
        totals: dict[str, float] = collections.defaultdict(float)
        for key, (role, used) in self._last.items():
            totals[role] += used - self._first[key]
        return dict(sorted(totals.items(), key=lambda item: -item[1]))

    def note(self, per: int, unit: str) -> str:
        parts = ", ".join(f"{role} {seconds * 1e6 / per:.0f}" for role, seconds in self.used().items())
        return f"  of which PostgreSQL's processes, microseconds per {unit}: {parts}"


class Service:
    """One service process (optionally under py-spy)."""

    def __init__(self, name: str, env: dict[str, str], profile_dir: Path | None) -> None:
        self.name = name
        self.port = int(env[f"{name.upper()}_PORT"])
        command = [sys.executable, "-m", f"services.{name}"]
        if profile_dir is not None:
            py_spy = Path(sys.executable).parent / "py-spy"
            out = profile_dir / f"{name}.txt"
            command = [
                str(py_spy),
                "record",
                "--format",
                "raw",
                "--rate",
                "50",
                "--gil",
                "-o",
                str(out),
                "--",
                *command,
            ]
        self.process = subprocess.Popen(command, env={**os.environ, **env})
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{self.port}", options=[("grpc.max_receive_message_length", 64 << 20)]
        )

    def pid(self) -> int:
        """The service's own process (under py-spy, py-spy's child, forked from any of its threads)."""
        tasks = Path(f"/proc/{self.process.pid}/task")
        found = [p for path in tasks.glob("*/children") for p in path.read_text().split()] if tasks.exists() else []
        return int(found[0]) if found else self.process.pid

    def wait_serving(self, timeout: float = 120) -> None:
        stub = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start")

    def stop(self) -> None:
        self.channel.close()
        # Under py-spy the service is py-spy's child: stop the service, and py-spy writes its file.
        tasks = Path(f"/proc/{self.process.pid}/task")
        children = tasks.glob("*/children") if tasks.exists() else []  # py-spy forks from any thread
        pids = [int(p) for path in children for p in path.read_text().split()]
        for pid in pids or [self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in pids:
            # A signal that arrives while py-spy has the process paused for a sample can be lost:
            # send it again until the service is gone.
            ticks = 0
            while Path(f"/proc/{pid}").exists() and self.process.poll() is None:
                time.sleep(0.1)
                ticks += 1
                if ticks % 20 == 0:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- seeding -------------------------------------------------------------------------------------

SEED_WALLETS = """
INSERT INTO wallets (wallet_id, customer_id, currency, balance_minor, held_minor, status, created_at, updated_at)
SELECT 'w-' || lpad(n::text, 9, '0'), 'c-' || lpad(n::text, 9, '0'), 'RUB',
       a + t1 - a / 2 + t2, 0, 'ACTIVE', %(opened)s, %(opened)s
FROM (SELECT n, 10000 + (n::bigint * 7919 %% 100000) * 100 AS a, 10000 + (n::bigint * 104729 %% 50000) * 100 AS t1,
             10000 + (n::bigint * 15485863 %% 20000) * 100 AS t2
      FROM generate_series(1, %(n)s) AS n) s
"""

# Four movements a wallet: k=0 a top-up before the month, then a top-up, a payment and a top-up in it.
MOVEMENTS = """
SELECT n, k, 'w-' || lpad(n::text, 9, '0') AS wallet_id, 't-' || n || '-' || k AS transfer_id,
       CASE k WHEN 2 THEN 'PAYMENT' ELSE 'TOP_UP' END AS type,
       CASE k WHEN 0 THEN a WHEN 1 THEN t1 WHEN 2 THEN -(a / 2) ELSE t2 END AS amount,
       CASE k WHEN 0 THEN a WHEN 1 THEN a + t1 WHEN 2 THEN a + t1 - a / 2 ELSE a + t1 - a / 2 + t2 END AS balance,
       CASE k WHEN 0 THEN %(opened)s::timestamptz + (n %% 86400) * interval '1 second'
              WHEN 1 THEN %(start)s::timestamptz + (3 + n %% 5) * interval '1 day' + (n %% 3600) * interval '1 second'
              WHEN 2 THEN %(start)s::timestamptz + (10 + n %% 7) * interval '1 day' + (n %% 7200) * interval '1 second'
              ELSE %(start)s::timestamptz + (19 + n %% 9) * interval '1 day' + (n %% 9000) * interval '1 second'
       END AS at
FROM (SELECT n, 10000 + (n::bigint * 7919 %% 100000) * 100 AS a, 10000 + (n::bigint * 104729 %% 50000) * 100 AS t1,
             10000 + (n::bigint * 15485863 %% 20000) * 100 AS t2
      FROM generate_series(1, %(n)s) AS n) s
CROSS JOIN generate_series(0, 3) AS k
"""


def seed_wallets(conninfo: str, wallets: int, month: Month) -> None:
    start = CALENDAR.month_start(month)
    params = {"n": wallets, "opened": start - timedelta(days=10), "start": start}
    with psycopg.connect(conninfo) as connection:
        connection.execute(SEED_WALLETS, params)
        connection.execute(
            f"INSERT INTO ledger_transfers (transfer_id, kind, reference, created_at)"
            f" SELECT transfer_id, CASE type WHEN 'PAYMENT' THEN 'CAPTURE' ELSE 'TOP_UP' END, 'seed', at"
            f" FROM ({MOVEMENTS}) m",
            params,
        )
        connection.execute(
            f"INSERT INTO statement_entries (wallet_id, transfer_id, type, amount_minor, balance_after_minor,"
            f" reference, description, created_at)"
            f" SELECT wallet_id, transfer_id, type, amount, balance, 'seed', 'seed', at FROM ({MOVEMENTS}) m"
            f" ORDER BY n, k",
            params,
        )
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE wallets")
        connection.execute("VACUUM ANALYZE statement_entries")


# --- SQL limits ----------------------------------------------------------------------------------

INTEREST_SQL = """
SELECT w.wallet_id, w.customer_id, coalesce(s.total, 0) AS total
FROM wallets w LEFT JOIN (
    SELECT wallet_id, sum(balance * (coalesce(next_day, %(days)s) - day))::bigint AS total
    FROM (SELECT wallet_id, balance_after_minor AS balance, width_bucket(created_at, %(ends)s::timestamptz[]) AS day,
                 lead(width_bucket(created_at, %(ends)s::timestamptz[])) OVER (PARTITION BY wallet_id ORDER BY id)
                     AS next_day
          FROM statement_entries WHERE created_at < %(end)s) e
    GROUP BY wallet_id
) s ON s.wallet_id = w.wallet_id
WHERE w.created_at < %(end)s
"""

ACCRUAL_COLUMNS = (
    "wallet_id, customer_id, month, mechanic_code, mechanic_name, apr_bps, basis, basis_minor, carry_in_micro,"
    " accrued_micro, points, carry_out_micro, posted_at"
)
ACCRUAL_VALUES = (
    "wallet_id, customer_id, %(month)s, 'sql', 'sql', 1200, 'AVERAGE_DAILY', total / %(days)s, 0,"
    " total * 1200 / (12 * %(days)s), total * 1200 / (12 * %(days)s) / 1000000,"
    " total * 1200 / (12 * %(days)s) %% 1000000, now()"
)


def interest_limits(conninfo: str, month: Month, results: Results) -> None:
    days = len(month.days())
    params = {
        "days": days,
        "ends": [CALENDAR.end_of_day(d) for d in month.days()],
        "end": CALENDAR.month_end(month),
        "month": str(month),
    }
    with psycopg.connect(conninfo, autocommit=True) as connection:
        for table in ("limit_accruals", "limit_accruals_ledger"):
            connection.execute(f"CREATE TABLE {table} (LIKE interest_accruals INCLUDING ALL)")
            connection.execute(f"ALTER TABLE {table} ADD FOREIGN KEY (wallet_id) REFERENCES wallets (wallet_id)")
        connection.execute(
            "CREATE TABLE limit_points_ledger (id bigserial PRIMARY KEY, customer_id varchar(64) NOT NULL,"
            " points bigint NOT NULL CHECK (points > 0), reference varchar(128) NOT NULL UNIQUE,"
            " created_at timestamptz NOT NULL)"
        )
    with timed("SQL limit: interest of the month, one INSERT ... SELECT", results), psycopg.connect(conninfo) as c:
        c.execute(
            f"INSERT INTO limit_accruals ({ACCRUAL_COLUMNS}) SELECT {ACCRUAL_VALUES} FROM ({INTEREST_SQL}) s", params
        )
    label = "SQL limit: the same with a points-ledger row per account"
    with timed(label, results), psycopg.connect(conninfo) as c:
        c.execute(
            f"WITH posted AS (INSERT INTO limit_accruals_ledger ({ACCRUAL_COLUMNS})"
            f" SELECT {ACCRUAL_VALUES} FROM ({INTEREST_SQL}) s RETURNING wallet_id, customer_id, points)"
            " INSERT INTO limit_points_ledger (customer_id, points, reference, created_at)"
            " SELECT customer_id, points, 'interest:' || wallet_id || ':' || %(month)s, now()"
            " FROM posted WHERE points > 0",
            params,
        )


SEED_LOTS = """
INSERT INTO lots (lot_id, customer_id, amount, remaining, held, withdrawn, source, reference, status,
                  available_at, expires_at, created_at, reason, operator_id)
SELECT %(prefix)s::text || n, 'c-' || lpad(((n - 1) %% %(customers)s + 1)::text, 9, '0'),
       100 + n %% 900, 100 + n %% 900, 0, 0, 'PURCHASE', 'seed:' || n, 'AVAILABLE', %(created)s,
       %(expires)s - (n %% 3600) * interval '1 second', %(created)s, '', ''
FROM generate_series(1, %(n)s) AS n
"""


def seed_lots(conninfo: str, lots: int, customers: int, now: datetime, prefix: str = "x-") -> None:
    """`lots` lots past their expiry (ids `prefix` + n) on `customers` customers, with their
    CREDITED lines and the balances they make."""
    params = {
        "prefix": prefix,
        "n": lots,
        "customers": customers,
        "created": now - timedelta(days=400),
        "expires": now - timedelta(hours=1),
    }
    with psycopg.connect(conninfo) as connection:
        connection.execute(SEED_LOTS, params)
        connection.execute(
            "INSERT INTO history (customer_id, type, available_delta, pending_delta, held_delta, unrecovered_points,"
            " lot_id, hold_id, source, reference, description, operator_id, created_at)"
            " SELECT customer_id, 'CREDITED', amount, 0, 0, 0, lot_id, '', source, reference, 'seed', '', created_at"
            " FROM lots WHERE starts_with(lot_id, %(prefix)s)",
            {"prefix": prefix},
        )
        connection.execute(
            "INSERT INTO accounts (customer_id, available, pending, held, updated_at)"
            " SELECT customer_id, sum(amount), 0, 0, %(now)s FROM lots WHERE starts_with(lot_id, %(prefix)s)"
            " GROUP BY customer_id"
            " ON CONFLICT (customer_id) DO UPDATE SET available = accounts.available + excluded.available",
            {"now": now, "prefix": prefix},
        )
    with psycopg.connect(conninfo, autocommit=True) as connection:
        for table in ("lots", "history", "accounts"):
            connection.execute(f"VACUUM ANALYZE {table}")


def expiry_limit(conninfo: str, now: datetime, results: Results) -> None:
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("CREATE TABLE limit_lots (LIKE lots INCLUDING ALL)")
        connection.execute("CREATE TABLE limit_history (LIKE history INCLUDING ALL)")
        connection.execute("CREATE TABLE limit_accounts (LIKE accounts INCLUDING ALL)")
        connection.execute("INSERT INTO limit_lots SELECT * FROM lots WHERE lot_id LIKE 'x-%'")
        connection.execute("INSERT INTO limit_accounts SELECT * FROM accounts")
        connection.execute("VACUUM ANALYZE limit_lots")
        connection.execute("VACUUM ANALYZE limit_accounts")
    label = "SQL limit: expiry as one statement (lots, history lines, balances)"
    with timed(label, results), psycopg.connect(conninfo) as connection:
        connection.execute(
            "WITH due AS (SELECT lot_id, customer_id, remaining - held AS points FROM limit_lots"
            "             WHERE status = 'AVAILABLE' AND expires_at <= %(now)s AND remaining > held),"
            " expired AS (UPDATE limit_lots l SET remaining = l.held,"
            "             status = CASE WHEN l.held = 0 THEN 'EXPIRED' ELSE l.status END"
            "             FROM due WHERE l.lot_id = due.lot_id RETURNING due.lot_id, due.customer_id, due.points),"
            " lines AS (INSERT INTO limit_history (customer_id, type, available_delta, pending_delta, held_delta,"
            "           unrecovered_points, lot_id, hold_id, source, reference, description, operator_id, created_at)"
            "           SELECT customer_id, 'EXPIRED', -points, 0, 0, 0, lot_id, '', 'PURCHASE', '', 'Expired', '',"
            "           %(now)s FROM expired)"
            " UPDATE limit_accounts a SET available = a.available - s.points, updated_at = %(now)s"
            " FROM (SELECT customer_id, sum(points) AS points FROM expired GROUP BY customer_id) s"
            " WHERE a.customer_id = s.customer_id",
            {"now": now},
        )


# --- checks --------------------------------------------------------------------------------------


def one(conninfo: str, query: str, params: dict[str, Any] | None = None) -> tuple[Any, ...]:
    with psycopg.connect(conninfo) as connection:
        row = connection.execute(query, params or {}).fetchone()
        assert row is not None
        return tuple(row)


def interest_state(wallet_db: str, points_db: str, month: Month) -> dict[str, Any]:
    m = str(month)
    accruals = one(
        wallet_db,
        "SELECT count(*), coalesce(sum(points), 0), count(*) FILTER (WHERE points > 0) FROM interest_accruals"
        " WHERE month = %(m)s",
        {"m": m},
    )
    outbox = one(
        wallet_db,
        "SELECT count(*), count(*) FILTER (WHERE status = 'PENDING'), count(*) FILTER (WHERE status = 'DEAD')"
        " FROM outbox_messages",
    )
    lots = one(
        points_db,
        "SELECT count(*), coalesce(sum(amount), 0) FROM lots WHERE source = 'WALLET_INTEREST' AND reference LIKE %(r)s",
        {"r": f"interest:%:{m}"},
    )
    return {
        "accruals": accruals[0],
        "points_posted": accruals[1],
        "positive_accruals": accruals[2],
        "outbox_messages": outbox[0],
        "outbox_pending": outbox[1],
        "outbox_dead": outbox[2],
        "lots": lots[0],
        "lots_points": lots[1],
    }


def wait_credited(wallet_db: str, points_db: str, month: Month, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = interest_state(wallet_db, points_db, month)
        if state["outbox_pending"] == 0 and state["lots"] >= state["positive_accruals"]:
            return state
        if time.monotonic() > deadline:
            raise RuntimeError(f"interest not credited in {timeout} s: {state}")
        time.sleep(0.25)


# --- profiles ------------------------------------------------------------------------------------


IDLE = ("Condition.wait", "_worker", "_serve", "EpollSelector.select", "Event.wait", "_wait_once", "sleep")


def summarise_profile(path: Path, top: int = 12) -> str:
    """The hottest functions of a py-spy raw (collapsed) profile, threads waiting idle left out:
    own samples (where the time is spent) and inclusive samples of this project's functions."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = []
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            file = where.split(":")[0]
            if name.startswith(("process ", "thread ")) or not file:
                continue
            ours = "site-packages" not in file and any(part in file for part in ("services/", "shared/"))
            frames.append((f"{name} ({file.rsplit('/', 1)[-1]})", ours))
        if not frames or frames[-1][0].split(" (")[0] in IDLE:
            continue
        count = int(count_text)
        total += count
        own[frames[-1][0]] += count
        for frame in {f for f, ours in frames if ours}:
            inclusive[frame] += count
    if not total:
        return f"{path.name}: no busy samples"
    lines = [f"{path.name}: {total} samples holding the GIL (50 Hz)", "  own time:"]
    lines += [f"    {100 * n / total:5.1f} %  {name}" for name, n in own.most_common(top)]
    lines.append("  inclusive, this project's functions:")
    lines += [f"    {100 * n / total:5.1f} %  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


# --- the run -------------------------------------------------------------------------------------


def setting_pair(text: str) -> tuple[str, str]:
    """`NAME=VALUE` of `--service-env`."""
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--wallets", type=int, default=1_000_000)
    parser.add_argument("--lots", type=int, default=0, help="lots to expire (default: as many as wallets)")
    parser.add_argument("--month", default="", help="month to post (default: the last one)")
    parser.add_argument("--profile", type=Path, default=None, help="run the services under py-spy, profiles here")
    parser.add_argument("--skip-limits", action="store_true", help="do not run the SQL limits")
    parser.add_argument("--skip-expiry", action="store_true")
    parser.add_argument("--skip-interest", action="store_true", help="only the expiry (its lots are seeded anyway)")
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        type=setting_pair,
        metavar="NAME=VALUE",
        help="a setting for every service (e.g. POINTS_EXPIRY_WORKERS=1 to compare); may be repeated",
    )
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--summarise", type=Path, nargs="*", help="only print the summary of these py-spy profiles")
    args = parser.parse_args()
    if args.summarise:
        for path in args.summarise:
            print(summarise_profile(path) + "\n")
        return
    lots = args.lots or args.wallets
    now = datetime.now(UTC)
    month = Month.parse(args.month) if args.month else CALENDAR.month_of(now).previous()
    results = Results()
    load_before = loadavg()
    print(f"load average before: {load_before}", flush=True)

    cluster = Cluster(os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    services: dict[str, Service] = {}
    try:
        ports = {name: free_port() for name in SERVICES}
        urls = {name: cluster.create(name) for name in SERVICES}
        common = {
            "OTEL_TRACES_EXPORTER": "none",
            "LOG_LEVEL": "WARNING",
            "PEER_DEADLINE_MS": "120000",
            "DB_AUTO_MIGRATE": "true",
            "METRICS_PORT": "0",
            **dict(args.service_env),
            **{f"{name.upper()}_TARGET": f"127.0.0.1:{port}" for name, port in ports.items()},
        }
        for name in SERVICES:
            env = {**common, f"{name.upper()}_PORT": str(ports[name]), f"{name.upper()}_DATABASE_URL": urls[name][0]}
            services[name] = Service(name, env, args.profile)
            services[name].wait_serving()
        wallet_db, points_db = urls["wallet"][1], urls["points"][1]
        wallet = wallet_pb2_grpc.WalletServiceStub(services["wallet"].channel)
        points = points_pb2_grpc.PointsServiceStub(services["points"].channel)

        if not args.skip_interest:
            with timed(f"seed {args.wallets:,} wallets, {4 * args.wallets:,} statement entries", results):
                seed_wallets(wallet_db, args.wallets, month)
            if not args.skip_limits:
                interest_limits(wallet_db, month, results)

            label_post = f"PostMonthlyInterest {month}, {args.wallets:,} wallets, until every point is in Points"
            rpc_time: list[float] = []
            cpu_before = {name: cpu_seconds(service.pid()) for name, service in services.items()}
            machine_before = machine_cpu_seconds()
            with PostgresCpu(cluster.prefix) as postgres_cpu, timed(label_post, results):
                started = time.perf_counter()
                posted = wallet.PostMonthlyInterest(
                    wallet_pb2.PostMonthlyInterestRequest(request_id=f"bench-{uuid.uuid4()}", month=str(month)),
                    timeout=args.timeout,
                )
                rpc_time.append(time.perf_counter() - started)
                state = wait_credited(wallet_db, points_db, month, args.timeout)
            machine_used = machine_cpu_seconds() - machine_before
            used = {name: cpu_seconds(service.pid()) - cpu_before[name] for name, service in services.items()}
            results.notes.append(f"  of which the RPC (posting, relay already delivering): {rpc_time[0]:.2f} s")
            per_wallet = ", ".join(f"{name} {used[name] * 1e6 / args.wallets:.0f}" for name in SERVICES)
            rest = (machine_used - sum(used.values())) * 1e6 / args.wallets
            results.notes.append(
                f"  CPU of the posting, microseconds per wallet: {per_wallet}, PostgreSQL and the rest {rest:.0f};"
                f" machine {machine_used * 1e6 / args.wallets:.0f} ({machine_used:.1f} s of CPU in"
                f" {results.get(label_post):.1f} s on {os.cpu_count()} CPUs)"
            )
            results.notes.append(postgres_cpu.note(args.wallets, "wallet"))
            print(f"  posted {posted.wallets_posted:,} wallets, {posted.points_posted:,} points; state {state}")
            assert posted.wallets_posted == args.wallets, posted
            assert state["accruals"] == args.wallets and state["points_posted"] == posted.points_posted
            assert state["lots"] == state["positive_accruals"] and state["lots_points"] == state["points_posted"], state
            assert state["outbox_dead"] == 0, state
            if not args.skip_limits:
                differ = one(
                    wallet_db,
                    "SELECT count(*) FROM interest_accruals a JOIN limit_accruals l USING (wallet_id)"
                    " WHERE a.month = %(m)s AND (a.points, a.carry_out_micro, a.accrued_micro, a.basis_minor)"
                    " IS DISTINCT FROM (l.points, l.carry_out_micro, l.accrued_micro, l.basis_minor)",
                    {"m": str(month)},
                )[0]
                print(f"  accruals that differ from the SQL limit's: {differ}")
                if differ:
                    print(
                        one(
                            wallet_db,
                            "SELECT a.*, l.* FROM interest_accruals a JOIN limit_accruals l USING (wallet_id)"
                            " WHERE (a.points, a.carry_out_micro, a.accrued_micro, a.basis_minor)"
                            " IS DISTINCT FROM (l.points, l.carry_out_micro, l.accrued_micro, l.basis_minor) LIMIT 1",
                        )
                    )
                assert differ == 0

            with timed(f"PostMonthlyInterest {month} again (nothing to do)", results):
                again = wallet.PostMonthlyInterest(
                    wallet_pb2.PostMonthlyInterestRequest(request_id=f"bench-{uuid.uuid4()}", month=str(month)),
                    timeout=args.timeout,
                )
                state_again = wait_credited(wallet_db, points_db, month, args.timeout)
            print(f"  again: posted {again.wallets_posted}, already {again.wallets_already_posted:,}")
            assert again.wallets_posted == 0 and again.points_posted == 0, again
            assert state_again == state, (state_again, state)

        if not args.skip_expiry:
            now = datetime.now(UTC)
            with timed(f"seed {lots:,} points lots past their expiry", results):
                seed_lots(points_db, lots, args.wallets, now)
            if not args.skip_limits:
                expiry_limit(points_db, now, results)
            before = one(
                points_db,
                "SELECT coalesce(sum(remaining - held), 0), count(*) FROM lots"
                " WHERE status = 'AVAILABLE' AND expires_at <= %(now)s AND remaining > held",
                {"now": now},
            )
            available_before = one(points_db, "SELECT sum(available) FROM accounts")[0]
            points_cpu_before, machine_before = cpu_seconds(services["points"].pid()), machine_cpu_seconds()
            with PostgresCpu(cluster.prefix) as postgres_cpu, timed(f"ExpirePoints, {lots:,} lots", results):
                expired = points.ExpirePoints(
                    points_pb2.ExpirePointsRequest(request_id=f"bench-{uuid.uuid4()}"), timeout=args.timeout
                )
            points_used = cpu_seconds(services["points"].pid()) - points_cpu_before
            machine_used = machine_cpu_seconds() - machine_before
            results.notes.append(
                f"  CPU of the expiry, microseconds per lot: points {points_used * 1e6 / lots:.0f},"
                f" PostgreSQL and the rest {(machine_used - points_used) * 1e6 / lots:.0f};"
                f" machine {machine_used * 1e6 / lots:.0f} ({machine_used:.1f} s of CPU in"
                f" {results.get(f'ExpirePoints, {lots:,} lots'):.1f} s on {os.cpu_count()} CPUs)"
            )
            results.notes.append(postgres_cpu.note(lots, "lot"))
            print(f"  expired {expired.lots_expired:,} lots, {expired.points_expired:,} points")
            assert (expired.points_expired, expired.lots_expired) == (before[0], before[1]), (expired, before)
            left = one(
                points_db,
                "SELECT count(*) FROM lots WHERE status = 'AVAILABLE' AND expires_at <= %(now)s AND remaining > held",
                {"now": now},
            )[0]
            available_after, history_sum = one(
                points_db, "SELECT (SELECT sum(available) FROM accounts), (SELECT sum(available_delta) FROM history)"
            )
            assert left == 0 and available_before - available_after == before[0], (left, available_after)
            assert available_after == history_sum, (available_after, history_sum)
    finally:
        for service in reversed(list(services.values())):
            service.stop()
        cluster.drop_all()
    load_after = loadavg()

    print("\n| step | time |\n|---|---|")
    for label, seconds in results.rows:
        print(f"| {label} | {seconds:.1f} s |")
    for note in results.notes:
        print(note)
    if not args.skip_limits:
        print("\nratios to the SQL limits:")
        if not args.skip_interest:
            post = results.get(label_post)
            for label in (
                "SQL limit: interest of the month, one INSERT ... SELECT",
                "SQL limit: the same with a points-ledger row per account",
            ):
                print(f"  interest posting / {label.removeprefix('SQL limit: ')}: {post / results.get(label):.1f}x")
        if not args.skip_expiry:
            ratio = results.get(f"ExpirePoints, {lots:,} lots") / results.get(
                "SQL limit: expiry as one statement (lots, history lines, balances)"
            )
            print(f"  ExpirePoints / the expiry as one statement: {ratio:.2f}x")
    print(f"\nload average before: {load_before}; after: {load_after}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    if args.profile is not None:
        for name in SERVICES:
            path = args.profile / f"{name}.txt"
            if path.exists():
                print("\n" + summarise_profile(path))


if __name__ == "__main__":
    main()
