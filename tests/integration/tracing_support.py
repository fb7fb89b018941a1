"""Reading a finished trace: spans by id, ancestors, the one span of a kind, database spans under
the server span of their own service. For the cross-service tracing tests (and the gateway's
whole-tree test once the gateway lands)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind


def service_of(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def by_id(finished: Sequence[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {span.context.span_id: span for span in finished if span.context is not None}


def ancestors(span: ReadableSpan, index: dict[int, ReadableSpan]) -> Iterator[ReadableSpan]:
    while span.parent is not None:
        parent = index.get(span.parent.span_id)
        assert parent is not None, f"span {span.name!r} has a parent that was never exported"
        yield parent
        span = parent


def only(finished: Sequence[ReadableSpan], service: str, kind: SpanKind, suffix: str) -> ReadableSpan:
    [span] = [s for s in finished if service_of(s) == service and s.kind == kind and s.name.endswith(suffix)]
    return span


def is_db(span: ReadableSpan) -> bool:
    attributes = span.attributes or {}
    return "db.system" in attributes or "db.system.name" in attributes


def assert_db_spans_under_own_server(trace: Sequence[ReadableSpan], index: dict[int, ReadableSpan]) -> int:
    """Every database span hangs under a server (or delivery) span of its own service."""
    checked = 0
    for span in trace:
        if not is_db(span):
            continue
        owner = next(a for a in ancestors(span, index) if a.kind in (SpanKind.SERVER, SpanKind.PRODUCER))
        assert service_of(owner) == service_of(span), f"{span.name} of {service_of(span)} under {owner.name}"
        checked += 1
    return checked
