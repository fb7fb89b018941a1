"""Health follows the database; overload is refused, not queued; reflection lists the services."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy.engine import make_url

from shared.server import LIVENESS, GrpcServer
from tests.clients import eventually
from tests.harness import Databases, Harness, RunningService

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_of(service: RunningService, name: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(service.channel())
    status: int = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
    return status


def test_every_service_reports_serving(platform: dict[str, RunningService]) -> None:
    for service in platform.values():
        full_name = service.app.server._service_names[0]
        assert health_of(service) == SERVING
        assert health_of(service, full_name) == SERVING


def test_losing_the_database_turns_health_to_not_serving_and_back(harness: Harness, databases: Databases) -> None:
    points = harness.start("points")
    assert health_of(points) == SERVING
    if databases.backend == "postgresql":
        databases.set_accepting(points.database_url, False)
        assert eventually(lambda: health_of(points) == NOT_SERVING, 10)
        assert health_of(points, LIVENESS) == SERVING  # the liveness probe does not restart it
        databases.set_accepting(points.database_url, True)
    else:
        path = Path(make_url(points.database_url).database or "")
        moved = path.with_suffix(".away")
        os.rename(path, moved)
        assert eventually(lambda: health_of(points) == NOT_SERVING, 10)
        assert health_of(points, LIVENESS) == SERVING  # the liveness probe does not restart it
        os.rename(moved, path)
    assert eventually(lambda: health_of(points) == SERVING, 10)


def test_health_is_not_serving_from_the_moment_a_stop_begins(harness: Harness) -> None:
    points = harness.start("points")
    server = points.app.server
    server.health.enter_graceful_shutdown()
    assert health_of(points) == NOT_SERVING
    points.app.server.check_readiness()  # a probe after the stop began must not flip it back
    assert health_of(points) == NOT_SERVING


def test_reflection_lists_the_service_and_health(points: RunningService) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(points.channel())
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in next(iter(responses)).list_services_response.service}
    assert {"loyalty.points.v1.PointsService", "grpc.health.v1.Health"} <= names


def test_rpcs_beyond_the_concurrency_limit_get_resource_exhausted() -> None:
    release = threading.Event()

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        release.wait(10)
        return request

    server = GrpcServer(
        name="limit",
        bind_host="127.0.0.1",
        port=0,
        max_workers=4,
        max_concurrent_rpcs=2,
        service_names=["test.Slow"],
        readiness_probe=lambda: True,
    )
    server.server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Slow", {"Call": grpc.unary_unary_rpc_method_handler(slow)})]
    )
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/test.Slow/Call")
    try:
        in_flight = [call.future(b"x", timeout=10) for _ in range(2)]
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as raised:
            call(b"y", timeout=5)
        assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        assert [f.result() for f in in_flight] == [b"x", b"x"]
    finally:
        release.set()
        channel.close()
        server.stop(0)
