"""The customer journey through the gateway against the real Checkout, Wallet, Points and
Promotions services: an operator fills the catalogue, the customer tops up, quotes, orders with
points, cancels, orders again by card, the operator delivers, the customer returns part of it.
Every balance is read back through the HTTP API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.clock import ManualClock
from tests.clients import eventually
from tests.harness import RunningService
from tests.integration.gateway_support import as_customer, as_operator, customer_id, gateway_client, key, problem

# sku: (title, category, price in kopecks)
CATALOGUE = {
    "kettle": ("Kettle", "appliances", 50_000),  # 500 RUB: at most 499 points a unit
    "soap": ("Soap", "household", 9_950),  # 99.50 RUB: at most 98 points a unit
    "gift": ("Gift card 1000", "gift-cards", 100_000),  # points cannot pay for it
}


@pytest.fixture
def api(platform: dict[str, RunningService]) -> Iterator[TestClient]:
    with gateway_client(platform) as client:
        for sku, (title, category, price) in CATALOGUE.items():
            put = client.put(
                f"/v1/admin/catalog/{sku}",
                json={"title": title, "category": category, "price_minor": price},
                headers=as_operator(),
            )
            assert put.status_code == 201, put.text
        yield client


def wallet_balance(api: TestClient, customer: str) -> int:
    value: int = api.get("/v1/wallet", headers=as_customer(customer)).json()["balance_minor"]
    return value


def points(api: TestClient, customer: str) -> tuple[int, int, int]:
    body = api.get("/v1/points", headers=as_customer(customer)).json()
    return body["available"], body["pending"], body["held"]


def fund(api: TestClient, customer: str, money_minor: int, bonus_points: int) -> None:
    top = api.post(
        "/v1/wallet/top-ups",
        json={"amount_minor": money_minor, "card_token": "tok_ok"},
        headers=as_customer(customer, key()),
    )
    assert top.status_code == 201, top.text
    adjust = api.post(
        f"/v1/admin/customers/{customer}/points-adjustments",
        json={"points": bonus_points, "reason": "welcome"},
        headers=as_operator(key=key()),
    )
    assert adjust.status_code == 201, adjust.text


def order(api: TestClient, customer: str, idem: str, **body: Any) -> Any:
    return api.post("/v1/orders", json=body, headers=as_customer(customer, idem))


def settled(check: Callable[[], None], seconds: float = 20) -> None:
    """Wait until `check` passes (the outboxes deliver in the background); its last failure
    otherwise."""

    def passes() -> bool:
        try:
            check()
        except AssertionError:
            return False
        return True

    if not eventually(passes, seconds):
        check()


def test_catalogue_upsert_creates_then_replaces(api: TestClient) -> None:
    again = api.put(
        "/v1/admin/catalog/kettle",
        json={"title": "Kettle 2", "category": "appliances", "price_minor": 55_000},
        headers=as_operator(),
    )
    assert again.status_code == 200, again.text
    assert again.json()["created"] is False
    assert (again.json()["product"]["title"], again.json()["product"]["price_minor"]) == ("Kettle 2", 55_000)
    gift = api.put(
        "/v1/admin/catalog/gift",
        json={"title": "Gift card", "category": "gift-cards", "price_minor": 100_000},
        headers=as_operator(),
    )
    assert gift.json()["product"]["points_excluded"] is True
    # Found by the fuzz test: a NUL reached PostgreSQL through Checkout and came back as a 502.
    nul = {"title": "a\u0000b", "category": "toys", "price_minor": 100}
    body = problem(api.put("/v1/admin/catalog/x", json=nul, headers=as_operator()), 400, "INVALID_ARGUMENT")
    assert body["field_violations"][0]["field"] == "title"
    bad = {"title": "X", "category": "toys", "price_minor": 0}
    problem(api.put("/v1/admin/catalog/x", json=bad, headers=as_operator()), 400, "INVALID_ARGUMENT")
    problem(
        api.put("/v1/admin/catalog/x", json={**bad, "price_minor": 100}, headers=as_customer(customer_id())),
        403,
        "OPERATOR_ROLE_REQUIRED",
    )


def test_the_catalogue_can_be_browsed(api: TestClient) -> None:
    headers = as_customer(customer_id())
    first = api.get("/v1/catalog?page_size=2", headers=headers).json()
    rest = api.get("/v1/catalog", params={"page_token": first["next_page_token"]}, headers=headers).json()
    assert [p["sku"] for p in first["products"] + rest["products"]] == sorted(CATALOGUE)
    assert rest["next_page_token"] == ""
    gifts = api.get("/v1/catalog?category=gift-cards", headers=headers).json()["products"]
    assert [(p["sku"], p["price_minor"], p["points_excluded"]) for p in gifts] == [("gift", 100_000, True)]
    soap = api.get("/v1/catalog/soap", headers=headers).json()
    assert (soap["title"], soap["category"], soap["price_minor"]) == ("Soap", "household", 9_950)
    problem(api.get("/v1/catalog/unicorn", headers=headers), 404, "PRODUCT_NOT_FOUND")


def test_quote_applies_the_points_cap_and_explains_the_points_to_earn(api: TestClient) -> None:
    cust = customer_id()
    fund(api, cust, 1_000_000, 5_000)
    cart = {"lines": [{"sku": "kettle", "quantity": 3}, {"sku": "soap", "quantity": 2}], "points_to_use": 500}
    answer = api.post("/v1/checkout/quote", json=cart, headers=as_customer(cust))
    assert answer.status_code == 200, answer.text
    quote = answer.json()
    total = 3 * 50_000 + 2 * 9_950
    assert (quote["total_minor"], quote["points_applied"], quote["money_due_minor"]) == (total, 500, total - 500 * 100)
    kettle, soap = quote["lines"]
    assert (kettle["sku"], kettle["quantity"], kettle["unit_price_minor"], kettle["amount_minor"]) == (
        "kettle",
        3,
        50_000,
        150_000,
    )
    assert (kettle["max_points"], soap["max_points"]) == (1_497, 196)
    assert quote["max_points"] == min(1_497 + 196, total * 99 // 100 // 100, 5_000)
    assert kettle["points_applied"] + soap["points_applied"] == 500
    assert quote["points_to_earn"] == sum(a["points"] for a in quote["explanation"])
    assert quote["points_to_earn"] == kettle["points_to_earn"] + soap["points_to_earn"]

    too_many = {**cart, "points_to_use": quote["max_points"] + 1}
    problem(api.post("/v1/checkout/quote", json=too_many, headers=as_customer(cust)), 422, "POINTS_EXCEED_LIMIT")
    unknown = {"lines": [{"sku": "unicorn", "quantity": 1}]}
    problem(api.post("/v1/checkout/quote", json=unknown, headers=as_customer(cust)), 404, "PRODUCT_NOT_FOUND")
    gift = api.post("/v1/checkout/quote", json={"lines": [{"sku": "gift", "quantity": 1}]}, headers=as_customer(cust))
    assert gift.json()["max_points"] == 0
    bad = {"lines": [{"sku": "kettle", "quantity": 0}]}
    problem(api.post("/v1/checkout/quote", json=bad, headers=as_customer(cust)), 400, "INVALID_ARGUMENT")
    huge = {"lines": [{"sku": "kettle", "quantity": 2**63}]}
    problem(api.post("/v1/checkout/quote", json=huge, headers=as_customer(cust)), 400, "INVALID_ARGUMENT")


def test_the_customer_journey_order_cancel_reorder_deliver_return(api: TestClient, clock: ManualClock) -> None:
    cust = customer_id()
    fund(api, cust, 1_000_000, 2_000)  # 10,000 RUB and 2,000 points
    cart = [{"sku": "kettle", "quantity": 3}, {"sku": "soap", "quantity": 2}]
    total = 3 * 50_000 + 2 * 9_950

    # 1. An order paid with 500 points and wallet money.
    placed = order(api, cust, "order-1", lines=cart, points_to_use=500, payment_method="WALLET")
    assert placed.status_code == 201, placed.text
    first = placed.json()
    money_paid = total - 500 * 100
    assert (first["status"], first["total_minor"], first["points_applied"], first["money_paid_minor"]) == (
        "PAID",
        total,
        500,
        money_paid,
    )
    assert first["payment_method"] == "WALLET" and first["customer_id"] == cust
    earned = first["points_to_earn"]
    assert earned == sum(line["points_to_earn"] for line in first["lines"]) > 0
    assert wallet_balance(api, cust) == 1_000_000 - money_paid
    settled(lambda: _assert_equal(points(api, cust), (1_500, earned, 0)))

    # The key replays the same order; with another cart it is a conflict.
    assert order(api, cust, "order-1", lines=cart, points_to_use=500, payment_method="WALLET").json() == first
    other_cart = order(api, cust, "order-1", lines=cart[:1], points_to_use=500, payment_method="WALLET")
    problem(other_cart, 409, "IDEMPOTENCY_KEY_REUSED")

    # Listed and readable by its customer; to anyone else it does not exist.
    listed = api.get("/v1/orders", headers=as_customer(cust)).json()
    assert [o["order_id"] for o in listed["orders"]] == [first["order_id"]]
    assert api.get(f"/v1/orders/{first['order_id']}", headers=as_customer(cust)).json() == first
    stranger = customer_id()
    problem(api.get(f"/v1/orders/{first['order_id']}", headers=as_customer(stranger)), 404, "ORDER_NOT_FOUND")
    problem(
        api.post(f"/v1/orders/{first['order_id']}/cancel", headers=as_customer(stranger, key())),
        404,
        "ORDER_NOT_FOUND",
    )
    problem(
        api.post(
            f"/v1/orders/{first['order_id']}/returns",
            json={"lines": [{"sku": "soap", "quantity": 1}]},
            headers=as_customer(stranger, key()),
        ),
        404,
        "ORDER_NOT_FOUND",
    )
    assert api.get("/v1/orders", headers=as_customer(stranger)).json()["orders"] == []

    # 2. Cancelled before delivery: money and points come back, the earned points are cancelled.
    cancelled = api.post(
        f"/v1/orders/{first['order_id']}/cancel", json={"reason": "changed my mind"}, headers=as_customer(cust, key())
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED"
    assert cancelled.json()["money_refunded_minor"] == money_paid
    assert wallet_balance(api, cust) == 1_000_000
    settled(lambda: _assert_equal(points(api, cust), (2_000, 0, 0)))
    problem(
        api.post(f"/v1/orders/{first['order_id']}/cancel", headers=as_customer(cust, key())),
        422,
        "ORDER_ALREADY_CANCELLED",
    )

    # 3. Ordered again, by card, with points; delivered by an operator; one kettle returned.
    placed = order(api, cust, "order-2", lines=cart, points_to_use=989, payment_method="CARD", card_token="tok_ok")
    assert placed.status_code == 201, placed.text
    second = placed.json()
    assert (second["status"], second["payment_method"], second["card_last4"]) == ("PAID", "CARD", "4242")
    assert wallet_balance(api, cust) == 1_000_000  # the card paid
    earned = second["points_to_earn"]
    settled(lambda: _assert_equal(points(api, cust), (2_000 - 989, earned, 0)))
    problem(
        api.post(
            f"/v1/orders/{second['order_id']}/returns",
            json={"lines": [{"sku": "kettle", "quantity": 1}]},
            headers=as_customer(cust, key()),
        ),
        422,
        "ORDER_NOT_DELIVERED",
    )

    delivered = api.post(f"/v1/admin/orders/{second['order_id']}/deliver", headers=as_operator(key=key()))
    assert delivered.status_code == 200, delivered.text
    body = delivered.json()
    assert body["status"] == "DELIVERED"
    delivered_at = datetime.fromisoformat(body["delivered_at"])
    assert datetime.fromisoformat(body["return_window_ends_at"]) - delivered_at == timedelta(days=14)
    problem(
        api.post(f"/v1/admin/orders/{second['order_id']}/deliver", headers=as_operator(key=key())),
        422,
        "ORDER_ALREADY_DELIVERED",
    )
    problem(
        api.post(f"/v1/orders/{second['order_id']}/cancel", headers=as_customer(cust, key())),
        422,
        "ORDER_ALREADY_DELIVERED",
    )

    clock.advance(timedelta(days=3))
    kettle_line = next(line for line in second["lines"] if line["sku"] == "kettle")
    returned = api.post(
        f"/v1/orders/{second['order_id']}/returns",
        json={"lines": [{"sku": "kettle", "quantity": 1}], "reason": "leaks"},
        headers=as_customer(cust, "return-1"),
    )
    assert returned.status_code == 201, returned.text
    made, after = returned.json()["order_return"], returned.json()["order"]
    assert made["status"] == "COMPLETED" and made["reason"] == "leaks"
    assert [(line["sku"], line["quantity"]) for line in made["lines"]] == [("kettle", 1)]
    assert made["money_refunded_minor"] + made["points_returned"] * 100 == 50_000
    assert 0 < made["points_returned"] <= kettle_line["points_applied"]
    assert after["status"] == "PARTIALLY_RETURNED"
    assert [line["returned_quantity"] for line in after["lines"] if line["sku"] == "kettle"] == [1]
    assert after["returns"] == [made]
    settled(
        lambda: _assert_equal(
            points(api, cust), (2_000 - 989 + made["points_returned"], earned - made["points_reversed"], 0)
        )
    )
    assert wallet_balance(api, cust) == 1_000_000  # the card got its refund, not the wallet
    replay = api.post(
        f"/v1/orders/{second['order_id']}/returns",
        json={"lines": [{"sku": "kettle", "quantity": 1}], "reason": "leaks"},
        headers=as_customer(cust, "return-1"),
    )
    assert replay.json()["order_return"] == made
    too_many = api.post(
        f"/v1/orders/{second['order_id']}/returns",
        json={"lines": [{"sku": "kettle", "quantity": 3}]},
        headers=as_customer(cust, key()),
    )
    problem(too_many, 422, "RETURN_QUANTITY_EXCEEDED")

    history = api.get("/v1/points/history?page_size=1000", headers=as_customer(cust)).json()["entries"]
    assert {"SPENT", "RETURNED", "PENDING_CANCELLED"} <= {e["type"] for e in history}
    statement = api.get("/v1/wallet/statement", headers=as_customer(cust)).json()["entries"]
    assert [e["type"] for e in statement] == ["REFUND", "PAYMENT", "TOP_UP"]


def test_order_refusals_keep_everything_as_it_was(api: TestClient) -> None:
    cust = customer_id()
    fund(api, cust, 100_000, 100)  # 1,000 RUB and 100 points
    big = [{"sku": "kettle", "quantity": 3}]  # 1,500 RUB
    problem(order(api, cust, key(), lines=big, payment_method="WALLET"), 422, "INSUFFICIENT_FUNDS")
    declined = order(api, cust, key(), lines=big, payment_method="CARD", card_token="tok_declined")
    body = problem(declined, 402, "CARD_DECLINED")
    assert body["metadata"].get("order_id")
    problem(
        order(api, cust, key(), lines=big[:1], points_to_use=101, payment_method="WALLET"), 422, "POINTS_EXCEED_LIMIT"
    )
    problem(order(api, cust, key(), lines=big, payment_method="PIGEON"), 400, "INVALID_ARGUMENT")
    problem(
        api.post("/v1/orders", json={"lines": big, "payment_method": "WALLET"}, headers=as_customer(cust)),
        400,
        "IDEMPOTENCY_KEY_REQUIRED",
    )
    assert wallet_balance(api, cust) == 100_000
    assert points(api, cust) == (100, 0, 0)
    failed = [o for o in api.get("/v1/orders", headers=as_customer(cust)).json()["orders"] if o["status"] == "FAILED"]
    assert "CARD_DECLINED" in {o["failure_reason"] for o in failed} <= {"CARD_DECLINED", "INSUFFICIENT_FUNDS"}
    problem(api.get("/v1/orders/no-such-order", headers=as_customer(cust)), 404, "ORDER_NOT_FOUND")
    problem(api.post("/v1/admin/orders/no-such-order/deliver", headers=as_operator(key=key())), 404, "ORDER_NOT_FOUND")


def _assert_equal(actual: object, expected: object) -> None:
    assert actual == expected, (actual, expected)
