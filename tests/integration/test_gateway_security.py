"""Security through the gateway, against one platform of the four real services (issue 10):

- one customer probing another's orders, wallet and points gets 404 `ORDER_NOT_FOUND` exactly as
  for an order that does not exist (never 403, nothing that tells the two apart), and nothing
  changes; no customer route takes a customer id from the request;
- an end-to-end journey over every route that takes a card token or a bearer token (top-ups
  approved, declined, timed out and refused for a card number; orders paid by wallet, points and
  card; cancel, deliver, return; operator writes, jobs and the CSV import; bad tokens), with every
  log line (JSON, as shared.logs formats it, root at DEBUG) and every span (an in-memory exporter
  on the gateway and the four services) captured; then none of them may hold a card number (13 to
  19 digits passing Luhn), a card token used, a JWT, a JWT signature, the JWT secret or a
  database password.

The capture is this module's (a dedicated journey), not the whole suite's.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.engine import make_url

from gateway.app import close, create_app
from shared.clock import ManualClock
from shared.logs import JsonFormatter
from shared.telemetry import Telemetry
from tests.harness import Databases, Harness, RunningService
from tests.harness import test_database_url as database_url_under_test
from tests.integration.gateway_support import SECRET, gateway_settings, key, problem, token

SERVICES = ("points", "promotions", "wallet", "checkout")
CARD_TOKENS = ("tok_ok", "tok_mastercard", "tok_declined", "tok_timeout")
PANS = ("4111111111111111", "5500 0000 0000 0004", "4242-4242-4242-4242")


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter("capture"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class Secured:
    api: TestClient
    services: dict[str, RunningService]
    spans: InMemorySpanExporter
    logs: Capture
    tokens: list[str] = field(default_factory=list)

    def bearer(self, sub: str, *roles: str, key_: str | None = None) -> dict[str, str]:
        value = token(sub, *roles)
        self.tokens.append(value)
        headers = {"Authorization": f"Bearer {value}"}
        if key_ is not None:
            headers["Idempotency-Key"] = key_
        return headers

    def customer(self, sub: str, key_: str | None = None) -> dict[str, str]:
        return self.bearer(sub, "customer", key_=key_)

    def operator(self, key_: str | None = None) -> dict[str, str]:
        return self.bearer("op-security", "operator", key_=key_)

    def deliver_outboxes(self) -> None:
        for _ in range(10):
            if not sum(svc.app.runtime.relay.deliver_due() for svc in self.services.values()):
                return


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    databases = Databases(Path(tmp_path_factory.mktemp("security")))
    harness = Harness(databases, ManualClock())
    spans = InMemorySpanExporter()
    capture = Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    app = None

    def telemetry(name: str) -> Telemetry:
        return Telemetry(name, environ={}, processors=(SimpleSpanProcessor(spans),))

    try:
        services = {name: harness.start(name, telemetry=telemetry(name), background_relay=False) for name in SERVICES}
        app = create_app(
            gateway_settings({name: svc.target for name, svc in services.items()}), telemetry=telemetry("gateway")
        )
        with TestClient(app) as api:
            yield Secured(api, services, spans, capture)
    finally:
        root.removeHandler(capture)
        root.setLevel(level)
        if app is not None:
            close(app)
        harness.close()
        databases.drop_all()


def created(answer: Any, status: int = 201) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    return body


def put_catalogue(s: Secured) -> None:
    for sku, category, price in (("kettle", "appliances", 50_000), ("soap", "household", 9_950)):
        body = {"title": sku.title(), "category": category, "price_minor": price}
        assert s.api.put(f"/v1/admin/catalog/{sku}", json=body, headers=s.operator()).status_code in (200, 201)


def top_up(s: Secured, customer: str, amount: int, card_token: str) -> Any:
    body = {"amount_minor": amount, "card_token": card_token}
    return s.api.post("/v1/wallet/top-ups", json=body, headers=s.customer(customer, key()))


def place(s: Secured, customer: str, **body: Any) -> Any:
    body.setdefault("lines", [{"sku": "kettle", "quantity": 1}])
    return s.api.post("/v1/orders", json=body, headers=s.customer(customer, key()))


# -- probing --------------------------------------------------------------------------------


def customer_view(s: Secured, customer: str) -> dict[str, Any]:
    headers = s.customer(customer)
    return {
        path: s.api.get(path, headers=headers).json()
        for path in ("/v1/wallet", "/v1/points", "/v1/orders", "/v1/wallet/statement", "/v1/points/history")
    }


def test_one_customer_probing_another_gets_404_as_for_nothing_and_changes_nothing(secured: Secured) -> None:
    s = secured
    put_catalogue(s)
    anna, boris = "probe-anna", "probe-boris"
    created(top_up(s, anna, 500_000, "tok_ok"))
    created(top_up(s, boris, 100_000, "tok_ok"))
    paid = created(place(s, anna, payment_method="WALLET", points_to_use=0))
    delivered = created(place(s, anna, payment_method="CARD", card_token="tok_ok", points_to_use=0))
    created(s.api.post(f"/v1/admin/orders/{delivered['order_id']}/deliver", headers=s.operator(key())), 200)
    before = customer_view(s, anna), customer_view(s, boris)

    missing = "00000000-0000-0000-0000-000000000000"
    for order_id in (paid["order_id"], delivered["order_id"], missing):
        answers = [
            s.api.get(f"/v1/orders/{order_id}", headers=s.customer(boris)),
            s.api.post(f"/v1/orders/{order_id}/cancel", json={"reason": "mine now"}, headers=s.customer(boris, key())),
            s.api.post(
                f"/v1/orders/{order_id}/returns",
                json={"lines": [{"sku": "kettle", "quantity": 1}]},
                headers=s.customer(boris, key()),
            ),
        ]
        for answer in answers:
            body = problem(answer, 404, "ORDER_NOT_FOUND")
            # Nothing in the answer tells "someone else's" from "does not exist".
            assert anna not in answer.text and body["metadata"] in ({}, {"order_id": order_id})
    # The customer id comes from the token only: one in the query or the body is refused, not used.
    problem(s.api.get(f"/v1/orders?customer_id={anna}", headers=s.customer(boris)), 400, "UNKNOWN_QUERY_PARAMETER")
    problem(s.api.get(f"/v1/wallet?customer_id={anna}", headers=s.customer(boris)), 400, "UNKNOWN_QUERY_PARAMETER")
    problem(
        s.api.post(
            "/v1/wallet/top-ups",
            json={"amount_minor": 10_000, "card_token": "tok_ok", "customer_id": anna},
            headers=s.customer(boris, key()),
        ),
        400,
        "INVALID_ARGUMENT",
    )
    assert (customer_view(s, anna), customer_view(s, boris)) == before


def test_no_customer_route_takes_a_customer_id_from_the_request(secured: Secured) -> None:
    schema = secured.api.app.openapi()  # type: ignore[attr-defined]
    names: set[str] = set()

    def properties(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                properties(schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]])
            names.update(node.get("properties", {}))
            for value in node.get("properties", {}).values():
                properties(value)
            for value in (node.get("items"), *node.get("anyOf", []), *node.get("allOf", [])):
                properties(value)

    checked = 0
    for path, item in schema["paths"].items():
        if path.startswith("/v1/admin/") or not path.startswith("/v1/"):
            continue
        for operation in item.values():
            names.update(p["name"] for p in operation.get("parameters", []))
            for content in operation.get("requestBody", {}).get("content", {}).values():
                properties(content.get("schema"))
            checked += 1
    assert checked >= 13
    assert not names & {"customer_id", "customer", "sub", "subject", "customerId"}, names


# -- the journey and the scan -------------------------------------------------------------------


def journey(s: Secured) -> None:
    anna = "journey-anna"
    put_catalogue(s)
    # Top-ups: approved (two brands), declined (402), timed out (503, retried with the same key).
    created(top_up(s, anna, 300_000, "tok_ok"))
    created(top_up(s, anna, 200_000, "tok_mastercard"))
    problem(top_up(s, anna, 50_000, "tok_declined"), 402, "CARD_DECLINED")
    slow_key = key()
    slow = {"amount_minor": 20_000, "card_token": "tok_timeout"}
    first = s.api.post("/v1/wallet/top-ups", json=slow, headers=s.customer(anna, slow_key))
    assert first.status_code in (201, 503), first.text
    s.api.post("/v1/wallet/top-ups", json=slow, headers=s.customer(anna, slow_key))
    # A card number where a token belongs is refused without being echoed.
    for pan in PANS:
        answer = top_up(s, anna, 50_000, pan)
        assert answer.status_code == 400 and pan not in answer.text, answer.text
        answer = place(s, anna, payment_method="CARD", card_token=pan, points_to_use=0)
        assert answer.status_code == 400 and pan not in answer.text, answer.text
    # Points, then orders paid by wallet and points, by card, by a declined card.
    adjust = {"points": 1_000, "reason": "welcome"}
    created(s.api.post(f"/v1/admin/customers/{anna}/points-adjustments", json=adjust, headers=s.operator(key())))
    quote = {"lines": [{"sku": "soap", "quantity": 2}], "points_to_use": 100, "payment_method": "CARD"}
    created(s.api.post("/v1/checkout/quote", json=quote, headers=s.customer(anna)), 200)
    by_wallet = created(place(s, anna, payment_method="WALLET", points_to_use=300))
    by_card = created(place(s, anna, payment_method="CARD", card_token="tok_mastercard", points_to_use=0))
    problem(place(s, anna, payment_method="CARD", card_token="tok_declined", points_to_use=0), 402, "CARD_DECLINED")
    cancel = s.api.post(f"/v1/orders/{by_wallet['order_id']}/cancel", json={}, headers=s.customer(anna, key()))
    created(cancel, 200)
    created(s.api.post(f"/v1/admin/orders/{by_card['order_id']}/deliver", headers=s.operator(key())), 200)
    returned = {"lines": [{"sku": "kettle", "quantity": 1}], "reason": "too loud"}
    created(s.api.post(f"/v1/orders/{by_card['order_id']}/returns", json=returned, headers=s.customer(anna, key())))
    for path in ("/v1/wallet", "/v1/wallet/statement", "/v1/points", "/v1/points/history", "/v1/orders"):
        created(s.api.get(path, headers=s.customer(anna)), 200)
    # Operator writes, jobs and the CSV import.
    code = {"code": "SECRET10", "fixed_points": 10}
    assert s.api.post("/v1/admin/promo-codes", json=code, headers=s.operator()).status_code == 201
    csv = (
        "customer_id,as_of,average_order_value_minor,order_count,lookback_days,uses_financial_products,"
        "takes_part_in_points_activities\n"
        f"{anna},2026-01-31T00:00:00+03:00,150000,3,180,true,false\n"
    )
    headers = {**s.operator(), "Content-Type": "text/csv"}
    created(s.api.post("/v1/admin/customer-features/import", content=csv, headers=headers), 200)
    for job in ("release-expired-holds", "expire-points", "activate-pending"):
        created(s.api.post(f"/v1/admin/jobs/{job}", json={}, headers=s.operator(key())), 200)
    # Bad tokens: expired, wrong key, garbage; all 401, none logged.
    expired = jwt.encode({"sub": anna, "roles": ["customer"], "exp": 1}, SECRET, "HS256")
    forged = jwt.encode({"sub": anna, "roles": ["operator"], "exp": 4_000_000_000}, "k" * 40, "HS256")
    for bad in (expired, forged, "garbage.garbage.garbage"):
        s.tokens.append(bad)
        assert s.api.get("/v1/wallet", headers={"Authorization": f"Bearer {bad}"}).status_code == 401
    s.deliver_outboxes()


def luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


CARD_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d(?:[ -]?\d){12,18}(?![0-9A-Za-z])")
PASSWORD_IN_URL = re.compile(r"://[^/\s:@\"']+:([^@\s\"']+)@")


def span_text(span: ReadableSpan) -> str:
    parts: list[Any] = [span.name, dict(span.attributes or {}), span.status.description]
    parts += [(event.name, dict(event.attributes or {})) for event in span.events]
    parts += [dict(link.attributes or {}) for link in span.links]
    return json.dumps(parts, default=str, ensure_ascii=False)


def leaks(text: str, secrets: list[str]) -> list[str]:
    found = [secret for secret in secrets if secret in text]
    for match in CARD_NUMBER.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        # Issuer cards start with 2 to 6; a run of one digit (a nil uuid's zeros) is no card.
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and len(set(digits)) > 1 and luhn(digits):
            found.append(f"card number {match.group()}")
    found += [f"password in a URL: {m.group()}" for m in PASSWORD_IN_URL.finditer(text)]
    return found


def test_no_log_line_or_span_holds_a_card_number_token_or_secret(secured: Secured) -> None:
    s = secured
    journey(s)
    secrets = [SECRET, *CARD_TOKENS, *s.tokens]
    secrets += [value.rsplit(".", 1)[1] for value in s.tokens if value.count(".") == 2 and value.rsplit(".", 1)[1]]
    url = database_url_under_test()
    password = make_url(url).password if url else None
    if password:
        secrets.append(str(password))
    spans = list(s.spans.get_finished_spans())
    assert len(s.logs.lines) > 100 and len(spans) > 200, (len(s.logs.lines), len(spans))
    assert {span.resource.attributes["service.name"] for span in spans} >= {"gateway", *SERVICES}
    found = [(line, leak) for line in s.logs.lines for leak in leaks(line, secrets)]
    found += [(span.name, leak) for span in spans for leak in leaks(span_text(span), secrets)]
    assert not found, found[:10]
    # The scan can see: a line that did hold a PAN or a token would be caught.
    assert leaks('{"message": "card 4111 1111 1111 1111"}', secrets) and leaks(s.tokens[0], secrets)
