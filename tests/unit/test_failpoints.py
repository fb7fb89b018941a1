"""Failpoints: the FAILPOINTS syntax, counted actions, and the in-process arm/disarm."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from shared import failpoints
from shared.errors import PeerDeadlineExceeded, PeerUnanswered, PeerUnavailable, from_rpc_error
from shared.server import DomainErrorInterceptor


def test_the_syntax_names_an_action_and_how_often() -> None:
    armed = failpoints.parse(" checkout.saga.after.HOLD_MONEY , points.rpc.CreditPoints.after=sleep:250*2,x=deadline")
    assert [(name, a.action, a.sleep_ms, a.remaining) for name, a in armed.items()] == [
        ("checkout.saga.after.HOLD_MONEY", "kill", 0, None),
        ("points.rpc.CreditPoints.after", "sleep", 250, 2),
        ("x", "deadline", 0, None),
    ]
    assert failpoints.parse("") == {}
    assert failpoints.parse("y=cut*1")["y"].action == "cut"
    for bad in ("a=explode", "a=sleep", "a=kill:3", "a=cut:5"):
        with pytest.raises(ValueError, match="unknown failpoint action"):
            failpoints.parse(bad)


def test_a_counted_failpoint_fires_that_often_then_disarms_itself() -> None:
    failpoints.arm("test.lost", "unavailable*2")
    try:
        for _ in range(2):
            with pytest.raises(PeerUnavailable):
                failpoints.hit("test.lost")
        failpoints.hit("test.lost")  # disarmed now
        assert not failpoints.is_armed("test.lost")
        with failpoints.armed("test.slow", "deadline"), pytest.raises(PeerDeadlineExceeded):
            failpoints.hit("test.slow")
        failpoints.hit("test.slow")
        failpoints.arm("test.sleep", "sleep:1*1")
        failpoints.hit("test.sleep")
        assert failpoints.wait_idle(1)
        failpoints.hit("not.armed")
    finally:
        failpoints.disarm()


def test_a_cut_call_reaches_the_caller_as_a_bare_status_and_is_not_logged_as_a_fault(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`cut` ends the call as the gRPC core reports a stream reset (INTERNAL "CANCELLED", no
    ErrorInfo), so the caller cannot tell it from a peer being stopped mid-call: it is an
    unanswered call, not a refusal. The handler's own work is done first with `.after`."""
    handled: list[bytes] = []

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        handled.append(request)
        return request

    server = grpc.server(
        ThreadPoolExecutor(2), interceptors=[DomainErrorInterceptor(), failpoints.FailpointInterceptor("test")]
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("t.Echo", {"Say": grpc.unary_unary_rpc_method_handler(echo)})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    say: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/t.Echo/Say")
    try:
        failpoints.arm("test.rpc.Say.after", "cut*1")
        with caplog.at_level(logging.ERROR), pytest.raises(grpc.RpcError) as cut:
            say(b"once", timeout=5)
        assert (cut.value.code(), cut.value.details()) == (grpc.StatusCode.INTERNAL, "CANCELLED")
        error = from_rpc_error(cut.value)
        assert isinstance(error, PeerUnanswered) and error.reason == "INTERNAL"
        assert handled == [b"once"], "the handler ran: the effect happened, the answer was cut"
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "an injected cut is not a fault"
        assert say(b"again", timeout=5) == b"again"  # fired once, then disarmed
    finally:
        failpoints.disarm()
        channel.close()
        server.stop(0).wait()
