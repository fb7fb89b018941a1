"""Telemetry of one service: its tracer and meter providers, gRPC server and client
interceptors, database spans, and the Prometheus scrape endpoint.

Each service gets its own `TracerProvider` and `MeterProvider`, so several services in one
process (the test harness) still report under their own names. The exporters follow the standard
variables, read from the mapping given (the service's settings), not only from `os.environ`:
`OTEL_SERVICE_NAME`, `OTEL_TRACES_EXPORTER` (`otlp`, `console`, `none`),
`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER` (+ `OTEL_TRACES_SAMPLER_ARG`),
`OTEL_METRICS_EXPORTER` (`otlp`, `console`, `none`), and `METRICS_PORT` for a Prometheus
endpoint. Health checks are neither traced nor measured.

Server spans carry the ids and quantities an SRE searches by (`loyalty.customer_id`,
`loyalty.order_id`, `loyalty.points`, `loyalty.amount.amount_minor`, ...), taken from a fixed
list of request fields (`SPAN_FIELDS`), never from the rest: a card token, a promo code or any
free text never reaches a span.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, suppress_instrumentation
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import Engine, event

from shared.metrics import Metrics, RpcMetricsInterceptor
from shared.rpc_spans import ServerSpans, TracedChannel
from shared.settings import SettingsError

VERSION = "0.1.0"

log = logging.getLogger(__name__)

# Request fields copied onto the server span. Ids and quantities only: anything else (card
# tokens, promo codes, reasons, names) is left out by construction.
SPAN_FIELDS = frozenset(
    {
        "customer_id",
        "order_id",
        "hold_id",
        "wallet_id",
        "top_up_id",
        "campaign_id",
        "rule_id",
        "reservation_id",
        "experiment_id",
        "request_id",
        "reference",
        "month",
        "points",
        "points_to_use",
        "amount",
        "monthly_spend",
        "source",
        "payment_method",
        "action",
    }
)


def _exporter_from_env(environ: Mapping[str, str]) -> SpanExporter | None:
    name = environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if name in ("", "none"):
        return None
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None)
    raise SettingsError(f"OTEL_TRACES_EXPORTER must be otlp, console or none, got {name!r}")


def _metric_reader_from_env(environ: Mapping[str, str]) -> MetricReader | None:
    name = environ.get("OTEL_METRICS_EXPORTER", "none").strip().lower()
    if name in ("", "none", "prometheus"):  # prometheus: the scrape endpoint of METRICS_PORT
        return None
    if name == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter())
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None)
        )
    raise SettingsError(f"OTEL_METRICS_EXPORTER must be otlp, console, prometheus or none, got {name!r}")


def sampler_from_env(environ: Mapping[str, str]) -> sampling.Sampler:
    """The standard `OTEL_TRACES_SAMPLER` names; a bad name or ratio fails start-up."""
    name = environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower() or "parentbased_always_on"
    fixed: dict[str, sampling.Sampler] = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "parentbased_always_on": sampling.DEFAULT_ON,
        "parentbased_always_off": sampling.DEFAULT_OFF,
    }
    if name in fixed:
        return fixed[name]
    if name in ("traceidratio", "parentbased_traceidratio"):
        raw = environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0").strip() or "1.0"
        try:
            ratio = float(raw)  # a sampling probability, not money
        except ValueError:
            raise SettingsError(f"OTEL_TRACES_SAMPLER_ARG must be a number in [0, 1], got {raw!r}") from None
        if not 0 <= ratio <= 1:
            raise SettingsError(f"OTEL_TRACES_SAMPLER_ARG must be a number in [0, 1], got {raw!r}")
        return sampling.TraceIdRatioBased(ratio) if name == "traceidratio" else sampling.ParentBasedTraceIdRatio(ratio)
    raise SettingsError(
        f"OTEL_TRACES_SAMPLER must be one of {', '.join(sorted(fixed))}, traceidratio or "
        f"parentbased_traceidratio, got {name!r}"
    )


def metrics_port_from_env(environ: Mapping[str, str]) -> int:
    raw = environ.get("METRICS_PORT", "").strip()
    if raw == "":
        return 0
    try:
        port = int(raw)
    except ValueError:
        raise SettingsError(f"METRICS_PORT must be an integer, got {raw!r}") from None
    if not 0 <= port <= 65535:
        raise SettingsError(f"METRICS_PORT must be between 0 and 65535, got {port}")
    return port


def request_attributes(request: Any) -> dict[str, str | int | bool]:
    """The `SPAN_FIELDS` a request sets, as span attributes."""
    attributes: dict[str, str | int | bool] = {}
    if not isinstance(request, Message):
        return attributes
    for field, value in request.ListFields():
        if field.name not in SPAN_FIELDS:
            continue
        key = f"loyalty.{field.name}"
        if field.message_type is not None:
            if field.message_type.full_name == "loyalty.common.v1.Money" and not _repeated(field):
                attributes[f"{key}.amount_minor"] = int(value.amount_minor)
                attributes[f"{key}.currency_code"] = str(value.currency_code or "RUB")
        elif _repeated(field):
            continue
        elif field.enum_type is not None:
            attributes[key] = (
                field.enum_type.values_by_number[value].name
                if value in field.enum_type.values_by_number
                else int(value)
            )
        elif isinstance(value, str | int | bool):
            attributes[key] = value
    return attributes


def _repeated(field: Any) -> bool:
    return bool(getattr(field, "is_repeated", False) or getattr(field, "label", 0) == 3)


def annotate_current_span(request: Any) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(request_attributes(request))


class Telemetry:
    """The tracing and metrics set-up of one service."""

    def __init__(
        self,
        service: str,
        *,
        environ: Mapping[str, str] | None = None,
        processors: tuple[SpanProcessor, ...] = (),
        metric_readers: tuple[MetricReader, ...] = (),
    ) -> None:
        environ = os.environ if environ is None else environ
        name = environ.get("OTEL_SERVICE_NAME") or service
        attributes: dict[str, str] = {SERVICE_NAME: name, SERVICE_VERSION: VERSION, "service.namespace": "loyalty"}
        # In a pod (downward API): which replica and namespace produced a span or a metric.
        for variable, key in (("POD_NAME", "k8s.pod.name"), ("POD_NAMESPACE", "k8s.namespace.name")):
            if environ.get(variable):
                attributes[key] = environ[variable]
        resource = Resource.create(attributes)  # plus OTEL_RESOURCE_ATTRIBUTES, the standard way
        self.service = service
        self.provider = TracerProvider(resource=resource, sampler=sampler_from_env(environ))
        exporter = _exporter_from_env(environ)
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        for processor in processors:
            self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer(f"loyalty.{service}", VERSION)

        self.metrics_port = metrics_port_from_env(environ)
        readers = list(metric_readers)
        self._registry: Any = None
        if self.metrics_port:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry()  # one per service: several may share a process
            readers.append(PrometheusMetricReader(registry=self._registry))
        otlp_reader = _metric_reader_from_env(environ)
        if otlp_reader is not None:
            readers.append(otlp_reader)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        self.metrics = Metrics(self.meter_provider.get_meter(f"loyalty.{service}", VERSION))
        self._http_server: Any = None
        self._http_thread: threading.Thread | None = None
        self._pool_usage = PoolUsage(self.meter_provider.get_meter("opentelemetry.instrumentation.sqlalchemy"))

    def server_interceptor(self) -> grpc.ServerInterceptor:
        """The outermost interceptor: the server span, parented by the caller's trace context."""
        return ServerSpans(self.provider)

    def rpc_interceptor(self) -> grpc.ServerInterceptor:
        """The innermost interceptor: RPC metrics, the outcome reason and request ids on the span."""
        return RpcMetricsInterceptor(self.metrics, annotate=annotate_current_span)

    def intercept_channel(self, channel: grpc.Channel) -> grpc.Channel:
        """`channel` with a client span per call and the trace context in the metadata."""
        return TracedChannel(channel, self.provider)

    def instrument_engine(self, engine: Engine) -> None:
        tracer = self.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy", VERSION)
        StatementSpans(tracer, engine, self._pool_usage)

    def serve_metrics(self, host: str) -> int | None:
        """Start the Prometheus scrape endpoint (`/metrics`) when METRICS_PORT is set; its port."""
        if not self.metrics_port or self._http_server is not None:
            return None
        from prometheus_client import start_http_server

        self._http_server, self._http_thread = start_http_server(self.metrics_port, host, registry=self._registry)
        port: int = self._http_server.server_address[1]
        log.info("metrics served", extra={"address": f"{host}:{port}", "path": "/metrics"})
        return port

    def shutdown(self) -> None:
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            if self._http_thread is not None:
                self._http_thread.join(timeout=5)
            self._http_server = None
        self.provider.shutdown()
        self.meter_provider.shutdown()


