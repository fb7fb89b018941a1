"""`make run`: every service as its own process on the embedded default (SQLite under var/),
then the HTTP gateway in dev mode, with ready-made bearer tokens printed.

python -m shared.launcher          start everything, seed demo data, wait for Ctrl-C
python -m shared.launcher status   health of each service and the gateway's readiness
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from types import FrameType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from gateway.auth import CUSTOMER, OPERATOR, mint_token
from gateway.settings import GatewaySettings
from services.checkout.demo_catalogue import DEMO_CATALOGUE
from shared.errors import DomainError, from_rpc_error
from shared.protoconv import money
from shared.settings import Env, SettingsError

START_ORDER = ("points", "promotions", "wallet", "checkout")
DEMO_CUSTOMER = "demo-customer"
DEMO_OPERATOR = "demo-operator"


def targets(env: Env) -> dict[str, str]:
    return {name: env.text(f"{name.upper()}_TARGET") for name in START_ORDER}


def health(target: str, timeout_ms: int = 1000) -> str:
    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_ms / 1000
            )
        except grpc.RpcError as error:
            return error.code().name
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def gateway_url(env: Env) -> str:
    host = env.text("GATEWAY_HOST")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{env.text('GATEWAY_PORT')}"


def gateway_ready(url: str, timeout_ms: int = 2000) -> str:
    """`SERVING` when the gateway's /readyz answers 200, else what went wrong."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=timeout_ms / 1000) as response:
            return "SERVING" if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}"
    except OSError:
        return "UNAVAILABLE"


def wait_gateway(url: str, process: subprocess.Popen[bytes], seconds: int = 60) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if process.poll() is not None:
            raise SystemExit(f"gateway exited with code {process.returncode} during start-up; see its log above")
        if gateway_ready(url) == "SERVING":
            return
        time.sleep(0.2)
    raise SystemExit(f"the gateway was not ready on {url} within {seconds} s")


def wait_serving(name: str, target: str, process: subprocess.Popen[bytes], seconds: int = 60) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with code {process.returncode} during start-up; see its log above")
        if health(target) == "SERVING":
            return
        time.sleep(0.2)
    raise SystemExit(f"{name} did not report SERVING on {target} within {seconds} s")


def seed_demo_data(addresses: Mapping[str, str]) -> None:
    """Idempotent: fixed request ids, so a second `make run` replays instead of adding again."""
    with grpc.insecure_channel(addresses["wallet"]) as wallet_channel:
        try:
            wallet_pb2_grpc.WalletServiceStub(wallet_channel).OpenWallet(
                wallet_pb2.OpenWalletRequest(request_id="demo-open-wallet", customer_id=DEMO_CUSTOMER), timeout=5
            )
        except grpc.RpcError as error:
            if from_rpc_error(error).reason != "WALLET_ALREADY_EXISTS":
                raise
    with grpc.insecure_channel(addresses["checkout"]) as checkout_channel:
        catalogue = checkout_pb2_grpc.CheckoutServiceStub(checkout_channel)
        for category, products in DEMO_CATALOGUE.items():
            for sku, title, price_minor in products:
                product = checkout_pb2.Product(sku=sku, title=title, category=category, price=money(price_minor))
                catalogue.UpsertProduct(
                    checkout_pb2.UpsertProductRequest(request_id=f"demo-product-{sku}", product=product), timeout=5
                )
    with grpc.insecure_channel(addresses["points"]) as points_channel:
        points_pb2_grpc.PointsServiceStub(points_channel).CreditPoints(
            points_pb2.CreditPointsRequest(
                request_id="demo-welcome-points",
                customer_id=DEMO_CUSTOMER,
                points=500,
                source=points_pb2.POINTS_SOURCE_CAMPAIGN,
                reference="campaign:welcome",
            ),
            timeout=5,
        )


