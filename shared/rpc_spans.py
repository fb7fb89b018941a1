"""gRPC spans: a SERVER span per call a service answers, a CLIENT span per call it makes.

They are the spans of opentelemetry-instrumentation-grpc (the same names, kinds, attributes,
parents, propagation, statuses and instrumentation scope; health checks left out; nothing inside
`untraced()`), made for less. Per unary call the library builds a wrapper around the servicer
context, a handler, a client-info tuple, an invoker closure and an ordered copy of the metadata,
splits the method name and parses the filter's service name again, and makes each span current
through a generator-based context manager. Here a method's fixed attributes are worked out once,
the span is started directly, and the server span is current only around the handler.
`bench.instructions` counts the difference; `tests/integration/test_rpc_spans.py` checks both
sides against the library, call by call.

Streaming calls (the feature import, reflection) keep the library's interceptors as they are.

Where these spans differ from the library's, on purpose:
- A call refused with a status (`abort`, `abort_with_status`: every `DomainError`) carries its
  real `rpc.grpc.status_code`; the library leaves 0 (OK) there, because its context wrapper does
  not see `abort_with_status`. Its span status follows the same rule as the library's `set_code`:
  ERROR only for the codes that mean the server failed (UNKNOWN, DEADLINE_EXCEEDED,
  UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS), so a refused request is not a server error.
- A handler that fails with an unexpected exception: UNKNOWN and an ERROR status, as the caller
  sees it; the library leaves 0 (OK) and no status there.
- No "exception" event for the bare `Exception` grpcio raises to end an aborted call (it carries
  nothing: the status is the information), and an unexpected exception is recorded once, where
  the library records it twice.
- The caller's metadata goes out as given, repeated keys included; the library passes it through
  a dictionary, which keeps only the last value of a repeated key.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import unquote

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import client_interceptor, grpcext, server_interceptor
from opentelemetry.instrumentation.grpc.version import __version__ as LIBRARY_VERSION
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.propagators.textmap import Setter
from opentelemetry.trace import SpanKind, Status, StatusCode

from shared.errors import status_code_of

# The library's instrumentation scope, so dashboards and queries that filter on it keep working.
SCOPE = "opentelemetry.instrumentation.grpc"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.11.0"
HEALTH = "grpc.health.v1.Health"
# The codes after which a server span is an error (as the library's `set_code` decides).
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_OK = grpc.StatusCode.OK.value[0]


def method_attributes(method: str) -> tuple[str, dict[str, Any]]:
    """(service, the attributes every span of `method` starts with): `/pkg.Service/Name`."""
    service, _, name = method.lstrip("/").partition("/")
    return service, {"rpc.system": "grpc", "rpc.grpc.status_code": _OK, "rpc.method": name, "rpc.service": service}


@functools.lru_cache(maxsize=1024)
def peer_attributes(peer: str) -> tuple[tuple[str, str], ...]:
    """`net.peer.*` of a grpcio peer string (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`), as the
    library derives them; nothing for a Unix socket or a string it cannot read."""
    if peer.startswith("unix:"):
        return ()
    try:
        ip, port = peer.split(",")[0].split(":", 1)[1].rsplit(":", 1)
    except (IndexError, ValueError):
        return ()
    ip = unquote(ip)
    pairs = [("net.peer.ip", ip), ("net.peer.port", port)]
    if ip in ("[::1]", "127.0.0.1"):
        pairs.append(("net.peer.name", "localhost"))
    return tuple(pairs)


def _details_of(context: grpc.ServicerContext, code: grpc.StatusCode) -> str:
    details = getattr(context, "details", None)
    value = details() if callable(details) else None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else code.value[1]


class ServerSpans(grpc.ServerInterceptor):
    """The outermost server interceptor: a SERVER span per call, parented by the caller's trace
    context from the metadata, current while the handler runs."""

    def __init__(self, provider: trace.TracerProvider, *, skip: Iterable[str] = (HEALTH,)) -> None:
        self._tracer = provider.get_tracer(SCOPE, LIBRARY_VERSION, schema_url=SCHEMA_URL)
        self._skip = frozenset(skip)
        self._streams: grpc.ServerInterceptor = server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=provider,
            filter_=lambda details: method_attributes(details.method)[0] not in self._skip,
        )
        self._methods: dict[str, dict[str, Any] | None] = {}

    def _attributes(self, method: str) -> dict[str, Any] | None:
        """The method's fixed attributes, or None when it is not traced (a health check)."""
        try:
            return self._methods[method]
        except KeyError:
            service, attributes = method_attributes(method)
            found = self._methods[method] = None if service in self._skip else attributes
            return found

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        attributes = self._attributes(method)
        if attributes is None:
            return handler
        if handler.unary_unary is None:  # a streaming call: the library's interceptor
            return self._streams.intercept_service(lambda _details: handler, handler_call_details)
        return handler._replace(unary_unary=self._traced(handler.unary_unary, method, attributes))

    def _traced(self, behaviour: Callable[[Any, grpc.ServicerContext], Any], method: str, fixed: dict[str, Any]) -> Any:
        tracer = self._tracer

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            if not is_instrumentation_enabled():
                return behaviour(request, context)
            metadata = context.invocation_metadata()
            carrier: dict[str, Any] = {item.key: item.value for item in metadata} if metadata else {}  # type: ignore[attr-defined]
            parent = propagate.extract(carrier) if carrier else None
            attributes = {**fixed, **dict(peer_attributes(context.peer()))}
            agent = carrier.get("user-agent")
            if agent is not None:
                attributes["rpc.user_agent"] = agent
            span = tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes)
            token = otel_context.attach(trace.set_span_in_context(span, parent))
            try:
                response = behaviour(request, context)
            except Exception as error:
                code = status_code_of(context)
                if code is None or type(error) is not Exception:  # not grpcio's end of an aborted call
                    span.record_exception(error)
                _end_server_span(span, context, code or grpc.StatusCode.UNKNOWN)
                raise
            finally:
                otel_context.detach(token)
            _end_server_span(span, context, status_code_of(context))
            return response

        return handle


def _end_server_span(span: trace.Span, context: grpc.ServicerContext, code: grpc.StatusCode | None) -> None:
    if code is not None and code is not grpc.StatusCode.OK:
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, f"{code}:{_details_of(context, code)}"))
    span.end()


class _LowerCaseSetter(Setter[list[tuple[str, str]]]):
    """gRPC metadata keys are lower case."""

    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key.lower(), value))


_SETTER = _LowerCaseSetter()
Metadata = Sequence[tuple[str, str | bytes]] | None
Outgoing = tuple[tuple[str, str | bytes], ...] | None


class _TracedUnaryUnary(grpc.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    """A unary method of a `TracedChannel`: a CLIENT span around the call, its context in the
    metadata."""

    def __init__(self, method: str, base: Any, tracer: trace.Tracer | None, attributes: dict[str, Any]) -> None:
        self._method = method
        self._base = base
        self._tracer = tracer  # None: not traced (a health check)
        self._attributes = attributes

    def _start(self, metadata: Metadata) -> tuple[trace.Span | None, Outgoing]:
        if self._tracer is None or not is_instrumentation_enabled():
            return None, tuple(metadata) if metadata is not None else None
        span = self._tracer.start_span(self._method, kind=SpanKind.CLIENT, attributes=self._attributes)
        carrier: list[tuple[str, Any]] = list(metadata) if metadata else []
        propagate.inject(carrier, context=trace.set_span_in_context(span), setter=_SETTER)
        return span, tuple(carrier)

    @staticmethod
    def _failed(span: trace.Span, error: Exception) -> None:
        if isinstance(error, grpc.RpcError):
            span.set_attribute("rpc.grpc.status_code", error.code().value[0])
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.record_exception(error)
        span.end()

    def _invoke(
        self, call: Callable[..., Any], request: Any, timeout: float | None, metadata: Metadata, *rest: Any
    ) -> Any:
        span, outgoing = self._start(metadata)
        if span is None:
            return call(request, timeout, outgoing, *rest)
        try:
            result = call(request, timeout, outgoing, *rest)
        except Exception as error:
            self._failed(span, error)
            raise
        span.end()
        return result

    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._invoke(self._base, request, timeout, metadata, credentials, wait_for_ready, compression)

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._invoke(self._base.with_call, request, timeout, metadata, credentials, wait_for_ready, compression)

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        span, outgoing = self._start(metadata)
        if span is None:
            return self._base.future(request, timeout, outgoing, credentials, wait_for_ready, compression)
        try:
            future = self._base.future(request, timeout, outgoing, credentials, wait_for_ready, compression)
        except Exception as error:
            self._failed(span, error)
            raise

        def done(finished: Any) -> None:
            code = finished.code()
            if code is not grpc.StatusCode.OK:
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                span.set_status(Status(StatusCode.ERROR))
            span.end()

        future.add_done_callback(done)
        return future


class TracedChannel(grpc.Channel):
    """A channel whose unary calls make CLIENT spans (`_TracedUnaryUnary`); streaming calls go
    through the library's client interceptor."""

    def __init__(
        self, channel: grpc.Channel, provider: trace.TracerProvider, *, skip: Iterable[str] = (HEALTH,)
    ) -> None:
        self._channel = channel
        self._tracer = provider.get_tracer(SCOPE, LIBRARY_VERSION, schema_url=SCHEMA_URL)
        self._skip = frozenset(skip)
        self._streams: grpc.Channel = grpcext.intercept_channel(  # type: ignore[no-untyped-call]
            channel,
            client_interceptor(  # type: ignore[no-untyped-call]
                tracer_provider=provider,
                filter_=lambda info: method_attributes(info.full_method)[0] not in self._skip,
            ),
        )

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> Any:
        channel: Any = self._channel  # grpcio's `_registered_method` is not in the typing stubs
        base = (
            channel.unary_unary(method, request_serializer, response_deserializer, _registered_method)
            if _registered_method
            else channel.unary_unary(method, request_serializer, response_deserializer)
        )
        service, attributes = method_attributes(method)
        return _TracedUnaryUnary(method, base, None if service in self._skip else self._tracer, attributes)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._streams.unary_stream(*args, **kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._streams.stream_unary(*args, **kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._streams.stream_stream(*args, **kwargs)

    def subscribe(self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False) -> None:
        self._channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        self._channel.unsubscribe(callback)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TracedChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
