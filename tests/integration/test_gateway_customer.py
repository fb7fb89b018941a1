"""Customer endpoints of the gateway through HTTP against the real Wallet, Points and Promotions
services: answers, idempotency, error mapping, and what bad input gets (never a 500)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response

from shared.clock import ManualClock
from tests.clients import PointsClient
from tests.harness import RunningService
from tests.integration.gateway_support import as_customer, customer_id, gateway_client, key, problem


@pytest.fixture
def api(platform: dict[str, RunningService]) -> Iterator[TestClient]:
    with gateway_client(platform) as client:
        yield client


def top_up(api: TestClient, customer: str, amount: int, card: str = "tok_ok", idem: str | None = None) -> Response:
    return api.post(
        "/v1/wallet/top-ups",
        json={"amount_minor": amount, "card_token": card},
        headers=as_customer(customer, idem or key()),
    )


def test_wallet_top_up_statement_and_yield(api: TestClient) -> None:
    cust = customer_id()
    problem(api.get("/v1/wallet", headers=as_customer(cust)), 404, "WALLET_NOT_FOUND")

    answer = api.post(
        "/v1/wallet/top-ups",
        json={"amount_minor": 5_000_000, "card_token": "tok_ok"},
        headers=as_customer(cust, "first-top-up"),
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["status"], body["amount_minor"], body["balance_minor"]) == ("SUCCEEDED", 5_000_000, 5_000_000)
    assert body["card_last4"] and "card_token" not in body

    wallet = api.get("/v1/wallet", headers=as_customer(cust)).json()
    assert (wallet["balance_minor"], wallet["available_minor"], wallet["held_minor"]) == (5_000_000, 5_000_000, 0)
    assert (wallet["currency"], wallet["customer_id"], wallet["status"]) == ("RUB", cust, "ACTIVE")
    assert wallet["mechanic"] == {
        "code": wallet["mechanic"]["code"],
        "name": wallet["mechanic"]["name"],
        "kind": "INTEREST",
        "apr_bps": 1200,
        "basis": "AVERAGE_DAILY",
        "cashback_tiers": [],
        "monthly_cap_points": None,
    }

    statement = api.get("/v1/wallet/statement", headers=as_customer(cust)).json()
    assert [(e["type"], e["amount_minor"], e["balance_after_minor"]) for e in statement["entries"]] == [
        ("TOP_UP", 5_000_000, 5_000_000)
    ]
    assert statement["entries"][0]["reference"] == body["top_up_id"]
    assert statement["next_page_token"] == ""

    projection = api.get("/v1/wallet/yield?amount_minor=5000000&months=12", headers=as_customer(cust)).json()
    assert [m["points"] for m in projection["months"]] == [500] * 12
    assert projection["total_points"] == 6000
    assert projection["mechanic"]["apr_bps"] == 1200


def test_a_top_up_replayed_with_its_key_is_the_same_top_up_and_another_body_is_a_conflict(api: TestClient) -> None:
    cust = customer_id()
    first = top_up(api, cust, 100_000, idem="same-key").json()
    again = top_up(api, cust, 100_000, idem="same-key").json()
    assert again == first
    assert api.get("/v1/wallet", headers=as_customer(cust)).json()["balance_minor"] == 100_000
    problem(top_up(api, cust, 200_000, idem="same-key"), 409, "IDEMPOTENCY_KEY_REUSED")
    assert api.get("/v1/wallet", headers=as_customer(cust)).json()["balance_minor"] == 100_000


def test_two_customers_may_choose_the_same_key_without_colliding(api: TestClient) -> None:
    a, b = customer_id(), customer_id()
    assert top_up(api, a, 100_000, idem="k1").status_code == 201
    assert top_up(api, b, 300_000, idem="k1").status_code == 201
    assert api.get("/v1/wallet", headers=as_customer(a)).json()["balance_minor"] == 100_000
    assert api.get("/v1/wallet", headers=as_customer(b)).json()["balance_minor"] == 300_000


def test_a_declined_card_is_402_and_changes_nothing(api: TestClient) -> None:
    cust = customer_id()
    top_up(api, cust, 100_000)
    problem(top_up(api, cust, 100_000, card="tok_declined"), 402, "CARD_DECLINED")
    assert api.get("/v1/wallet", headers=as_customer(cust)).json()["balance_minor"] == 100_000


def test_business_refusals_are_422_with_the_service_reason(api: TestClient) -> None:
    cust = customer_id()
    problem(top_up(api, cust, 100), 422, "TOP_UP_BELOW_MINIMUM")
    body = problem(top_up(api, cust, 100_000, card="4242424242424242"), 400, "CARD_NUMBER_NOT_ALLOWED")
    assert "4242424242424242" not in body["detail"]


def test_a_mutation_without_an_idempotency_key_is_400_and_changes_nothing(api: TestClient) -> None:
    cust = customer_id()
    answer = api.post(
        "/v1/wallet/top-ups", json={"amount_minor": 100_000, "card_token": "tok_ok"}, headers=as_customer(cust)
    )
    body = problem(answer, 400, "IDEMPOTENCY_KEY_REQUIRED")
    assert body["field_violations"] == [{"field": "Idempotency-Key", "description": "Field required"}]
    problem(api.get("/v1/wallet", headers=as_customer(cust)), 404, "WALLET_NOT_FOUND")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount_minor": 2**63, "card_token": "tok_ok"}, "amount_minor"),
        ({"amount_minor": 10**30, "card_token": "tok_ok"}, "amount_minor"),
        ({"amount_minor": -5, "card_token": "tok_ok"}, "amount_minor"),
        ({"amount_minor": 0, "card_token": "tok_ok"}, "amount_minor"),
        ({"amount_minor": "100000", "card_token": "tok_ok"}, "amount_minor"),
        ({"amount_minor": 100000.5, "card_token": "tok_ok"}, "amount_minor"),
        ({"amount_minor": 100000.0, "card_token": "tok_ok"}, "amount_minor"),
        ({"amount_minor": True, "card_token": "tok_ok"}, "amount_minor"),
        ({"amount_minor": None, "card_token": "tok_ok"}, "amount_minor"),
        ({"card_token": "tok_ok"}, "amount_minor"),
        ({"amount_minor": 100000, "card_token": ""}, "card_token"),
        ({"amount_minor": 100000, "card_token": 7}, "card_token"),
        ({"amount_minor": 100000, "card_token": "tok_ok", "currency": "USD"}, "currency"),
    ],
)
def test_bad_json_values_are_400_with_the_field_named(api: TestClient, body: object, field: str) -> None:
    cust = customer_id()
    answer = api.post("/v1/wallet/top-ups", json=body, headers=as_customer(cust, key()))
    assert field in [v["field"] for v in problem(answer, 400, "INVALID_ARGUMENT")["field_violations"]]
    problem(api.get("/v1/wallet", headers=as_customer(cust)), 404, "WALLET_NOT_FOUND")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"amount_minor": 100000, "card_token": "tok\\u0000ok"}', "card_token"),
        (b'{"amount_minor": 100000, "card_token": "tok\\ud800"}', "card_token"),
    ],
)
def test_text_no_service_can_store_is_400(api: TestClient, raw: bytes, field: str) -> None:
    headers = {**as_customer(customer_id(), key()), "Content-Type": "application/json"}
    body = problem(api.post("/v1/wallet/top-ups", content=raw, headers=headers), 400, "INVALID_ARGUMENT")
    assert [v["field"] for v in body["field_violations"]] == [field]


def test_path_and_query_parameters_with_nul_are_400(api: TestClient) -> None:
    body = problem(api.get("/v1/orders/abc%00def", headers=as_customer(customer_id())), 400, "INVALID_ARGUMENT")
    assert body["field_violations"][0]["field"] == "order_id"
    body = problem(
        api.get("/v1/wallet/statement?page_token=a%00b", headers=as_customer(customer_id())), 400, "INVALID_ARGUMENT"
    )
    assert body["field_violations"][0]["field"] == "page_token"


@pytest.mark.parametrize(
    "raw", [b"{", b"not json", b"[1, 2]", b"\xff\xfe", b'{"amount_minor": 1e999, "card_token": "tok_ok"}', b""]
)
def test_malformed_bodies_are_400(api: TestClient, raw: bytes) -> None:
    headers = {**as_customer(customer_id(), key()), "Content-Type": "application/json"}
    answer = api.post("/v1/wallet/top-ups", content=raw, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["reason"] in ("MALFORMED_JSON", "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    "query",
    [
        "amount_minor=abc&months=12",
        "amount_minor=9223372036854775808&months=12",
        "amount_minor=100&months=0",
        "amount_minor=100&months=121",
        "amount_minor=100&months=99999999999999999999",
        "months=12",
    ],
)
def test_bad_query_parameters_are_400(api: TestClient, query: str) -> None:
    problem(api.get(f"/v1/wallet/yield?{query}", headers=as_customer(customer_id())), 400, "INVALID_ARGUMENT")


def test_points_balance_and_history(api: TestClient, platform: dict[str, RunningService], clock: ManualClock) -> None:
    cust = customer_id()
    points = PointsClient(platform["points"].channel())
    points.credit(cust, 300, "CAMPAIGN", reference="campaign:spring", expires_at=clock.now() + timedelta(days=20))
    points.credit(cust, 120, "PURCHASE", reference="order-9", pending=True)

    balance = api.get("/v1/points", headers=as_customer(cust)).json()
    assert {k: balance[k] for k in ("available", "pending", "held")} == {"available": 300, "pending": 120, "held": 0}
    assert [e["points"] for e in balance["expiring"]] == [300]
    assert datetime.fromisoformat(balance["expiring"][0]["expires_at"]) == clock.now() + timedelta(days=20)
    assert api.get("/v1/points?expiring_within_days=10", headers=as_customer(cust)).json()["expiring"] == []

    history = api.get("/v1/points/history?page_size=1", headers=as_customer(cust)).json()
    assert len(history["entries"]) == 1 and history["next_page_token"]
    rest = api.get(
        "/v1/points/history", params={"page_token": history["next_page_token"]}, headers=as_customer(cust)
    ).json()
    entries = history["entries"] + rest["entries"]
    assert {(e["type"], e["source"], e["available_delta"], e["pending_delta"]) for e in entries} == {
        ("CREDITED", "CAMPAIGN", 300, 0),
        ("CREDITED_PENDING", "PURCHASE", 0, 120),
    }
    problem(api.get("/v1/points/history?page_token=garbage", headers=as_customer(cust)), 400, "INVALID_PAGE_TOKEN")


def test_a_customer_sees_only_their_own_wallet_and_points(api: TestClient, platform: dict[str, RunningService]) -> None:
    alice, bob = customer_id(), customer_id()
    top_up(api, alice, 700_000)
    PointsClient(platform["points"].channel()).credit(alice, 50)
    problem(api.get("/v1/wallet", headers=as_customer(bob)), 404, "WALLET_NOT_FOUND")
    assert api.get("/v1/points", headers=as_customer(bob)).json()["available"] == 0
    assert api.get("/v1/wallet/statement", headers=as_customer(bob)).status_code == 404
    # The customer comes only from the token: a customer_id in the query is not a parameter at all.
    problem(api.get(f"/v1/points?customer_id={alice}", headers=as_customer(bob)), 400, "UNKNOWN_QUERY_PARAMETER")


def test_the_request_id_is_echoed_and_generated_when_absent(api: TestClient) -> None:
    answer = api.get("/healthz", headers={"X-Request-Id": "trace-me-123"})
    assert (answer.status_code, answer.json(), answer.headers["x-request-id"]) == (
        200,
        {"status": "ok"},
        "trace-me-123",
    )
    assert len(api.get("/healthz").headers["x-request-id"]) == 32


def test_readyz_is_503_while_a_backend_is_down(platform: dict[str, RunningService]) -> None:
    with gateway_client(platform) as api:
        ready = api.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "backends": {name: "SERVING" for name in ("wallet", "points", "promotions", "checkout")},
        }
    down = {**platform}
    down.pop("promotions")
    with gateway_client(down) as api:  # promotions unreachable
        body = problem(api.get("/readyz"), 503, "BACKEND_NOT_SERVING")
        assert body["metadata"]["promotions"] == "UNAVAILABLE" and body["metadata"]["wallet"] == "SERVING"
        assert api.get("/healthz").status_code == 200


def test_an_unreachable_backend_is_503_with_retry_after(platform: dict[str, RunningService]) -> None:
    down = {name: svc for name, svc in platform.items() if name != "wallet"}
    with gateway_client(down, PEER_DEADLINE_MS="500") as api:
        answer = api.get("/v1/wallet", headers=as_customer(customer_id()))
        problem(answer, 503, "UNAVAILABLE")
        assert answer.headers["retry-after"] == "1"


def test_unknown_routes_and_methods_are_problems(api: TestClient) -> None:
    problem(api.get("/v1/nothing-here"), 404, "ROUTE_NOT_FOUND")
    problem(api.delete("/v1/wallet", headers=as_customer(customer_id())), 405, "METHOD_NOT_ALLOWED")


def test_times_are_rfc3339_with_an_offset(api: TestClient) -> None:
    cust = customer_id()
    top_up(api, cust, 100_000)
    created = api.get("/v1/wallet/statement", headers=as_customer(cust)).json()["entries"][0]["created_at"]
    assert datetime.fromisoformat(created).tzinfo is not None
    assert datetime.fromisoformat(created).astimezone(UTC).year >= 2020
