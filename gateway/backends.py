"""The gateway's gRPC clients: one channel per service through `shared.peers`, a deadline on every
call, the request id on every call's metadata, client spans from `shared.telemetry`, and readiness
from each service's standard health check."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.checkout.v1 import checkout_pb2_grpc
from loyalty.points.v1 import points_pb2_grpc
from loyalty.promotions.v1 import experiments_pb2_grpc, promotions_pb2_grpc
from loyalty.wallet.v1 import wallet_pb2_grpc

from shared.peers import Peers
from shared.telemetry import Telemetry

Resp = TypeVar("Resp")

REQUEST_ID_HEADER = "x-request-id"
# The id of the HTTP request being served (set by the request middleware), sent to every backend.
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("current_request_id", default="")

BACKENDS = ("wallet", "points", "promotions", "checkout")


class Backends:
    def __init__(
        self,
        targets: Mapping[str, str],
        *,
        deadline_ms: int,
        job_deadline_ms: int,
        retry_attempts: int,
        telemetry: Telemetry,
    ) -> None:
        self.job_deadline_ms = job_deadline_ms
        self.peers = Peers(
            {name: targets[name] for name in BACKENDS},
            deadline_ms=deadline_ms,
            retry_attempts=retry_attempts,
            wrap_channel=telemetry.intercept_channel,
        )
        self.wallet = wallet_pb2_grpc.WalletServiceStub(self.peers.channel("wallet"))
        self.points = points_pb2_grpc.PointsServiceStub(self.peers.channel("points"))
        self.promotions = promotions_pb2_grpc.PromotionsServiceStub(self.peers.channel("promotions"))
        # ExperimentsService is served by the Promotions process.
        self.experiments = experiments_pb2_grpc.ExperimentsServiceStub(self.peers.channel("promotions"))
        self.checkout = checkout_pb2_grpc.CheckoutServiceStub(self.peers.channel("checkout"))

    def call(self, method: Callable[..., Resp], request: object, *, deadline_ms: int | None = None) -> Resp:
        """Call with the deadline and the request id; a refusal comes back as its `DomainError`.

        Every call the gateway makes is a read or a mutation carrying a request id, so a call that
        met UNAVAILABLE is safe to retry (`Peers` does, with backoff)."""
        metadata = ((REQUEST_ID_HEADER, current_request_id.get()),) if current_request_id.get() else ()
        return self.peers.call(
            functools.partial(method, metadata=metadata), request, idempotent=True, deadline_ms=deadline_ms
        )

    def job(self, method: Callable[..., Resp], request: object) -> Resp:
        """An operator job: the same as `call`, with the longer job deadline."""
        return self.call(method, request, deadline_ms=self.job_deadline_ms)

    def health(self, timeout_ms: int = 1000) -> dict[str, str]:
        """Each backend's serving status (`SERVING`, `NOT_SERVING`, or the gRPC code reaching it)."""

        def check(name: str) -> str:
            stub = health_pb2_grpc.HealthStub(self.peers.channel(name))
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout_ms / 1000)
            except grpc.RpcError as error:
                code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
                return str(code.name)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))

        with ThreadPoolExecutor(max_workers=len(BACKENDS), thread_name_prefix="readyz") as pool:
            return dict(zip(BACKENDS, pool.map(check, BACKENDS), strict=True))

    def close(self) -> None:
        self.peers.close()
