"""An HTTP load generator for the gateway, run as its own process by `bench.path`.

    .venv/bin/python -m bench.loadgen --plan plan.json --out result.json

Plain asyncio streams speaking HTTP/1.1 with keep-alive (one connection per in-flight request,
no client library): the generator should cost as little CPU as possible, because it shares the
machine with what it measures. The plan (JSON, written by `bench.path`) names the gateway, the
customers' bearer tokens, the scenario and the load:

- `closed`: `concurrency` workers, each sending its next request when the last one answered, for
  `duration` seconds; the first `warmup` seconds are not counted.
- `open`: requests started at a fixed `rate` per second for `duration` seconds whatever the
  answers do (latency is measured from the moment a request was due, so a backlog shows up in the
  figures instead of hiding in the client); `count` instead of a duration sends that many.

Scenarios: `order` (POST /v1/orders paid with points and wallet money, a fresh Idempotency-Key
each), `quote` (POST /v1/checkout/quote), `wallet` (GET /v1/wallet), `points` (GET /v1/points).
The result: requests by status, rate, latency percentiles, and for orders the sums of money and
points the 201 answers say were paid (the harness reconciles them with the balances).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Plan:
    host: str
    port: int
    tokens: list[str]
    scenario: str
    mode: str
    duration: float = 10.0
    warmup: float = 0.0
    concurrency: int = 1
    rate: float = 0.0
    count: int = 0
    run_id: str = "run"
    sku: str = "bench-sku"
    quantity: int = 1
    points_to_use: int = 0


@dataclass
class Tally:
    statuses: dict[int, int] = field(default_factory=dict)
    answered: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    money_paid_minor: int = 0
    points_applied: int = 0
    orders: int = 0
    errors: list[str] = field(default_factory=list)


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = time.monotonic()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        self.used = time.monotonic()
        self.writer.write(head + body)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        return status, await self.reader.readexactly(length) if length else b""

    def close(self) -> None:
        self.writer.close()


# uvicorn closes a keep-alive connection idle for 5 s; ours are dropped before that.
IDLE_LIMIT = 3.0


async def send(connection: Connection | None, plan: Plan, head: bytes, body: bytes) -> tuple[Connection, int, bytes]:
    """Send on `connection` (or a new one); a connection the server closed meanwhile is replaced
    and the request sent again, which is safe: orders carry their Idempotency-Key."""
    if connection is None or time.monotonic() - connection.used > IDLE_LIMIT:
        if connection is not None:
            connection.close()
        connection = await Connection.open(plan.host, plan.port)
    try:
        status, answer = await connection.request(head, body)
    except (asyncio.IncompleteReadError, ConnectionError):
        connection.close()
        connection = await Connection.open(plan.host, plan.port)
        status, answer = await connection.request(head, body)
    return connection, status, answer


class Requests:
    """The bytes of the scenario's i-th request."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        host = f"{plan.host}:{plan.port}"
        self._auth = [f"Authorization: Bearer {token}\r\n".encode() for token in plan.tokens]
        self._host = f"Host: {host}\r\n".encode()

    def build(self, index: int) -> tuple[bytes, bytes]:
        plan = self.plan
        auth = self._auth[index % len(self._auth)]
        if plan.scenario in ("wallet", "points"):
            head = f"GET /v1/{plan.scenario} HTTP/1.1\r\n".encode() + self._host + auth + b"\r\n"
            return head, b""
        lines = [{"sku": plan.sku, "quantity": plan.quantity}]
        if plan.scenario == "quote":
            payload: dict[str, Any] = {"lines": lines, "points_to_use": plan.points_to_use, "payment_method": "WALLET"}
            path, extra = "/v1/checkout/quote", b""
        elif plan.scenario == "order":
            payload = {"lines": lines, "points_to_use": plan.points_to_use, "payment_method": "WALLET"}
            path, extra = "/v1/orders", f"Idempotency-Key: {plan.run_id}-{index}\r\n".encode()
        else:
            raise SystemExit(f"unknown scenario {plan.scenario!r}")
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\n".encode()
            + self._host
            + auth
            + extra
            + b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        return head, body


