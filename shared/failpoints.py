"""Failpoints: named places in a service where a reliability test injects a fault.

`FAILPOINTS` (tests only) arms failpoints, separated by commas, each `name` or `name=action`:

    kill          SIGKILL the process: no clean-up, no reply, what a crash or an OOM kill does
                  (the action of a bare name)
    sleep:<ms>    wait that long, then go on: a slow peer, past its caller's deadline
    unavailable   fail the call with UNAVAILABLE (in an RPC failpoint)
    deadline      fail the call with DEADLINE_EXCEEDED (in an RPC failpoint)
    cut           end the call with a bare INTERNAL "CANCELLED" and no ErrorInfo, as the gRPC core
                  reports a stream reset while a peer stops (in an RPC failpoint)

An action may end with `*<n>`: it fires n times, then the failpoint disarms itself.

The places:

- `checkout.saga.before.<STEP>` / `checkout.saga.after.<STEP>`: around each remote step of an
  order's saga in Checkout (`kill` and `sleep` only).
- `<service>.rpc.<Method>.before` / `<service>.rpc.<Method>.after`, for every RPC of every service
  (`FailpointInterceptor`, the innermost server interceptor): `before` runs before the handler
  (nothing done yet); `after` runs once the handler has returned, so its transaction has
  committed, and before the reply is sent. `points.rpc.BatchCreditPoints.after=unavailable*1` is
  a lost reply: the credit is made, the caller hears UNAVAILABLE once; `...after=cut*1` is the
  same reply cut as a restarting peer cuts it.

In-process tests arm and disarm with `arm()` and `disarm()`; `wait_idle()` waits until no
failpoint is sleeping. Unarmed (always, outside tests), `hit` is a dictionary look-up.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from shared.errors import PeerDeadlineExceeded, PeerUnavailable

ACTIONS = ("kill", "sleep", "unavailable", "deadline", "cut")


class CallCut(Exception):
    """Raised by a `cut` failpoint; `FailpointInterceptor` turns it into the bare status."""


@dataclass
class _Armed:
    action: str
    sleep_ms: int = 0
    remaining: int | None = None  # None: every time


_armed: dict[str, _Armed] = {}
_lock = threading.Lock()
_idle = threading.Condition(_lock)
_sleeping = 0


def parse(spec: str) -> dict[str, _Armed]:
    """`name[=action[*n]],...` as armed failpoints; ValueError on an unknown action."""
    armed: dict[str, _Armed] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, action = item.partition("=")
        armed[name.strip()] = _action(action.strip() or "kill")
    return armed


def _action(text: str) -> _Armed:
    action, _, times = text.partition("*")
    kind, _, argument = action.partition(":")
    if kind not in ACTIONS or (kind == "sleep") != bool(argument):
        raise ValueError(f"unknown failpoint action {text!r}: expected kill, sleep:<ms>, unavailable, deadline or cut")
    return _Armed(kind, int(argument) if argument else 0, int(times) if times else None)


def arm(name: str, action: str = "kill") -> None:
    """Arm one failpoint in this process (in-process tests; `kill` would end the test run)."""
    armed = _action(action)
    with _lock:
        _armed[name] = armed


def disarm(name: str | None = None) -> None:
    """Disarm one failpoint, or all of them."""
    with _lock:
        if name is None:
            _armed.clear()
        else:
            _armed.pop(name, None)


@contextmanager
def armed(name: str, action: str) -> Iterator[None]:
    arm(name, action)
    try:
        yield
    finally:
        disarm(name)


def is_armed(name: str) -> bool:
    return name in _armed


def wait_idle(timeout: float = 30) -> bool:
    """Wait until no failpoint is sleeping (a slow handler has finished what it was doing)."""
    with _idle:
        return _idle.wait_for(lambda: _sleeping == 0, timeout)


def hit(name: str) -> None:
    """Execution reached failpoint `name`: do what it is armed with, if anything."""
    if name not in _armed:
        return
    global _sleeping
    with _lock:
        armed = _armed.get(name)
        if armed is None:
            return
        if armed.remaining is not None:
            armed.remaining -= 1
            if armed.remaining <= 0:
                del _armed[name]
        if armed.action == "sleep":
            _sleeping += 1
    if armed.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif armed.action == "sleep":
        try:
            time.sleep(armed.sleep_ms / 1000)
        finally:
            with _idle:
                _sleeping -= 1
                _idle.notify_all()
    elif armed.action == "unavailable":
        raise PeerUnavailable("UNAVAILABLE", f"failpoint {name}")
    elif armed.action == "cut":
        raise CallCut(name)
    else:
        raise PeerDeadlineExceeded("DEADLINE_EXCEEDED", f"failpoint {name}")


class FailpointInterceptor(grpc.ServerInterceptor):
    """`<service>.rpc.<Method>.before` and `.after` around every unary handler. Innermost, so
    `after` is past the handler's commit, and inside the domain-error mapping, so `unavailable`
    and `deadline` reach the caller as statuses."""

    def __init__(self, service: str) -> None:
        self._service = service

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        if not _armed or handler is None or handler.unary_unary is None:
            return handler
        name = f"{self._service}.rpc.{handler_call_details.method.rsplit('/', 1)[-1]}"
        before, after = f"{name}.before", f"{name}.after"
        if before not in _armed and after not in _armed:
            return handler
        behaviour = handler.unary_unary

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                hit(before)
                response = behaviour(request, context)
                hit(after)
            except CallCut:
                context.abort(grpc.StatusCode.INTERNAL, "CANCELLED")  # no ErrorInfo, as the core sends it
            return response

        return handler._replace(unary_unary=handle)


_armed.update(parse(os.environ.get("FAILPOINTS", "")))
