"""The project's SQL statement spans (`shared.telemetry.StatementSpans`) are what
opentelemetry-instrumentation-sqlalchemy's `EngineTracer` records, statement by statement: the
same names, kinds, attributes, parents and error statuses, none inside `untraced()`, and the same
pool connection counts. On SQLite, or on PostgreSQL with TEST_DATABASE_URL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Engine, text

from shared.db import create_db_engine
from shared.telemetry import PoolUsage, StatementSpans, untraced
from tests.harness import Databases

Instrument = Callable[[trace.Tracer, Engine, Meter], object]


def recorded(url: str, instrument: Instrument) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    """The spans and the pool's connection counts of one fixed run of statements."""
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter = MeterProvider(metric_readers=[reader]).get_meter("m")
    tracer = provider.get_tracer("test")
    engine = create_db_engine(url, pool_size=2)
    instrument(tracer, engine, meter)
    try:
        with tracer.start_as_current_span("rpc"):
            with engine.connect() as connection:
                connection.execute(text("CREATE TABLE spans_probe (n integer)"))
                connection.execute(text("INSERT INTO spans_probe (n) VALUES (:n)"), [{"n": 1}, {"n": 2}])
                connection.execute(text("/* a comment */ SELECT n FROM spans_probe ORDER BY n")).all()
                connection.execute(text("\n  update spans_probe set n = n + 1"))
                with pytest.raises(Exception, match=r"(?i)syntax"):
                    connection.execute(text("SELEC n FROM spans_probe"))
                connection.rollback()
                with untraced():
                    connection.execute(text("SELECT 1")).all()
            with engine.connect(), engine.connect():  # two connections checked out at once
                pass
    finally:
        engine.dispose()
    index = {span.context.span_id: span.name for span in exporter.get_finished_spans() if span.context}
    spans = [
        (
            span.name,
            span.kind,
            sorted((span.attributes or {}).items()),
            span.status.status_code,
            (span.status.description or "").splitlines()[:1],
            index.get(span.parent.span_id) if span.parent else None,
        )
        for span in exporter.get_finished_spans()
        if span.name != "rpc"
    ]
    counts: dict[str, int] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = f"{point.attributes['state']} {point.attributes['pool.name']}"  # type: ignore[index]
                    counts[key] = int(point.value)  # type: ignore[union-attr]
    return spans, counts


def test_statement_spans_are_the_instrumentation_libraries_spans(databases: Databases) -> None:
    ours = recorded(databases.new("sql_spans"), lambda t, e, m: StatementSpans(t, e, PoolUsage(m)))
    theirs = recorded(
        databases.new("sql_spans"),
        lambda t, e, m: EngineTracer(t, e, m.create_up_down_counter("db.client.connections.usage")),  # type: ignore[no-untyped-call]
    )

    def same_database(run: tuple[list[tuple[Any, ...]], dict[str, int]]) -> Any:
        # Each run has a database of its own: its name is in span names, attributes and the pool's name.
        database = next(value for span in run[0] for key, value in span[2] if key == "db.name")
        return repr(run).replace(database, "<database>")

    names = [span[0].split()[0] for span in ours[0]]
    assert names[-5:] == ["CREATE", "INSERT", "SELECT", "update", "SELEC"]  # none for the untraced SELECT 1
    assert all(span[5] == "rpc" for span in ours[0])
    assert [span[3] for span in ours[0]].count(trace.StatusCode.ERROR) == 1
    assert same_database(ours) == same_database(theirs)