def note(tally: Tally, plan: Plan, status: int, body: bytes, latency: float, counted: bool) -> None:
    """Every answer counts for what was paid (the reconciliation); only those inside the measured
    window count for the rate and the latencies."""
    tally.answered[status] = tally.answered.get(status, 0) + 1
    if plan.scenario == "order" and status == 201:
        answer = json.loads(body)
        tally.orders += 1
        tally.money_paid_minor += int(answer["money_paid_minor"])
        tally.points_applied += int(answer["points_applied"])
    elif status >= 400 and len(tally.errors) < 5:
        tally.errors.append(f"{status}: {body[:300].decode(errors='replace')}")
    if counted:
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        tally.latencies.append(latency)


async def closed_loop(plan: Plan, requests: Requests, tally: Tally) -> float:
    started = time.perf_counter()
    counting_from = started + plan.warmup
    end = counting_from + plan.duration
    counter = iter(range(10**12))

    async def worker() -> None:
        connection: Connection | None = None
        try:
            while (now := time.perf_counter()) < end:
                head, body = requests.build(next(counter))
                connection, status, answer = await send(connection, plan, head, body)
                done = time.perf_counter()
                note(tally, plan, status, answer, done - now, now >= counting_from and done <= end)
        finally:
            if connection is not None:
                connection.close()

    await asyncio.gather(*(worker() for _ in range(plan.concurrency)))
    return end - counting_from


async def open_loop(plan: Plan, requests: Requests, tally: Tally) -> float:
    idle: list[Connection] = []
    total = plan.count or max(1, int(plan.rate * plan.duration))
    interval = 1 / plan.rate
    tasks: list[asyncio.Task[None]] = []

    async def one(index: int, due: float) -> None:
        head, body = requests.build(index)
        connection, status, answer = await send(idle.pop() if idle else None, plan, head, body)
        note(tally, plan, status, answer, time.perf_counter() - due, True)
        idle.append(connection)

    started = time.perf_counter()
    for index in range(total):
        due = started + index * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due)))
    await asyncio.gather(*tasks)
    for connection in idle:
        connection.close()
    return time.perf_counter() - started


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def summary(plan: Plan, tally: Tally, seconds: float) -> dict[str, Any]:
    latencies = sorted(tally.latencies)
    ok = sum(count for status, count in tally.statuses.items() if status < 400)
    return {
        "scenario": plan.scenario,
        "mode": plan.mode,
        "concurrency": plan.concurrency,
        "offered_rate": plan.rate,
        "seconds": round(seconds, 3),
        "requests": len(latencies),
        "ok": ok,
        "statuses": {str(status): count for status, count in sorted(tally.statuses.items())},
        "rate": round(ok / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p90_ms": round(percentile(latencies, 0.90) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round((latencies[-1] if latencies else 0.0) * 1000, 2),
        "answered": {str(status): count for status, count in sorted(tally.answered.items())},
        "orders": tally.orders,
        "money_paid_minor": tally.money_paid_minor,
        "points_applied": tally.points_applied,
        "errors": tally.errors,
    }


async def run(plan: Plan) -> dict[str, Any]:
    tally = Tally()
    requests = Requests(plan)
    seconds = await (closed_loop if plan.mode == "closed" else open_loop)(plan, requests, tally)
    return summary(plan, tally, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", required=True, help="the plan, as JSON (see the module docstring)")
    parser.add_argument("--out", required=True, help="where to write the result, as JSON")
    args = parser.parse_args(argv)
    with open(args.plan) as plan_file:
        plan = Plan(**json.load(plan_file))
    result = asyncio.run(run(plan))
    with open(args.out, "w") as out:
        json.dump(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
