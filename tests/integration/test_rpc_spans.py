"""The project's gRPC spans (`shared.rpc_spans`: `ServerSpans`, `TracedChannel`) against
opentelemetry-instrumentation-grpc's interceptors, call by call, on a real gRPC server: the same
span names, kinds, attributes, parents, trace propagation, statuses and instrumentation scope,
health checks and `untraced()` calls left out; and the differences the module lists, each shown
here (the real status code of a refused call, one exception event instead of two or a
meaningless one, repeated metadata kept)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.instrumentation.grpc import client_interceptor, filters, grpcext, server_interceptor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared.errors import NotFound
from shared.rpc_spans import SCOPE, ServerSpans, TracedChannel, peer_attributes
from shared.server import DomainErrorInterceptor
from shared.telemetry import untraced

SERVICE = "loyalty.test.v1.Probe"
NOT_HEALTH = filters.negate(filters.service_name("grpc.health.v1.Health"))


def _ok(request: bytes, context: grpc.ServicerContext) -> bytes:
    seen = [f"{key}={value!s}" for key, value in context.invocation_metadata() if key == "x-probe"]
    return request + ("|" + ",".join(seen) if seen else "").encode()


def _refused(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise NotFound("THING_NOT_FOUND", "no such thing")


def _broken(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise RuntimeError("the handler broke")


def _unimplemented(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.UNIMPLEMENTED)  # as generated base servicers do
    context.set_details("Method not implemented!")
    raise NotImplementedError("Method not implemented!")


def _quiet_code(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.UNAVAILABLE)  # a status set without raising
    context.set_details("try later")
    return b""


def _total(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    return str(sum(len(request) for request in requests)).encode()


UNARY = {"Ok": _ok, "Refused": _refused, "Broken": _broken, "Unimplemented": _unimplemented, "QuietCode": _quiet_code}


@dataclass
class Side:
    """One side of the comparison: a server and a client channel, their spans in one exporter."""

    spans: InMemorySpanExporter
    provider: TracerProvider
    server: grpc.Server
    channel: Any  # grpc.Channel; Any as its typed callables want typed messages, these are bytes

    def call(self, method: str, request: bytes = b"ping", **options: Any) -> Any:
        return self.channel.unary_unary(f"/{SERVICE}/{method}")(request, timeout=5, **options)


def start(server_interceptor_of: Callable[[TracerProvider], grpc.ServerInterceptor], wrap: Callable[..., Any]) -> Side:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    server = grpc.server(
        ThreadPoolExecutor(max_workers=4),
        interceptors=[server_interceptor_of(provider), DomainErrorInterceptor()],
    )
    handlers: dict[str, Any] = {
        name: grpc.unary_unary_rpc_method_handler(behaviour) for name, behaviour in UNARY.items()
    }
    handlers["Total"] = grpc.stream_unary_rpc_method_handler(_total)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = wrap(grpc.insecure_channel(f"127.0.0.1:{port}"), provider)
    return Side(spans, provider, server, channel)


@pytest.fixture
def sides() -> Iterator[tuple[Side, Side]]:
    theirs = start(
        lambda provider: server_interceptor(tracer_provider=provider, filter_=NOT_HEALTH),  # type: ignore[no-untyped-call]
        lambda channel, provider: grpcext.intercept_channel(  # type: ignore[no-untyped-call]
            channel,
            client_interceptor(tracer_provider=provider, filter_=NOT_HEALTH),  # type: ignore[no-untyped-call]
        ),
    )
    ours = start(ServerSpans, TracedChannel)
    yield theirs, ours
    for side in (theirs, ours):
        side.channel.close()
        side.server.stop(None)


def run(side: Side) -> list[tuple[Any, ...]]:
    """The same calls on either side, each under a root span; the spans, in a comparable form."""
    tracer = side.provider.get_tracer("probe")
    channel = side.channel
    with tracer.start_as_current_span("root ok"):
        assert side.call("Ok", metadata=(("x-probe", "1"),)) == b"ping|x-probe=1"
    with tracer.start_as_current_span("root with_call"):
        response, call = channel.unary_unary(f"/{SERVICE}/Ok").with_call(b"w", timeout=5)
        assert response == b"w" and call.code() == grpc.StatusCode.OK
    with tracer.start_as_current_span("root future"):
        assert channel.unary_unary(f"/{SERVICE}/Ok").future(b"f", timeout=5).result() == b"f"
    for method in ("Refused", "Broken", "Unimplemented", "QuietCode"):
        with tracer.start_as_current_span(f"root {method}"), pytest.raises(grpc.RpcError):
            side.call(method)
    with tracer.start_as_current_span("root future refused"), pytest.raises(grpc.RpcError):
        channel.unary_unary(f"/{SERVICE}/Refused").future(b"f", timeout=5).result()
    with tracer.start_as_current_span("root stream"):
        assert channel.stream_unary(f"/{SERVICE}/Total")(iter([b"ab", b"c"]), timeout=5) == b"3"
    with tracer.start_as_current_span("root untraced"), untraced():
        assert side.call("Ok") == b"ping"
    health_pb2_grpc.HealthStub(side.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    side.server.stop(5).wait()  # every server span has ended
    finished = side.spans.get_finished_spans()
    return [describe(span, {s.context.span_id: s for s in finished if s.context}) for span in finished]


def describe(span: ReadableSpan, index: dict[int, ReadableSpan]) -> tuple[Any, ...]:
    attributes = dict(span.attributes or {})
    attributes.pop("net.peer.port", None)  # the client's port: a new one per channel
    description = (span.status.description or "").split(":")[0]  # a client's ends with grpc's debug text
    parent = index.get(span.parent.span_id) if span.parent else None
    root = parent
    while root is not None and root.parent is not None:
        root = index.get(root.parent.span_id)
    return (
        root.name if root else span.name,
        span.name,
        span.kind,
        sorted(attributes.items()),
        span.status.status_code,
        description,
        [event.name for event in span.events],
        (parent.kind, parent.name) if parent else None,
        (span.instrumentation_scope.name if span.instrumentation_scope else None),
        span.context.trace_id == parent.context.trace_id if parent and span.context and parent.context else None,
    )


def test_rpc_spans_are_the_instrumentation_libraries_spans_but_where_documented(sides: tuple[Side, Side]) -> None:
    theirs, ours = (sorted(run(side), key=lambda span: (span[0], span[2].value, span[1])) for side in sides)
    # A client and a server span per traced call, the roots, and the server span of the call made
    # `untraced()`: the client sent no trace context, so it is a root of its own.
    assert len(ours) == len(theirs) == 2 * 9 + 10 + 1

    def with_code(attributes: list[tuple[str, Any]], code: grpc.StatusCode) -> list[tuple[str, Any]]:
        return sorted({**dict(attributes), "rpc.grpc.status_code": code.value[0]}.items())

    def corrected(span: tuple[Any, ...]) -> tuple[Any, ...]:
        """The library's span with the documented differences applied."""
        root, name, kind, attributes, status, description, events, parent, scope, same_trace = span
        if kind == SpanKind.SERVER and root in ("root Refused", "root future refused"):
            assert dict(attributes)["rpc.grpc.status_code"] == 0  # the library's: OK for a refused call
            attributes = with_code(attributes, grpc.StatusCode.NOT_FOUND)
            assert events == ["exception"]  # grpcio's bare Exception ending the aborted call
            events = []
        if kind == SpanKind.SERVER and root in ("root Broken", "root Unimplemented"):
            assert events == ["exception", "exception"]  # the same exception, recorded twice
            events = ["exception"]
        if kind == SpanKind.SERVER and root == "root Broken":
            assert (dict(attributes)["rpc.grpc.status_code"], status) == (0, StatusCode.UNSET)  # OK, for a failure
            attributes = with_code(attributes, grpc.StatusCode.UNKNOWN)
            status, description = StatusCode.ERROR, "StatusCode.UNKNOWN"
        return root, name, kind, attributes, status, description, events, parent, scope, same_trace

    assert ours == [corrected(span) for span in theirs]
    by_root = {(span[0], span[2]): span for span in ours}
    # What the comparison covers, spelled out on our side.
    server_ok = by_root[("root ok", SpanKind.SERVER)]
    assert server_ok[7] == (SpanKind.CLIENT, f"/{SERVICE}/Ok") and server_ok[9] is True  # parented across the wire
    assert server_ok[8] == SCOPE
    assert dict(server_ok[3])["net.peer.name"] == "localhost"
    assert by_root[("root Refused", SpanKind.SERVER)][4] == StatusCode.UNSET  # a refusal is not a server error
    assert by_root[("root Refused", SpanKind.CLIENT)][4] == StatusCode.ERROR
    assert by_root[("root Broken", SpanKind.SERVER)][4:6] == (StatusCode.ERROR, "StatusCode.UNKNOWN")
    assert by_root[("root QuietCode", SpanKind.SERVER)][4:6] == (StatusCode.ERROR, "StatusCode.UNAVAILABLE")
    assert ("root stream", SpanKind.SERVER) in by_root
    assert not [span for span in ours if "Health" in span[1]]
    assert not [span for span in ours if span[0] == "root untraced" and span[1] != span[0]]  # no client span


def test_repeated_metadata_of_the_caller_reaches_the_server(sides: tuple[Side, Side]) -> None:
    _, ours = sides
    assert ours.call("Ok", metadata=(("x-probe", "a"), ("x-probe", "b"))) == b"ping|x-probe=a,x-probe=b"


def test_peer_attributes_read_grpcio_peer_strings() -> None:
    assert peer_attributes("ipv4:127.0.0.1:5000") == (
        ("net.peer.ip", "127.0.0.1"),
        ("net.peer.port", "5000"),
        ("net.peer.name", "localhost"),
    )
    assert peer_attributes("ipv6:%5B::1%5D:5001") == (
        ("net.peer.ip", "[::1]"),
        ("net.peer.port", "5001"),
        ("net.peer.name", "localhost"),
    )
    assert peer_attributes("ipv4:10.2.1.1:57284,127.0.0.1:57284") == (
        ("net.peer.ip", "10.2.1.1"),
        ("net.peer.port", "57284"),
    )
    assert peer_attributes("unix:/tmp/socket") == ()
    assert peer_attributes("garbage") == ()
