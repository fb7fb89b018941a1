"""Calling other services.

One channel per peer for the life of the process; a deadline on every call; a retry only when
the peer was UNAVAILABLE (the request never reached it, or it was not serving) and only for calls
the caller marks idempotent, which for a mutation means it carries a request id. A peer's domain
error comes back as the same `DomainError` kind with its reason.
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc

from shared.errors import PeerUnavailable, from_rpc_error

Req = TypeVar("Req")
Resp = TypeVar("Resp")
A = TypeVar("A")
B = TypeVar("B")


_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # Our own retry policy lives in `Peers.call`; gRPC's transparent retries stay on.
    ("grpc.enable_retries", 1),
    # A peer that comes back is noticed within seconds, not after gRPC's default 2-minute backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # Spread calls over every address the name resolves to (the pods behind a headless Service),
    # not only the first; with one address it is the same as the default.
    ("grpc.lb_policy_name", "round_robin"),
]


class Peers:
    """The channels of one process to the services it calls."""

    def __init__(
        self,
        targets: Mapping[str, str],
        *,
        deadline_ms: int = 3000,
        retry_attempts: int = 3,
        backoff_base_ms: int = 50,
        sleep: Callable[[float], None] = time.sleep,
        wrap_channel: Callable[[grpc.Channel], grpc.Channel] | None = None,
    ) -> None:
        self._targets = dict(targets)
        self._deadline_ms = deadline_ms
        self._retry_attempts = retry_attempts
        self._backoff_base_ms = backoff_base_ms
        self._sleep = sleep
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[tuple[str, Callable[[grpc.Channel], Any]], Any] = {}
        self._pool: ThreadPoolExecutor | None = None  # `both`'s second calls, made on first use
        self._raw_channels: list[grpc.Channel] = []
        self._lock = threading.Lock()
        self._wrap_channel = wrap_channel

    def target(self, peer: str) -> str:
        try:
            return self._targets[peer]
        except KeyError:
            raise KeyError(f"no target configured for peer {peer!r}") from None

    def channel(self, peer: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(peer)
            if channel is None:
                raw = grpc.insecure_channel(self.target(peer), options=_CHANNEL_OPTIONS)
                self._raw_channels.append(raw)
                channel = self._wrap_channel(raw) if self._wrap_channel else raw
                self._channels[peer] = channel
            return channel

    def stub(self, peer: str, stub_type: Callable[[grpc.Channel], Any]) -> Any:
        """One stub per peer and type for the life of the channel: building one makes a callable
        for every method of the service (50-70 us), which callers asking per call paid each time."""
        key = (peer, stub_type)
        stub = self._stubs.get(key)
        if stub is None:
            channel = self.channel(peer)
            with self._lock:
                stub = self._stubs.setdefault(key, stub_type(channel))
        return stub

    def call(
        self,
        method: Callable[..., Resp],
        request: Req,
        *,
        idempotent: bool,
        deadline_ms: int | None = None,
    ) -> Resp:
        """Call `method` with a deadline; retry UNAVAILABLE if `idempotent`; raise DomainError."""
        attempts = self._retry_attempts if idempotent else 1
        timeout = (deadline_ms or self._deadline_ms) / 1000
        for attempt in range(1, attempts + 1):
            try:
                return method(request, timeout=timeout)
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                retry = type(error) is PeerUnavailable and attempt < attempts
                if not retry:
                    raise error from None
                self._sleep(self._backoff(attempt))
        raise AssertionError("unreachable")

    def call_raw(self, peer: str, method: str, payload: bytes, *, deadline_ms: int | None = None) -> bytes:
        """Call a method by its full name with an already serialized request (outbox relay)."""
        callable_: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self.channel(peer).unary_unary(method)
        try:
            response: bytes = callable_(payload, timeout=(deadline_ms or self._deadline_ms) / 1000)
        except grpc.RpcError as rpc_error:
            raise from_rpc_error(rpc_error) from None
        return response

    def both(self, first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
        """Two independent reads at once: `second` on a pool thread (in the caller's context, so
        its span is a child of the caller's), `first` here; their answers, or the first one's
        error (then the other is still waited for, never left running). For reads only: two
        writes at once would leave two uncertain steps after a crash."""
        context = contextvars.copy_context()
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="peer-read")
            pool = self._pool
        pending = pool.submit(context.run, second)
        try:
            answer = first()
        finally:
            other = pending.exception()  # waits; never leaves the call behind
        if other is not None:
            raise other
        return answer, pending.result()

    def _backoff(self, attempt: int) -> float:
        ceiling = self._backoff_base_ms * (2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling) / 1000

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:  # outside the lock: a read still running may need it for its stub
            pool.shutdown(wait=True)
        with self._lock:
            for channel in self._raw_channels:
                channel.close()
            self._channels.clear()
            self._stubs.clear()
            self._raw_channels.clear()
