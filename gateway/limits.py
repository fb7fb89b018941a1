"""Request limits of the gateway: the size of a request body and the rate of requests.

**Body size.** `BodyLimit` is an ASGI middleware: a request whose `Content-Length` is over the
limit is answered 413 `BODY_TOO_LARGE` before a byte of its body is read; a body without one
(chunked) is counted as it streams in and refused as soon as it passes the limit, so the gateway
never holds more than the limit. The CSV import has its own, larger limit (it is streamed to the
service, never held whole).

**Rate.** `RateLimiter` keeps a token bucket per key: the token's subject for customers, a
separate bucket (and settings) for operators, and the client's IP address for requests without a
valid token (so guessing tokens is limited too). An empty bucket is 429 `RATE_LIMITED` with
`Retry-After`. The buckets live in the gateway process: with N replicas a customer gets N times
the rate at most (each replica limits on its own). The clock is injected, so tests move time
without sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.problems import problem_response
from shared.errors import ResourceExhausted

BODY_TOO_LARGE = "BODY_TOO_LARGE"


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit; answered 413 by the problem
    handlers (an HTTPException, so FastAPI's body parsing passes it on instead of making it a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")
        self.limit = limit


def too_large(limit: int) -> JSONResponse:
    return problem_response(413, BODY_TOO_LARGE, f"the request body is larger than {limit} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, *, limit: int, limits_by_path: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.limits_by_path = dict(limits_by_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits_by_path.get(scope["path"], self.limit)
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # h11 refuses a malformed Content-Length before we see it
                if declared > limit:
                    await too_large(limit)(scope, receive, send)
                    return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if started:
                raise
            await too_large(limit)(scope, receive, send)


@dataclass(frozen=True)
class Rate:
    """`per_second` tokens a second, at most `burst` at once; `per_second` 0 means no limit."""

    per_second: int
    burst: int

    @property
    def unlimited(self) -> bool:
        return self.per_second <= 0


class RateLimiter:
    """Token buckets by key, refilled by `clock` (seconds, monotonic). Thread-safe: the auth
    dependency that calls it runs in FastAPI's thread pool."""

    MAX_KEYS = 100_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, rate: Rate) -> None:
        """Spend one token of `key`'s bucket, or raise `RATE_LIMITED` with the wait in metadata."""
        if rate.unlimited:
            return
        burst = max(rate.burst, 1)
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.pop(key, (float(burst), now))
            tokens = min(float(burst), tokens + (now - at) * rate.per_second)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                self._evict()
                return
            self._buckets[key] = (tokens, now)
            self._evict()
        retry_after = max(1, math.ceil((1 - tokens) / rate.per_second))
        raise ResourceExhausted(
            "RATE_LIMITED",
            f"too many requests: at most {rate.per_second} a second (bursts of {burst}); retry in {retry_after} s",
            metadata={"retry_after_seconds": str(retry_after)},
        )

    def _evict(self) -> None:
        while len(self._buckets) > self.MAX_KEYS:
            self._buckets.popitem(last=False)  # the least recently used bucket
