"""The gateway in-process (FastAPI's TestClient, so through the real HTTP stack of the app)
against real services started by the harness, and tokens to call it with."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from gateway.app import close, create_app
from gateway.auth import mint_token
from gateway.settings import GatewaySettings
from tests.harness import UNREACHABLE, RunningService

SECRET = "test-secret-of-the-gateway-at-least-32-bytes"


def gateway_settings(targets: Mapping[str, str], **overrides: str) -> GatewaySettings:
    environ = {
        "LOYALTY_ENV": "test",
        "LOYALTY_JWT_SECRET": SECRET,
        "PEER_DEADLINE_MS": "5000",
        "PEER_RETRY_ATTEMPTS": "2",
        "OTEL_TRACES_EXPORTER": "none",
        # Tests call as one subject far faster than any customer; the rate limit has its own tests.
        "GATEWAY_RATE_LIMIT_PER_SECOND": "0",
        "GATEWAY_OPERATOR_RATE_LIMIT_PER_SECOND": "0",
    }
    for name in ("wallet", "points", "promotions", "checkout"):
        environ[f"{name.upper()}_TARGET"] = targets.get(name, UNREACHABLE)
    environ.update(overrides)
    return GatewaySettings.from_env(environ)


@contextmanager
def gateway_client(services: Mapping[str, RunningService], **overrides: str) -> Iterator[TestClient]:
    app = create_app(gateway_settings({name: svc.target for name, svc in services.items()}, **overrides))
    try:
        with TestClient(app, raise_server_exceptions=True) as client:
            yield client
    finally:
        close(app)


def token(sub: str, *roles: str, ttl_seconds: int = 3600, secret: str = SECRET) -> str:
    return mint_token(secret, sub, roles or ("customer",), ttl_seconds=ttl_seconds)


def as_customer(sub: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token(sub, 'customer')}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def as_operator(sub: str = "op-1", key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token(sub, 'operator')}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def key() -> str:
    return f"k-{uuid.uuid4().hex}"


def customer_id() -> str:
    return f"cust-{uuid.uuid4().hex[:12]}"


def problem(response: Any, status: int, reason: str) -> dict[str, Any]:
    """Assert a problem+json answer with this status and reason; return its body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["reason"] == reason, body
    assert body["type"] == f"urn:loyalty:problem:{reason}"
    assert body["title"] and isinstance(body["detail"], str)
    return body