class PoolUsage:
    """`db.client.connections.usage` (`state` idle or used, `pool.name`), as
    opentelemetry-instrumentation-sqlalchemy reports it, kept as plain counts and observed when
    the metrics are collected. The library's up-down counter took four metric updates per
    transaction (a check-out and a check-in), 2.3 million instructions per order
    (`bench.instructions`); a count under a lock costs next to nothing."""

    def __init__(self, meter: Meter) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        meter.create_observable_up_down_counter(
            "db.client.connections.usage", callbacks=[self._observe], unit="connections"
        )

    def move(self, source: tuple[str, str] | None, target: tuple[str, str] | None) -> None:
        """One connection leaves the (pool, state) `source` for `target` (None: none, as it is
        opened or closed)."""
        with self._lock:
            if source is not None:
                self._counts[source] = self._counts.get(source, 0) - 1
            if target is not None:
                self._counts[target] = self._counts.get(target, 0) + 1

    def _observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            counts = list(self._counts.items())
        return [Observation(value, {"pool.name": pool, "state": state}) for (pool, state), value in counts]


class StatementSpans:
    """A CLIENT span per SQL statement and the pool's connection counts, as
    opentelemetry-instrumentation-sqlalchemy's `EngineTracer` records them (its default, older
    semantic conventions: span `<verb> <database>`, `db.system`, `db.name`, `db.user`,
    `db.statement`, `db.operation`, `net.peer.name`, `net.peer.port`; an error status from the
    driver's exception; nothing inside `untraced()`), for a fraction of its cost. That one works
    out the engine's attributes from its URL again for every statement, sets them one by one
    and makes the span current around that; here they are worked out once per engine and given
    to the span as it starts, never made current (nothing runs inside it). Counted by
    `bench.instructions`: the library's spans cost 22.7 million instructions per order, these
    14.3. `tests/integration/test_sql_spans.py` checks them against the library's, statement by
    statement.

    One difference: for a PostgreSQL URL without a host (a Unix socket) the library reads the
    address from the connection; here the span then has no `net.peer.*`."""

    _LEADING_COMMENT = re.compile(r"^/\*.*?\*/")

    def __init__(self, tracer: trace.Tracer, engine: Engine, usage: PoolUsage) -> None:
        url = engine.url
        self._tracer = tracer
        self._vendor = engine.dialect.name  # "postgresql" or "sqlite", as the library names them
        self._database = url.database or ""
        attributes: dict[str, Any] = {}
        if url.host:
            attributes["net.peer.name"] = url.host
        if url.host and url.port:
            attributes["net.peer.port"] = url.port
        if url.database:
            attributes["db.name"] = url.database
        if url.username:
            attributes["db.user"] = url.username
        attributes["db.system"] = self._vendor
        self._attributes = attributes
        pool = getattr(engine.pool, "logging_name", None) or (
            f"{url.drivername or ''}://{url.host or ''}:{url.port or ''}/{url.database or ''}"
        )
        idle, used = (pool, "idle"), (pool, "used")

        def connected(*_: Any) -> None:
            if is_instrumentation_enabled():
                usage.move(None, idle)

        def closed(*_: Any) -> None:
            if is_instrumentation_enabled():
                usage.move(idle, None)

        def checked_out(*_: Any) -> None:
            if is_instrumentation_enabled():
                usage.move(idle, used)

        def checked_in(*_: Any) -> None:
            if is_instrumentation_enabled():
                usage.move(used, idle)

        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "handle_error", self._error)
        event.listen(engine, "connect", connected)
        event.listen(engine, "close", closed)
        event.listen(engine, "checkout", checked_out)
        event.listen(engine, "checkin", checked_in)

    def operation(self, statement: str) -> str:
        """`SELECT points_db`: the statement's first word (after a leading comment) and the database."""
        head = self._LEADING_COMMENT.sub("", statement) if statement.startswith("/*") else statement
        words = head.split(None, 1)
        parts = [words[0]] if words else []
        if self._database:
            parts.append(self._database)
        return " ".join(parts) if parts else self._vendor

    def _before(self, _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool) -> None:
        if context is None or not is_instrumentation_enabled():
            return
        operation = self.operation(statement)
        context._otel_span = self._tracer.start_span(
            operation,
            kind=SpanKind.CLIENT,
            attributes={**self._attributes, "db.statement": statement, "db.operation": operation},
        )

    @staticmethod
    def _after(_conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool) -> None:
        span = getattr(context, "_otel_span", None)
        if span is not None:
            span.end()

    @staticmethod
    def _error(exception_context: Any) -> None:
        span = getattr(exception_context.execution_context, "_otel_span", None)
        if span is None:
            return
        if span.is_recording():
            span.set_status(Status(StatusCode.ERROR, str(exception_context.original_exception)))
        span.end()


@contextmanager
def untraced() -> Iterator[None]:
    """No spans inside: for polls and scrapes that would otherwise each start a trace of their own."""
    with suppress_instrumentation():
        yield


def current_trace_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the active span, or None outside a trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
