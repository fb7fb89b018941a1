"""The gateway's request limits: body size (413 before or while the body is read) and the rate
per customer, per operator and per client IP (429 with Retry-After), on an injected clock.

No service is running: the limits answer before any backend is called, and a request that gets
past them meets an unreachable backend (503), which is all these tests need to tell the two apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import close, create_app
from gateway.limits import BodyLimit, Rate, RateLimiter
from shared.errors import ResourceExhausted
from tests.integration.gateway_support import gateway_settings, problem, token


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(clock: FakeClock | None = None, **env: str) -> TestClient:
    settings = gateway_settings({}, **env)
    app = create_app(settings, rate_clock=clock or FakeClock())
    return TestClient(app)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limited(clock: FakeClock) -> Iterator[TestClient]:
    api = client(
        clock,
        GATEWAY_RATE_LIMIT_PER_SECOND="2",
        GATEWAY_RATE_LIMIT_BURST="3",
        GATEWAY_OPERATOR_RATE_LIMIT_PER_SECOND="5",
        GATEWAY_OPERATOR_RATE_LIMIT_BURST="5",
    )
    try:
        yield api
    finally:
        close(api.app)  # type: ignore[arg-type]


def bearer(sub: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, *roles)}"}


# -- body size -----------------------------------------------------------------------------------


def test_a_declared_body_over_the_limit_is_413_before_it_is_read() -> None:
    sent: list[MutableMapping[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the application must not run")

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body must not be read")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/orders", "headers": [(b"content-length", b"2000")]}
    asyncio.run(BodyLimit(app, limit=1000)(scope, receive, send))
    assert sent[0]["status"] == 413
    assert b"BODY_TOO_LARGE" in sent[1]["body"]


def test_a_streamed_body_is_refused_as_soon_as_it_passes_the_limit() -> None:
    chunks = [b"x" * 400] * 10
    read: list[int] = []
    sent: list[MutableMapping[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            read.append(len(message["body"]))
            if not message.get("more_body"):
                break

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/orders", "headers": []}
    asyncio.run(BodyLimit(app, limit=1000)(scope, receive, send))
    assert sent[0]["status"] == 413 and sum(read) <= 1000 and len(chunks) == 7  # 3 of 10 chunks read


def test_oversized_bodies_are_413_problems_over_http_and_the_import_has_its_own_limit() -> None:
    api = client(GATEWAY_MAX_BODY_BYTES="1000", GATEWAY_MAX_IMPORT_BODY_BYTES="5000")
    try:
        customer, operator = bearer("c-1", "customer"), bearer("op", "operator")
        body = {"lines": [{"sku": "x" * 2000, "quantity": 1}], "payment_method": "WALLET"}
        answer = api.post("/v1/orders", json=body, headers={**customer, "Idempotency-Key": "k1"})
        problem(answer, 413, "BODY_TOO_LARGE")

        def chunked() -> Iterator[bytes]:
            yield from [b"{" + b" " * 600, b" " * 600 + b"}"]

        answer = api.post(
            "/v1/checkout/quote", content=chunked(), headers={**customer, "Content-Type": "application/json"}
        )
        problem(answer, 413, "BODY_TOO_LARGE")
        header = (
            "customer_id,as_of,average_order_value_minor,order_count,lookback_days,"
            "uses_financial_products,takes_part_in_points_activities\n"
        )
        row = "c-1,2026-01-31T00:00:00+03:00,150000,3,180,true,false\n"
        csv_headers = {**operator, "Content-Type": "text/csv"}
        # Under its own limit the import is read: a body over the general limit gets as far as the
        # header check (a bad header is 400; a good one would call the service).
        small = api.post("/v1/admin/customer-features/import", content="x,y\n" + row * 20, headers=csv_headers)
        problem(small, 400, "INVALID_CSV_HEADER")
        big = api.post("/v1/admin/customer-features/import", content=header + row * 200, headers=csv_headers)
        problem(big, 413, "BODY_TOO_LARGE")
    finally:
        close(api.app)  # type: ignore[arg-type]


# -- rate ----------------------------------------------------------------------------------------


def test_each_customer_has_a_bucket_and_an_empty_one_is_429_with_retry_after(
    limited: TestClient, clock: FakeClock
) -> None:
    anna, boris = bearer("anna", "customer"), bearer("boris", "customer")
    assert [limited.get("/v1/wallet", headers=anna).status_code for _ in range(3)] == [503] * 3
    refused = problem(limited.get("/v1/wallet", headers=anna), 429, "RATE_LIMITED")
    assert refused["metadata"] == {"retry_after_seconds": "1"}
    assert limited.get("/v1/wallet", headers=anna).headers["retry-after"] == "1"
    assert limited.get("/v1/wallet", headers=boris).status_code == 503  # another customer: own bucket
    clock.now += 0.5  # one token back at 2 a second
    assert limited.get("/v1/wallet", headers=anna).status_code == 503
    assert limited.get("/v1/wallet", headers=anna).status_code == 429
    clock.now += 60  # refilled to the burst, not beyond
    assert [limited.get("/v1/wallet", headers=anna).status_code for _ in range(4)] == [503, 503, 503, 429]


def test_operators_have_their_own_limit_and_probes_none(limited: TestClient) -> None:
    operator = bearer("op-1", "operator")
    statuses = [limited.get("/v1/admin/campaigns", headers=operator).status_code for _ in range(6)]
    assert statuses == [503] * 5 + [429]
    assert limited.get("/v1/wallet", headers=bearer("op-1", "customer")).status_code == 503  # not shared
    assert all(limited.get("/healthz").status_code == 200 for _ in range(20))


def test_requests_without_a_valid_token_are_limited_by_client_ip(limited: TestClient) -> None:
    garbage = {"Authorization": "Bearer not.a.token"}
    assert [limited.get("/v1/wallet", headers=garbage).status_code for _ in range(3)] == [401] * 3
    problem(limited.get("/v1/wallet"), 429, "RATE_LIMITED")  # no token at all: the same IP bucket
    assert limited.get("/v1/wallet", headers=bearer("anna", "customer")).status_code == 503


def test_the_bucket_arithmetic() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    rate = Rate(per_second=1, burst=2)
    limiter.take("k", rate)
    limiter.take("k", rate)
    with pytest.raises(ResourceExhausted) as caught:
        limiter.take("k", rate)
    assert caught.value.metadata["retry_after_seconds"] == "1"
    clock.now += 0.25
    with pytest.raises(ResourceExhausted):
        limiter.take("k", rate)
    for _ in range(1000):
        limiter.take("off", Rate(per_second=0, burst=0))  # 0: no limit
    slow = Rate(per_second=1, burst=1)
    limiter.take("slow", slow)
    with pytest.raises(ResourceExhausted) as caught:
        limiter.take("slow", slow)
    assert caught.value.metadata["retry_after_seconds"] == "1"


def test_the_limiter_forgets_the_least_recently_used_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RateLimiter, "MAX_KEYS", 3)
    limiter = RateLimiter(FakeClock())
    for key in "abcd":
        limiter.take(key, Rate(1, 1))
    limiter.take("a", Rate(1, 1))  # forgotten, so a fresh bucket: no 429
