"""Tracing for one service: its own tracer provider, gRPC server and client interceptors, and
database spans.

Each service gets its own `TracerProvider`, so several services in one process (the test
harness) still report under their own names. The exporter follows the standard variables:
`OTEL_TRACES_EXPORTER` (`otlp`, `console`, `none`), `OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`. Health checks are not traced.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import grpc
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.grpc import client_interceptor, filters, grpcext, server_interceptor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from sqlalchemy import Engine

from shared.settings import SettingsError

VERSION = "0.1.0"

_NOT_HEALTH = filters.negate(filters.service_name("grpc.health.v1.Health"))


def _exporter_from_env(environ: Mapping[str, str]) -> SpanExporter | None:
    name = environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if name in ("", "none"):
        return None
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_ENDPOINT itself
    raise SettingsError(f"OTEL_TRACES_EXPORTER must be otlp, console or none, got {name!r}")


class Telemetry:
    """The tracing set-up of one service."""

    def __init__(
        self,
        service: str,
        *,
        environ: Mapping[str, str] | None = None,
        processors: tuple[SpanProcessor, ...] = (),
    ) -> None:
        environ = os.environ if environ is None else environ
        name = environ.get("OTEL_SERVICE_NAME") or service
        resource = Resource.create({SERVICE_NAME: name, SERVICE_VERSION: VERSION, "service.namespace": "loyalty"})
        self.service = service
        self.provider = TracerProvider(resource=resource)
        exporter = _exporter_from_env(environ)
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        for processor in processors:
            self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer(f"loyalty.{service}", VERSION)

    def server_interceptor(self) -> grpc.ServerInterceptor:
        interceptor: grpc.ServerInterceptor = server_interceptor(tracer_provider=self.provider, filter_=_NOT_HEALTH)
        return interceptor

    def intercept_channel(self, channel: grpc.Channel) -> grpc.Channel:
        interceptor = client_interceptor(tracer_provider=self.provider, filter_=_NOT_HEALTH)
        intercepted: grpc.Channel = grpcext.intercept_channel(channel, interceptor)
        return intercepted

    def instrument_engine(self, engine: Engine) -> None:
        tracer = self.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy", VERSION)
        usage = metrics.get_meter("opentelemetry.instrumentation.sqlalchemy").create_up_down_counter(
            "db.client.connections.usage", unit="connections"
        )
        EngineTracer(tracer, engine, usage)

    def shutdown(self) -> None:
        self.provider.shutdown()


def current_trace_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the active span, or None outside a trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
