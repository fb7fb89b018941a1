"""Authentication and authorisation through HTTP, on every operation the OpenAPI document lists."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator

import jwt
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from tests.harness import RunningService
from tests.integration.gateway_support import (
    SECRET,
    as_customer,
    as_operator,
    customer_id,
    gateway_client,
    gateway_settings,
    key,
    problem,
    token,
)

PROBES = {"/healthz", "/readyz"}


def operations() -> list[tuple[str, str]]:
    """Every (method, path) of the API, path parameters filled in."""
    schema = create_app(gateway_settings({})).openapi()
    found = []
    for path, item in schema["paths"].items():
        for method in item:
            found.append((method.upper(), re.sub(r"\{[^}]+\}", "x1", path)))
    return sorted(found)


OPERATIONS = operations()
ADMIN = [op for op in OPERATIONS if op[1].startswith("/v1/admin/")]
ANY_ROLE = [op for op in OPERATIONS if op[1].startswith("/v1/catalog")]  # browsing the catalogue
CUSTOMER = [op for op in OPERATIONS if op[1].startswith("/v1/") and op not in ADMIN and op not in ANY_ROLE]


@pytest.fixture
def api(platform: dict[str, RunningService]) -> Iterator[TestClient]:
    with gateway_client(platform) as client:
        yield client


def call(api: TestClient, method: str, path: str, headers: dict[str, str]) -> object:
    return api.request(method, path, headers={**headers, "Idempotency-Key": key()}, json={})


def b64(part: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def test_every_operation_but_the_probes_needs_a_token(api: TestClient) -> None:
    assert len(ADMIN) >= 15 and len(CUSTOMER) >= 11
    for method, path in OPERATIONS:
        if path in PROBES:
            continue
        answer = call(api, method, path, {})
        problem(answer, 401, "TOKEN_MISSING")
        assert answer.headers["www-authenticate"] == "Bearer"  # type: ignore[attr-defined]


NOW = int(time.time())  # at import, perhaps long before the tests run (xdist collects first): a day of slack
CLAIMS = {"sub": "c", "roles": ["customer", "operator"], "exp": NOW + 86_400}
BAD_TOKENS = {
    "expired": (
        jwt.encode({"sub": "c", "roles": ["customer", "operator"], "exp": NOW - 3600}, SECRET),
        "TOKEN_EXPIRED",
    ),
    "alg none": (
        f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(CLAIMS)}.",
        "TOKEN_INVALID",
    ),
    "wrong key": (
        jwt.encode({"sub": "c", "roles": ["customer", "operator"], "exp": NOW + 86_400}, "x" * 40),
        "TOKEN_INVALID",
    ),
    "malformed": ("not-a-jwt", "TOKEN_INVALID"),
    "tampered": (token("c", "customer")[:-4] + "AAAA", "TOKEN_INVALID"),
    "no exp": (jwt.encode({"sub": "c", "roles": ["customer", "operator"]}, SECRET), "TOKEN_INVALID"),
    "no roles": (jwt.encode({"sub": "c", "exp": NOW + 86_400}, SECRET), "TOKEN_INVALID"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_tokens_are_401_on_customer_and_operator_endpoints(api: TestClient, case: str) -> None:
    value, reason = BAD_TOKENS[case]
    for method, path in [("GET", "/v1/wallet"), ("POST", "/v1/orders"), ("GET", "/v1/admin/earning-rules")]:
        answer = call(api, method, path, bearer(value))
        problem(answer, 401, reason)
        assert "invalid_token" in answer.headers["www-authenticate"]  # type: ignore[attr-defined]


def test_a_non_bearer_authorization_is_401(api: TestClient) -> None:
    problem(api.get("/v1/points", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401, "TOKEN_MISSING")


def test_a_customer_token_on_every_operator_endpoint_is_403(api: TestClient) -> None:
    for method, path in ADMIN:
        problem(call(api, method, path, as_customer(customer_id())), 403, "OPERATOR_ROLE_REQUIRED")


def test_an_operator_token_on_customer_endpoints_is_403(api: TestClient) -> None:
    for method, path in CUSTOMER:
        problem(call(api, method, path, as_operator()), 403, "CUSTOMER_ROLE_REQUIRED")


def test_the_catalogue_takes_any_valid_token_but_not_none(api: TestClient) -> None:
    assert ANY_ROLE == [("GET", "/v1/catalog"), ("GET", "/v1/catalog/x1")]
    for headers in (as_customer(customer_id()), as_operator(), bearer(token("someone", "auditor"))):
        assert api.get("/v1/catalog", headers=headers).status_code == 200
    problem(api.get("/v1/catalog"), 401, "TOKEN_MISSING")


def test_the_right_role_gets_through(api: TestClient) -> None:
    assert api.get("/v1/points", headers=as_customer(customer_id())).status_code == 200
    assert api.get("/v1/admin/campaigns", headers=as_operator()).status_code == 200
    both = bearer(token("staff-1", "customer", "operator"))
    assert api.get("/v1/points", headers=both).status_code == 200
    assert api.get("/v1/admin/campaigns", headers=both).status_code == 200
