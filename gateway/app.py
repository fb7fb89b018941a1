"""The gateway application: FastAPI with the routes, problem responses, bearer authentication,
and a middleware that gives every request an id, a server span and a log line."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from opentelemetry import trace
from opentelemetry.propagate import extract
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import cabinet
from gateway.auth import TokenVerifier
from gateway.backends import Backends, current_request_id
from gateway.deps import storable_parameters
from gateway.limits import BodyLimit, RateLimiter
from gateway.problems import PROBLEM_MEDIA_TYPE, PROBLEM_RESPONSES, install
from gateway.routes import ROUTERS
from gateway.routes.admin_experiments import IMPORT_PATH
from gateway.settings import GatewaySettings
from shared.metrics import HttpMetricsMiddleware
from shared.telemetry import VERSION, Telemetry

log = logging.getLogger("gateway.access")

PROBES = frozenset({"/healthz", "/readyz"})
_CLIENT_REQUEST_ID = re.compile(r"^[!-~]{1,128}$")

DESCRIPTION = """HTTP/JSON API of the loyalty platform for the checkout frontend and operators.

Authenticate with `Authorization: Bearer <JWT>` (HS256, or RS256 from the configured JWKS; claims
`sub`, `roles`, `exp`): role `customer` for `/v1/...` (the customer is `sub`), role `operator` for
`/v1/admin/...`. Money is integer kopecks in `*_minor` fields; points are integers. POSTs that move
money or points need an `Idempotency-Key`. Errors are `application/problem+json` with a
machine-readable `reason`.
"""


class RequestContext:
    """Request id (the client's `X-Request-Id` or a new one), echoed back and sent to every
    backend; one server span per request, continuing the caller's `traceparent` when it sent one
    (the gRPC client spans are its children); one access log line per request."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.tracer = telemetry.tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers") or []}
        sent = headers.get("x-request-id", "")
        request_id = sent if _CLIENT_REQUEST_ID.match(sent) else uuid.uuid4().hex
        token = current_request_id.set(request_id)
        status = {"code": 500}
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        method = scope["method"]
        # A caller's W3C `traceparent` makes this request part of the caller's trace. Probes are
        # not traced (a kubelet polling them would fill the trace store); INVALID_SPAN records nothing.
        with (
            self.tracer.start_as_current_span(
                f"{method} {scope['path']}", kind=trace.SpanKind.SERVER, context=extract(headers)
            )
            if scope["path"] not in PROBES
            else trace.use_span(trace.INVALID_SPAN)
        ) as span:
            span.set_attribute("http.request.method", method)
            span.set_attribute("url.path", scope["path"])
            span.set_attribute("loyalty.request_id", request_id)
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route = scope.get("route")
                template = getattr(route, "path", None)
                if template:
                    span.update_name(f"{method} {template}")
                    span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status["code"])
                current_request_id.reset(token)
                log.info(
                    "request",
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "status": status["code"],
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                        "request_id": request_id,
                    },
                )


def create_app(
    settings: GatewaySettings,
    *,
    backends: Backends | None = None,
    telemetry: Telemetry | None = None,
    rate_clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    telemetry = telemetry or Telemetry("gateway")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The Prometheus endpoint (`/metrics` on METRICS_PORT, when set), stopped by `close`.
        telemetry.serve_metrics(settings.host)
        yield

    app = FastAPI(
        title="Loyalty platform gateway",
        version=VERSION,
        description=DESCRIPTION,
        responses=PROBLEM_RESPONSES,
        dependencies=[Depends(storable_parameters)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.verifier = TokenVerifier(settings.jwt_secret, jwks_url=settings.jwks_url, audience=settings.jwt_audience)
    app.state.backends = backends or Backends(
        settings.targets,
        deadline_ms=settings.deadline_ms,
        job_deadline_ms=settings.job_deadline_ms,
        retry_attempts=settings.retry_attempts,
        telemetry=telemetry,
    )
    app.state.telemetry = telemetry
    app.state.limiter = RateLimiter(rate_clock)
    for router in ROUTERS:
        app.include_router(router)
    cabinet.install(app)
    install(app)
    _problems_as_problem_json(app)
    # Per-route request count and duration, labelled by the route template; probes not measured.
    app.add_middleware(HttpMetricsMiddleware, metrics=telemetry.metrics, exclude_paths=PROBES)
    # Bodies over the limit are refused before (or while) they are read; the CSV import streams.
    app.add_middleware(
        BodyLimit, limit=settings.max_body_bytes, limits_by_path={IMPORT_PATH: settings.max_import_body_bytes}
    )
    app.add_middleware(RequestContext, telemetry=telemetry)  # outermost: the span covers the rest
    return app


def _problems_as_problem_json(app: FastAPI) -> None:
    """Document error bodies as `application/problem+json` only (FastAPI also lists the model
    under `application/json`, which the gateway never sends for an error)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    for response in operation.get("responses", {}).values():
                        content = response.get("content", {})
                        if PROBLEM_MEDIA_TYPE in content:
                            content.pop("application/json", None)
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


def close(app: FastAPI) -> None:
    backends: Backends = app.state.backends
    backends.close()
    telemetry: Telemetry = app.state.telemetry
    telemetry.shutdown()
