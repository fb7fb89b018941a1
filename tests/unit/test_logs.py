"""JSON log lines carry the active trace and span ids, and the caller's extra fields."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from shared.logs import JsonFormatter


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "t", "levelname": "INFO", "levelno": 20, "msg": message})
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_line_inside_a_span_names_its_trace_and_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        line = json.loads(JsonFormatter("points").format(_record("credited", lot_id="l-1")))
        context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert (line["service"], line["message"], line["lot_id"]) == ("points", "credited", "l-1")


def test_a_line_outside_any_span_has_no_trace_fields() -> None:
    line = json.loads(JsonFormatter("points").format(_record("idle")))
    assert "trace_id" not in line
    assert line["level"] == "INFO"
