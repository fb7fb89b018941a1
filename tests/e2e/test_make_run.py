"""`make run` as a user runs it: four real service processes and the gateway, health, demo data,
the printed tokens working against the HTTP API, a clean stop."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from loyalty.points.v1 import points_pb2, points_pb2_grpc

from shared.launcher import health
from tests.harness import Databases, free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("wallet", "points", "promotions", "checkout")


def launcher_env(databases: Databases) -> dict[str, str]:
    env = dict(os.environ)
    for name in SERVICES:
        port = free_port()
        env[f"{name.upper()}_PORT"] = str(port)
        env[f"{name.upper()}_TARGET"] = f"127.0.0.1:{port}"
        env[f"{name.upper()}_DATABASE_URL"] = databases.new(name)
    env["HEALTH_PROBE_INTERVAL_MS"] = "100"
    env["GATEWAY_PORT"] = str(free_port())
    env.pop("LOYALTY_ENV", None)
    env.pop("LOYALTY_JWT_SECRET", None)
    return env


def wait_for_line(process: subprocess.Popen[str], text: str, seconds: int = 90) -> list[str]:
    seen: list[str] = []
    end = time.monotonic() + seconds
    assert process.stdout is not None
    while time.monotonic() < end:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"{text!r} not printed; output was:\n{''.join(seen)}")


@contextmanager
def launched(env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """`make run` as a user runs it; on leaving, Ctrl-C and wait for a clean exit. The banner is
    read up to the printed tokens, which `tokens()` then finds in `process.banner`."""
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.launcher"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        banner = wait_for_line(process, "Ctrl-C stops everything")
        banner += wait_for_line(process, "/v1/wallet/top-ups")
        process.banner = "".join(banner)  # type: ignore[attr-defined]
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert "all services stopped" in rest


def demo_points(env: dict[str, str]) -> int:
    with grpc.insecure_channel(env["POINTS_TARGET"]) as channel:
        balance = points_pb2_grpc.PointsServiceStub(channel).GetBalance(
            points_pb2.GetBalanceRequest(customer_id="demo-customer"), timeout=5
        )
    return balance.available


def tokens(process: subprocess.Popen[str]) -> dict[str, str]:
    banner: str = process.banner  # type: ignore[attr-defined]
    found = {}
    for line in banner.splitlines():
        name, _, value = line.strip().partition("=")
        if name in ("CUSTOMER_TOKEN", "OPERATOR_TOKEN"):
            found[name] = value
    return found


def http_get(url: str, token: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_launcher_starts_everything_seeds_demo_data_and_stops_cleanly(databases: Databases) -> None:
    env = launcher_env(databases)
    with launched(env) as process:
        gateway = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
        assert 'curl -s -H "Authorization: Bearer ' in process.banner  # type: ignore[attr-defined]
        printed = tokens(process)
        assert http_get(f"{gateway}/v1/points", printed["CUSTOMER_TOKEN"]) == (
            200,
            {"available": 500, "pending": 0, "held": 0, "expiring": []},
        )
        assert http_get(f"{gateway}/v1/admin/earning-rules", printed["OPERATOR_TOKEN"])[0] == 200
        code, body = http_get(f"{gateway}/v1/admin/earning-rules", printed["CUSTOMER_TOKEN"])
        assert (code, body["reason"]) == (403, "OPERATOR_ROLE_REQUIRED")
        quote = urllib.request.Request(
            f"{gateway}/v1/checkout/quote",
            data=json.dumps({"lines": [{"sku": "el-cable", "quantity": 2}], "points_to_use": 100}).encode(),
            headers={"Authorization": f"Bearer {printed['CUSTOMER_TOKEN']}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(quote, timeout=10) as answer:
            priced = json.loads(answer.read())
        assert (priced["total_minor"], priced["points_applied"], priced["money_due_minor"]) == (99_800, 100, 89_800)
        assert f"{gateway}/#token={printed['CUSTOMER_TOKEN']}" in process.banner  # type: ignore[attr-defined]
        with urllib.request.urlopen(f"{gateway}/", timeout=10) as page:  # the customer cabinet
            assert b'id="token-form"' in page.read()
            assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        with urllib.request.urlopen(f"{gateway}/readyz", timeout=10) as ready:
            assert json.loads(ready.read())["status"] == "ready"
        for name in SERVICES:
            assert health(env[f"{name.upper()}_TARGET"]) == "SERVING", name
        assert demo_points(env) == 500
        status = subprocess.run(
            [sys.executable, "-m", "shared.launcher", "status"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("SERVING") == 5  # four services and the gateway
    for name in SERVICES:
        assert health(env[f"{name.upper()}_TARGET"], timeout_ms=500) == "UNAVAILABLE", name
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{env['GATEWAY_PORT']}/healthz", timeout=2)


def demo_catalogue(env: dict[str, str]) -> dict[str, set[str]]:
    from loyalty.checkout.v1 import checkout_pb2, checkout_pb2_grpc

    with grpc.insecure_channel(env["CHECKOUT_TARGET"]) as channel:
        products = (
            checkout_pb2_grpc.CheckoutServiceStub(channel)
            .ListProducts(checkout_pb2.ListProductsRequest(page_size=1000), timeout=5)
            .products
        )
    categories: dict[str, set[str]] = {}
    for product in products:
        categories.setdefault(product.category, set()).add(product.sku)
        if product.price.amount_minor == 100:
            categories.setdefault("1 RUB", set()).add(product.sku)
        if product.points_excluded:
            categories.setdefault("no points", set()).add(product.sku)
    return categories


def test_a_second_run_on_the_same_databases_does_not_seed_twice(databases: Databases) -> None:
    env = launcher_env(databases)
    for _ in range(2):
        with launched(env):
            assert demo_points(env) == 500
            catalogue = demo_catalogue(env)
            assert sum(len(skus) for name, skus in catalogue.items() if name not in ("1 RUB", "no points")) >= 50
            assert len(catalogue) - 2 >= 8 and catalogue["1 RUB"] and catalogue["no points"] == catalogue["gift-cards"]


@contextmanager
def serving_points(databases: Databases) -> Iterator[subprocess.Popen[str]]:
    """A Points process (`python -m services.points`) once it reports SERVING; killed on the way
    out if the test left it running, so that no process outlives its test."""
    port = free_port()
    env = dict(os.environ, POINTS_PORT=str(port), POINTS_DATABASE_URL=databases.new("points"))
    process = subprocess.Popen(
        [sys.executable, "-m", "services.points"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        end = time.monotonic() + 60
        while health(f"127.0.0.1:{port}") != "SERVING":
            assert time.monotonic() < end and process.poll() is None, "points never became SERVING"
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.machine() != "x86_64",
    reason="signals a chosen thread with Linux's tgkill (its x86-64 number)",
)
def test_a_sigterm_taken_by_another_thread_than_the_main_one_still_stops_the_process(databases: Databases) -> None:
    """The kernel gives a process's signal to any of its threads. Python runs the handler in the
    main thread when that thread next runs its code, which a wait without a timeout never did:
    a Points process in CI ignored SIGTERM for ten minutes. Here the signal goes to a gRPC or
    worker thread on purpose (`tgkill`), and the process must still stop, gracefully."""
    import ctypes

    with serving_points(databases) as process:
        others = [int(task) for task in os.listdir(f"/proc/{process.pid}/task") if int(task) != process.pid]
        assert others, "a serving process has threads besides the main one"
        libc = ctypes.CDLL(None, use_errno=True)
        tgkill = 234  # the syscall's number on x86-64
        assert libc.syscall(tgkill, process.pid, others[0], signal.SIGTERM) == 0, ctypes.get_errno()
        _, log = process.communicate(timeout=30)
    assert process.returncode == 0, log
    assert '"message": "stopped"' in log


def test_a_service_process_stops_gracefully_on_sigterm(databases: Databases) -> None:
    with serving_points(databases) as process:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=30)
    assert process.returncode == 0, log
    assert '"message": "stopped"' in log  # JSON logs by default