USAGE = """
Loyalty platform is running (SQLite files under var/). Ctrl-C stops everything.

  wallet      {wallet}
  points      {points}
  promotions  {promotions}
  checkout    {checkout}
  gateway     {gateway}   (OpenAPI: {gateway}/docs)

Customer cabinet (signed in as {customer}):
  {gateway}/#token={customer_token}

Health of every service:   .venv/bin/python -m shared.launcher status
Demo customer:             {customer} (a wallet, 500 welcome points)
Demo catalogue:            56 products in 10 categories (CheckoutService/ListProducts)

Bearer tokens (LOYALTY_ENV=dev, signed with the documented dev secret, valid 12 hours):
  CUSTOMER_TOKEN={customer_token}
  OPERATOR_TOKEN={operator_token}
Try the HTTP API:
  curl -s -H "Authorization: Bearer {customer_token}" {gateway}/v1/points
  curl -s -X POST -H "Authorization: Bearer {customer_token}" -H "Idempotency-Key: demo-top-up-1" \\
    -H "Content-Type: application/json" -d '{{"amount_minor": 500000, "card_token": "tok_ok"}}' \\
    {gateway}/v1/wallet/top-ups
Try it from Python:
  .venv/bin/python -c "import grpc; from loyalty.points.v1 import points_pb2 as p, points_pb2_grpc as g; \\
print(g.PointsServiceStub(grpc.insecure_channel('{points}')).GetBalance(p.GetBalanceRequest(customer_id='{customer}')))"
Any gRPC client works too: every service has server reflection (e.g. grpcurl -plaintext {points} list).
Operator command line: .venv/bin/loyalty --help   (e.g. .venv/bin/loyalty experiments list)
"""


def run(env: Env) -> int:
    addresses = targets(env)
    child_env = dict(os.environ)
    child_env.setdefault("LOG_FORMAT", "text")
    child_env.setdefault("LOYALTY_ENV", "dev")
    try:
        gateway_settings = GatewaySettings.from_env(child_env)
    except SettingsError as error:
        print(f"make run failed: gateway configuration: {error}", file=sys.stderr)
        return 2
    url = gateway_url(env)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop_all(signum: int = signal.SIGTERM, _frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    code = 0
    try:
        for name in START_ORDER:
            processes[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=child_env)
            wait_serving(name, addresses[name], processes[name])
        seed_demo_data(addresses)
        processes["gateway"] = subprocess.Popen([sys.executable, "-m", "gateway"], env=child_env)
        wait_gateway(url, processes["gateway"])
        secret = gateway_settings.jwt_secret
        print(
            USAGE.format(
                customer=DEMO_CUSTOMER,
                gateway=url,
                customer_token=mint_token(secret, DEMO_CUSTOMER, [CUSTOMER]),
                operator_token=mint_token(secret, DEMO_OPERATOR, [OPERATOR]),
                **addresses,
            ),
            flush=True,
        )
        while not stopping:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with code {process.returncode}; stopping the rest", file=sys.stderr)
                    stopping, code = True, 1
            time.sleep(0.2)
    except (SystemExit, DomainError, grpc.RpcError) as error:
        print(f"make run failed: {error}", file=sys.stderr)
        code = 1
    finally:
        for process in reversed(processes.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in processes.items():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in time; killing it", file=sys.stderr)
                process.kill()
        print("all services stopped", flush=True)
    return code


def status(env: Env) -> int:
    worst = 0
    for name, target in targets(env).items():
        state = health(target)
        print(f"{name:<11} {target:<18} {state}")
        worst = worst or int(state != "SERVING")
    url = gateway_url(env)
    state = gateway_ready(url)
    print(f"{'gateway':<11} {url:<18} {state}")
    return worst or int(state != "SERVING")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.launcher", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs="?", default="run", choices=["run", "status"])
    args = parser.parse_args(argv)
    env = Env()
    return run(env) if args.command == "run" else status(env)


if __name__ == "__main__":
    sys.exit(main())
