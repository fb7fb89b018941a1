"""Metrics through OpenTelemetry: per-RPC rate, errors and duration; per-route HTTP metrics for the
gateway; the business counters; the outbox backlog and age.

`Telemetry` (shared/telemetry.py) gives each service its own `MeterProvider` and one `Metrics`
built on it. The instruments are exported by a Prometheus scrape endpoint (`METRICS_PORT`) and/or
OTLP (`OTEL_METRICS_EXPORTER=otlp`). Names follow OpenTelemetry style; Prometheus sees dots as
underscores, counters with `_total` and the duration histograms with `_seconds` (docs/observability.md).

Labels stay low-cardinality: RPC service, method, status code and error reason, HTTP route
template, points source, saga step. Never a customer, order or card.

Business counters are recorded once per effect, after its transaction commits
(`UnitOfWork.on_commit`), so an idempotent replay or a rolled-back attempt counts nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeterProvider, Observation
from sqlalchemy import Engine, event

from shared.errors import DomainError, status_code_of

log = logging.getLogger(__name__)

NOT_MEASURED_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})

# Histogram buckets in seconds: from a cached read to a slow saga step.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

SAGA_STEPS = (
    "evaluate",
    "reserve_promo_code",
    "hold_points",
    "hold_money",
    "capture_points",
    "capture_money",
    "confirm_promo_code",
    "accrue_points",
    "compensate",
)


class Metrics:
    """The instruments of one process. Every method is cheap and never raises into the caller."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.rpc_requests = meter.create_counter(
            "loyalty.rpc.server.requests", unit="{request}", description="RPCs answered, by method and status code."
        )
        self.rpc_errors = meter.create_counter(
            "loyalty.rpc.server.errors",
            unit="{request}",
            description="RPCs answered with a status other than OK, by method, code and reason.",
        )
        self.rpc_duration = meter.create_histogram(
            "loyalty.rpc.server.duration",
            unit="s",
            description="Time to answer an RPC, by method and status code.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.http_requests = meter.create_counter(
            "loyalty.http.server.requests", unit="{request}", description="HTTP requests, by route and status."
        )
        self.http_duration = meter.create_histogram(
            "loyalty.http.server.duration",
            unit="s",
            description="Time to answer an HTTP request, by route and status.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._points_credited = meter.create_counter(
            "loyalty.points.credited", unit="{point}", description="Points credited, by source and pending or not."
        )
        self._points_spent = meter.create_counter(
            "loyalty.points.spent", unit="{point}", description="Points spent (captured holds)."
        )
        self._points_expired = meter.create_counter(
            "loyalty.points.expired", unit="{point}", description="Points written off because their lot expired."
        )
        self._money_topped_up = meter.create_counter(
            "loyalty.wallet.topped_up",
            unit="{minor_unit}",
            description="Money topped up into wallets, in minor units (kopecks), by currency.",
        )
        self._outbox_deliveries = meter.create_counter(
            "loyalty.outbox.deliveries", unit="{attempt}", description="Outbox delivery attempts, by outcome."
        )
        self._saga_failures = meter.create_counter(
            "loyalty.checkout.saga.failures", unit="{order}", description="Checkout sagas that failed, by step."
        )

    @classmethod
    def noop(cls) -> Metrics:
        """Instruments that record nothing (servicers built outside a service, in unit tests)."""
        return cls(NoOpMeterProvider().get_meter("loyalty.noop"))

    # --- business counters --------------------------------------------------------------------

    def points_credited(self, points: int, *, source: str, pending: bool) -> None:
        if points > 0:
            self._points_credited.add(points, {"source": source, "pending": pending})

    def points_spent(self, points: int) -> None:
        if points > 0:
            self._points_spent.add(points)

    def points_expired(self, points: int) -> None:
        if points > 0:
            self._points_expired.add(points)

    def money_topped_up(self, amount_minor: int, currency: str) -> None:
        if amount_minor > 0:
            self._money_topped_up.add(amount_minor, {"currency": currency})

    def saga_failed(self, step: str) -> None:
        """A checkout saga failed at `step` (one of SAGA_STEPS; anything else is counted as `other`)."""
        self._saga_failures.add(1, {"step": step if step in SAGA_STEPS else "other"})

    # --- outbox ---------------------------------------------------------------------------------

    def outbox_delivery(self, method: str, outcome: str) -> None:
        """One delivery attempt of the outbox relay: `delivered`, `retry` or `dead`; `refused` when
        a delivered batch had items refused (they became a dead message)."""
        self._outbox_deliveries.add(1, {"method": method, "outcome": outcome})

    def watch_database(self, engine: Engine) -> None:
        """Count the SQL statements sent to the service's database and the transactions ended,
        by outcome: on PostgreSQL a transaction costs two round trips beside its statements
        (psycopg's BEGIN and the COMMIT or ROLLBACK); a statement run in autocommit
        (`Database.read`, `Database.execute_alone`) costs none. What an RPC costs in round trips
        is thus visible in production, and `bench.path` reports it per order."""
        statements = self.meter.create_counter(
            "loyalty.db.statements", unit="{statement}", description="SQL statements sent to the database."
        )
        transactions = self.meter.create_counter(
            "loyalty.db.transactions",
            unit="{transaction}",
            description="Database transactions ended, by outcome (commit, rollback); autocommit not counted.",
        )
        committed, rolled_back = {"outcome": "commit"}, {"outcome": "rollback"}

        def in_transaction(connection: Any) -> bool:
            return bool(connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT")

        @event.listens_for(engine, "before_cursor_execute")
        def _statement(*_args: Any) -> None:
            statements.add(1)

        @event.listens_for(engine, "commit")
        def _commit(connection: Any) -> None:
            if in_transaction(connection):
                transactions.add(1, committed)

        @event.listens_for(engine, "rollback")
        def _rollback(connection: Any) -> None:
            if in_transaction(connection):
                transactions.add(1, rolled_back)

    def observe_outbox(self, read: Callable[[], tuple[int, int, timedelta | None]]) -> None:
        """Report the outbox backlog, its dead messages and the age of the oldest pending one as
        gauges. `read` answers (pending, dead, age of the oldest pending or None); it runs at each
        collection (a scrape), never on a request path."""

        def observe(pick: Callable[[tuple[int, int, timedelta | None]], int | float]) -> Any:
            def callback(_options: CallbackOptions) -> Iterable[Observation]:
                try:
                    return [Observation(pick(read()))]
                except Exception:
                    log.warning("outbox backlog could not be read", exc_info=True)
                    return []

            return callback

        self.meter.create_observable_gauge(
            "loyalty.outbox.pending",
            callbacks=[observe(lambda b: b[0])],
            unit="{message}",
            description="Messages waiting for delivery.",
        )
        self.meter.create_observable_gauge(
            "loyalty.outbox.dead",
            callbacks=[observe(lambda b: b[1])],
            unit="{message}",
            description="Messages a peer refused for good (DEAD): each needs an operator.",
        )
        self.meter.create_observable_gauge(
            "loyalty.outbox.oldest_age",
            callbacks=[observe(lambda b: b[2].total_seconds() if b[2] is not None else 0)],
            unit="s",
            description="Age of the oldest message waiting for delivery (0 when none waits).",
        )

    # --- HTTP (the gateway) ---------------------------------------------------------------------

    @contextmanager
    def http_request(self, method: str, route: str) -> Iterator[Callable[[int], None]]:
        """Measure one HTTP request; `route` is the route template (`/v1/orders/{order_id}`), never
        the raw path. Call the yielded function with the response status code:

            with metrics.http_request("POST", "/v1/checkout") as done:
                response = await call_next(request)
                done(response.status_code)

        A request that raises without a status is counted as 500.
        """
        started = time.perf_counter()
        status = [500]

        def done(code: int) -> None:
            status[0] = code

        try:
            yield done
        finally:
            self.record_http(method, route, status[0], time.perf_counter() - started)

    def record_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request answered: `route` is the route template, never the raw path."""
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "http.route": route,
            "http.response.status_code": status,
        }
        self.http_requests.add(1, attributes)
        self.http_duration.record(seconds, attributes)


UNMATCHED_ROUTE = "unmatched"


class HttpMetricsMiddleware:
    """ASGI middleware for the gateway: per-route request count and duration.

        app.add_middleware(HttpMetricsMiddleware, metrics=telemetry.metrics)

    Starlette (and so FastAPI) puts the matched route in `scope["route"]`; its template
    (`/v1/orders/{order_id}`) is the label, and a request no route matched is `unmatched`, so raw
    paths never become label values. Health endpoints are not measured. A request whose handler
    raises before answering counts as 500.
    """

    def __init__(self, app: Any, metrics: Metrics, *, exclude_paths: Iterable[str] = ("/healthz", "/readyz")) -> None:
        self.app = app
        self._metrics = metrics
        self._exclude = frozenset(exclude_paths)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("path") in self._exclude:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            self._metrics.record_http(str(scope.get("method", "")), route, status, time.perf_counter() - started)


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


class RpcMetricsInterceptor(grpc.ServerInterceptor):
    """Counts, times and classifies every RPC but health checks and reflection.

    It sits inside the domain-error interceptor, so it sees the `DomainError` itself: the status
    code and the UPPER_SNAKE reason go on the metrics and, as `loyalty.rpc.reason`, on the
    server span of the call. `annotate` puts request attributes on that span."""

    def __init__(self, metrics: Metrics, *, annotate: Callable[[Any], None] | None = None) -> None:
        self._metrics = metrics
        self._annotate = annotate

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, name = _split(handler_call_details.method)
        if service in NOT_MEASURED_SERVICES:
            return handler
        return handler._replace(unary_unary=self._wrap(handler.unary_unary, service, name))

    def _wrap(self, behaviour: Callable[[Any, grpc.ServicerContext], Any], service: str, name: str) -> Any:
        metrics, annotate = self._metrics, self._annotate

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code, reason = grpc.StatusCode.OK, ""
            try:
                if annotate is not None:
                    annotate(request)
                return behaviour(request, context)
            except DomainError as error:
                code, reason = error.code, error.reason
                span = trace.get_current_span()
                span.set_attribute("loyalty.rpc.reason", reason)
                raise
            except NotImplementedError:
                code = status_code_of(context) or grpc.StatusCode.UNIMPLEMENTED
                raise
            except Exception:
                code = status_code_of(context) or grpc.StatusCode.UNKNOWN
                raise
            finally:
                attributes = {"rpc.service": service, "rpc.method": name, "rpc.grpc.status_code": code.name}
                metrics.rpc_requests.add(1, attributes)
                metrics.rpc_duration.record(time.perf_counter() - started, attributes)
                if code is not grpc.StatusCode.OK:
                    metrics.rpc_errors.add(1, {**attributes, "loyalty.rpc.reason": reason or code.name})

        return handle
