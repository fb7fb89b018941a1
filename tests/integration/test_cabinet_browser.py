"""The customer cabinet in a real headless Chromium (Debian's /usr/bin/chromium driven by
Playwright; no browser download) against the real gateway and the four services: sign in with a
token, top up (and a declined card's error), the yield calculator's table and chart, an order
paid partly with points chosen on the slider, its cancellation, the points history, Russian.

Screenshots go to the test's temporary directory, or to `CABINET_SCREENSHOTS` when set
(`make screenshots` refreshes docs/screenshots/). Skipped when Chromium is not installed, except
in CI (`.ci/run` sets CABINET_BROWSER_REQUIRED; `CI` counts too), where a missing browser fails.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from loyalty.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from playwright.sync_api import Page, expect, sync_playwright

from gateway.app import close, create_app
from services.checkout.demo_catalogue import DEMO_CATALOGUE
from shared.clock import ManualClock
from shared.protoconv import money
from tests.clients import PointsClient, rid
from tests.harness import Databases, Harness, free_port
from tests.integration.gateway_support import gateway_settings, token

CHROMIUM = os.environ.get("CABINET_CHROMIUM", "/usr/bin/chromium")
CUSTOMER = "cabinet-customer"
WELCOME_POINTS = 2_000


@pytest.fixture(scope="module", autouse=True)
def chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CABINET_BROWSER_REQUIRED") or os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium (see .ci/run)", pytrace=False)
    pytest.skip(
        f"the cabinet's browser test needs Chromium at {CHROMIUM} (apt-get install chromium); "
        "set CABINET_CHROMIUM to use another"
    )


@dataclass
class Live:
    url: str
    customer_token: str


@pytest.fixture(scope="module")
def live(chromium: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The four services, the demo catalogue, a customer with welcome points, and the gateway on
    a real port (uvicorn in a thread)."""
    databases = Databases(tmp_path_factory.mktemp("cabinet"))
    harness = Harness(databases, ManualClock())
    server = thread = app = None
    try:
        services = harness.start_all()
        catalogue = checkout_pb2_grpc.CheckoutServiceStub(services["checkout"].channel())
        for category, products in DEMO_CATALOGUE.items():
            for sku, title, price in products:
                product = checkout_pb2.Product(sku=sku, title=title, category=category, price=money(price))
                catalogue.UpsertProduct(
                    checkout_pb2.UpsertProductRequest(request_id=rid(), product=product), timeout=10
                )
        PointsClient(services["points"].channel()).credit(CUSTOMER, WELCOME_POINTS, "CAMPAIGN", reference="welcome")
        app = create_app(gateway_settings({name: svc.target for name, svc in services.items()}))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
        thread = threading.Thread(target=server.run, name="cabinet-gateway", daemon=True)
        thread.start()
        end = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < end and thread.is_alive(), "the gateway did not start"
            time.sleep(0.02)
        yield Live(f"http://127.0.0.1:{port}", token(CUSTOMER, "customer"))
    finally:
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout=10)
        if app is not None:
            close(app)
        harness.close()
        databases.drop_all()


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 860}, locale="en-GB")
            page = context.new_page()
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            yield page
            # Refusals the journey provokes (a bad token, no wallet yet, a declined card) are logged by
            # the browser as failed loads; anything else, and any script error, fails the test.
            assert not [e for e in errors if not e.startswith("Failed to load resource")], errors
        finally:
            browser.close()


class Shots:
    """Screenshots into the test's directory, or into CABINET_SCREENSHOTS (docs/screenshots/ by
    `make screenshots`) as small palette PNGs."""

    def __init__(self, page: Page, tmp_path: Path) -> None:
        self.page = page
        self.keep = bool(os.environ.get("CABINET_SCREENSHOTS"))
        self.target = Path(os.environ.get("CABINET_SCREENSHOTS") or tmp_path)
        self.target.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, *, full_page: bool = False) -> None:
        path = self.target / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        if self.keep:
            from PIL import Image

            with Image.open(path) as image:
                image.convert("RGB").quantize(colors=128).save(path, optimize=True)


def api(live: Live, page: Page, path: str, body: object = None) -> dict[str, Any]:
    """The gateway's own answer, to compare the page with."""
    headers = {"Authorization": f"Bearer {live.customer_token}"}
    url = f"{live.url}{path}"
    answer = (
        page.request.get(url, headers=headers) if body is None else page.request.post(url, headers=headers, data=body)
    )
    assert answer.ok, answer.text()
    value: dict[str, Any] = answer.json()
    return value


