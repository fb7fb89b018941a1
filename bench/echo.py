"""The transport limit: one unary gRPC hop to an echo service, server and client in separate
processes on the same machine. Run by `bench.path`, or by hand:

    .venv/bin/python -m bench.echo serve --mode project --port 50099
    .venv/bin/python -m bench.echo load --mode project --target 127.0.0.1:50099 --concurrency 16 --seconds 5

The message is a `google.protobuf.StringValue` of 64 characters (real protobuf parsing both ways).

- `bare`: `grpc.server` on a 16-thread pool (GRPC_MAX_WORKERS' default) with no interceptors; the
  client a plain `grpc.insecure_channel`.
- `project`: the services' own machinery: `shared.server.GrpcServer` (the OpenTelemetry server
  interceptor, the domain-error mapping and NUL screening, the RPC metrics interceptor, health and
  reflection) with a `shared.telemetry.Telemetry` configured as the bench configures the services
  (spans sampled and recorded, exported nowhere); the client goes through `shared.peers.Peers`
  (deadline, retry policy, the OpenTelemetry client interceptor), as a service calls its peers.

The load: `concurrency` threads each calling in a loop over one shared channel (as a service's
worker threads share their peer channel), for `seconds`; the answer is the rate and the latency
percentiles, as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.wrappers_pb2 import StringValue

from shared.peers import Peers
from shared.server import GrpcServer
from shared.telemetry import Telemetry

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"
PAYLOAD = StringValue(value="x" * 64)
TELEMETRY_ENV = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}


def _echo(request: StringValue, _context: grpc.ServicerContext) -> StringValue:
    return request


def handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                _echo, request_deserializer=StringValue.FromString, response_serializer=StringValue.SerializeToString
            )
        },
    )


def serve(mode: str, port: int) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if mode == "bare":
        server = grpc.server(ThreadPoolExecutor(max_workers=16))
        server.add_generic_rpc_handlers((handler(),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        print("ready", flush=True)
        stop.wait()
        server.stop(1).wait()
        return 0
    telemetry = Telemetry("echo", environ=TELEMETRY_ENV)
    project = GrpcServer(
        name="echo",
        bind_host="127.0.0.1",
        port=port,
        max_workers=16,
        max_concurrent_rpcs=64,
        service_names=[SERVICE],
        readiness_probe=lambda: True,
        interceptors=[telemetry.server_interceptor()],
        inner_interceptors=[telemetry.rpc_interceptor()],
    )
    project.server.add_generic_rpc_handlers((handler(),))
    project.start()
    print("ready", flush=True)
    stop.wait()
    project.stop(1000)
    telemetry.shutdown()
    return 0


def caller(mode: str, target: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    """A function making one echo call, and one closing the channel."""
    if mode == "bare":
        channel = grpc.insecure_channel(target)
        method = channel.unary_unary(
            METHOD, request_serializer=StringValue.SerializeToString, response_deserializer=StringValue.FromString
        )
        return (lambda: method(PAYLOAD, timeout=3)), channel.close
    telemetry = Telemetry("echo-client", environ=TELEMETRY_ENV)
    peers = Peers({"echo": target}, wrap_channel=telemetry.intercept_channel)
    traced = peers.channel("echo").unary_unary(
        METHOD, request_serializer=StringValue.SerializeToString, response_deserializer=StringValue.FromString
    )

    def close() -> None:
        peers.close()
        telemetry.shutdown()

    return (lambda: peers.call(traced, PAYLOAD, idempotent=True)), close


def load(mode: str, target: str, concurrency: int, seconds: float, warmup: float) -> dict[str, Any]:
    call, close = caller(mode, target)
    for _ in range(50):
        call()
    start = time.perf_counter()
    counting_from, end = start + warmup, start + warmup + seconds
    per_thread: list[list[float]] = [[] for _ in range(concurrency)]

    def worker(latencies: list[float]) -> None:
        while (now := time.perf_counter()) < end:
            call()
            done = time.perf_counter()
            if now >= counting_from and done <= end:
                latencies.append(done - now)

    threads = [threading.Thread(target=worker, args=(latencies,)) for latencies in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    close()
    latencies = sorted(value for values in per_thread for value in values)

    def pct(fraction: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1000, 3)

    return {
        "mode": mode,
        "concurrency": concurrency,
        "calls": len(latencies),
        "rate": round(len(latencies) / seconds, 1),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve")
    serve_parser.add_argument("--mode", choices=["bare", "project"], required=True)
    serve_parser.add_argument("--port", type=int, required=True)
    load_parser = sub.add_parser("load")
    load_parser.add_argument("--mode", choices=["bare", "project"], required=True)
    load_parser.add_argument("--target", required=True)
    load_parser.add_argument("--concurrency", type=int, default=1)
    load_parser.add_argument("--seconds", type=float, default=5.0)
    load_parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.mode, args.port)
    print(json.dumps(load(args.mode, args.target, args.concurrency, args.seconds, args.warmup)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