def test_the_customer_journey_in_a_real_browser(live: Live, page: Page, tmp_path: Path) -> None:
    shot = Shots(page, tmp_path)
    page.goto(live.url)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Bearer token").fill("not-a-token")
    page.get_by_role("button", name="Use this token").click()
    expect(page.locator("#sign-in-message")).to_contain_text("not accepted")
    page.get_by_label("Bearer token").fill(live.customer_token)
    page.get_by_role("button", name="Use this token").click()
    expect(page.get_by_text(f"Signed in as {CUSTOMER}")).to_be_visible()
    expect(page.locator("#wallet-mechanic")).to_contain_text("no wallet yet")

    # Top-up: approved, then a declined card's error.
    wallet_view = page.get_by_role("region", name="Wallet")
    wallet_view.get_by_label("Amount, ₽").fill("5 000")
    wallet_view.get_by_label("Card", exact=True).select_option("tok_ok")
    page.get_by_role("button", name="Top up").click()
    expect(page.locator("#top-up-message")).to_contain_text("Topped up 5,000.00\u00a0₽ from VISA •4242")
    expect(page.locator("#wallet-figures")).to_contain_text("5,000.00\u00a0₽")
    wallet_view.get_by_label("Amount, ₽").fill("1000,50")
    wallet_view.get_by_label("Card", exact=True).select_option("tok_declined")
    page.get_by_role("button", name="Top up").click()
    expect(page.locator("#top-up-message")).to_have_text("The bank declined the card.")
    expect(page.locator("#top-up-message")).to_have_attribute("data-kind", "error")
    expect(page.locator("#statement tbody tr")).to_have_count(1)  # the declined top-up moved nothing
    shot("cabinet-wallet")

    # The yield calculator: the customer's own mechanic, month by month, as a table and a chart.
    page.get_by_role("button", name="Yield calculator").click()
    page.get_by_label("Amount kept, ₽").fill("50000")
    page.get_by_label("Months").fill("12")
    page.get_by_role("button", name="Calculate").click()
    expect(page.locator("#yield-table tbody tr")).to_have_count(12)
    expect(page.locator("#yield-chart svg rect.bar")).to_have_count(12)
    expected = api(live, page, "/v1/wallet/yield?amount_minor=5000000&months=12")
    expect(page.locator("#yield-summary")).to_have_text(
        f"50,000.00\u00a0₽ kept for 12 months earns {expected['total_points']:,} points (12 % a year in points)."
    )
    expect(page.locator("#yield-table tbody tr").last.locator("td").last).to_have_text(f"{expected['total_points']:,}")
    shot("cabinet-calculator", full_page=True)

    # The shop: a cart, the points slider up to the server's cap, an order from the wallet.
    page.get_by_role("button", name="Shop").click()
    page.get_by_role("button", name="Add Wireless headphones to the cart").click()
    page.get_by_role("button", name="Add USB-C cable 1 m to the cart").click()
    lines = [{"sku": "el-headphones", "quantity": 1}, {"sku": "el-cable", "quantity": 1}]
    cap = api(live, page, "/v1/checkout/quote", {"lines": lines})["max_points"]
    assert cap == WELCOME_POINTS  # the customer's points are the binding limit here
    slider = page.get_by_role("slider", name="Pay with points")
    expect(slider).to_have_attribute("max", str(cap))
    slider.focus()
    page.keyboard.press("End")
    expect(page.locator("#quote")).to_contain_text(f"Paid with points{cap:,}")
    page.locator("#points-number").fill("999999")  # typing past the cap is held at it
    page.locator("#points-number").press("Tab")
    expect(page.locator("#points-number")).to_have_value(str(cap))
    expect(page.locator("#quote")).to_contain_text("To pay4,489.00\u00a0₽")
    page.locator("#explanation-box summary").click()
    expect(page.locator("#explanation li").first).to_be_visible()
    shot("cabinet-shop")
    page.get_by_role("button", name="Place the order").click()
    expect(page.locator("#cart-message")).to_contain_text("is paid: 4,489.00\u00a0₽ paid and 2,000 points")

    # Orders: cancel it; money and points come back.
    page.get_by_role("button", name="Orders").click()
    order = page.locator(".order").first
    expect(order.locator(".status")).to_have_text("paid")
    shot("cabinet-orders")
    order.get_by_role("button", name="Cancel the order").click()
    expect(order.locator(".status")).to_have_text("cancelled")
    expect(page.locator("#orders-message")).to_contain_text("money and points are back")
    wallet = api(live, page, "/v1/wallet")
    assert (wallet["balance_minor"], wallet["held_minor"]) == (500_000, 0)

    # Points, with their history and reasons; then the same page in Russian.
    page.get_by_role("button", name="Points").click()
    expect(page.locator("#points-figures")).to_contain_text(f"Available{WELCOME_POINTS:,}")
    expect(page.locator("#history tbody")).to_contain_text("Spent")
    expect(page.locator("#history tbody")).to_contain_text("campaign")
    page.get_by_role("button", name="RU").click()
    expect(page.get_by_role("heading", name="Баллы")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "ru")
    expect(page.locator("#points-figures")).to_contain_text("2\u00a0000")
    shot("cabinet-points-ru")
