"""Reconciliation: clean after real traffic across the four services, and each kind of corruption
(a balance, a ledger, a hold, an interest posting, a promo code count) caught and named; the
command exits 0 when clean and 1 on a mismatch."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import text

from shared import reconcile
from shared.db import Database
from tests.harness import Databases, Harness
from tests.integration.checkout_support import CARD, Platform, fund, start_platform

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    from shared.clock import ManualClock

    databases = Databases(tmp_path_factory.mktemp("reconcile"))
    clock = ManualClock()
    harness = Harness(databases, clock)
    try:
        platform = start_platform(harness)
        fund(platform, "r-1", money_minor=300_000, points=1_000)
        paid = platform.checkout.place("r-1", ("kettle", 2), ("soap", 1), points=500)
        platform.deliver_outboxes()
        platform.checkout.deliver(paid.order_id)
        platform.checkout.return_items(paid.order_id, ("kettle", 1))
        card = platform.checkout.place("r-1", ("pen", 3), method=CARD, token="tok_ok")
        platform.checkout.cancel(card.order_id)
        fund(platform, "r-2", money_minor=10_000, points=300)
        with contextlib.suppress(grpc.RpcError):  # a failed order is part of the traffic
            platform.checkout.place("r-2", ("kettle", 1), points=300)  # 200 RUB due, 100 RUB in the wallet
        clock.advance(timedelta(days=40))
        platform.wallet.post_interest("2026-01")
        platform.deliver_outboxes()
        yield platform
    finally:
        harness.close()
        databases.drop_all()


def run(platform: Platform) -> tuple[str, int]:
    return reconcile.check({name: svc.database_url for name, svc in platform.services.items()})


def execute(platform: Platform, service: str, sql: str) -> None:
    database = Database(platform.services[service].database_url)
    try:
        with database.engine.begin() as connection:
            connection.execute(text(sql))
    finally:
        database.dispose()


def test_real_traffic_reconciles_clean(platform: Platform) -> None:
    report, mismatches = run(platform)
    assert mismatches == 0, report
    assert "checked        2  points captured per order" in report  # the paid order and the failed one
    assert "checked        2  money captured per order" in report  # the paid order and the cancelled card one
    assert "checked        2  interest postings" in report  # both customers kept money in January


CORRUPTIONS = [
    (
        "points",
        "UPDATE accounts SET available = available + 1 WHERE customer_id = 'r-1'",
        "UPDATE accounts SET available = available - 1 WHERE customer_id = 'r-1'",
        "accounts equal their lots",
    ),
    (
        "points",
        "UPDATE holds SET returned = returned + 1 WHERE status = 'CAPTURED' AND returned < captured",
        "UPDATE holds SET returned = returned - 1 WHERE status = 'CAPTURED' AND returned > 0 AND returned <= captured",
        "points captured per order",
    ),
    (
        "wallet",
        "UPDATE wallets SET balance_minor = balance_minor + 100",
        "UPDATE wallets SET balance_minor = balance_minor - 100",
        "wallets equal their ledger",
    ),
    (
        "wallet",
        "UPDATE interest_accruals SET points = points + 1 WHERE points > 0",
        "UPDATE interest_accruals SET points = points - 1 WHERE points > 0",
        "interest postings vs WALLET_INTEREST credits",
    ),
    (
        "checkout",
        "UPDATE orders SET money_refunded_minor = money_refunded_minor + 1 WHERE status = 'PARTIALLY_RETURNED'",
        "UPDATE orders SET money_refunded_minor = money_refunded_minor - 1 WHERE status = 'PARTIALLY_RETURNED'",
        "money captured per order",
    ),
    (
        "promotions",
        "UPDATE promo_codes SET reserved_count = reserved_count + 1",
        "UPDATE promo_codes SET reserved_count = reserved_count - 1",
        "reserved counts equal open reservations",
    ),
]


def test_each_corruption_is_caught_and_named(platform: Platform) -> None:
    from tests.integration.promotions_support import PromotionsClient

    PromotionsClient(platform.services["promotions"].channel()).create_code("RECON", fixed_points=10)
    for service, corrupt, repair, check in CORRUPTIONS:
        execute(platform, service, corrupt)
        try:
            report, mismatches = run(platform)
            assert mismatches >= 1 and check in report, f"{service}: {corrupt}\n{report}"
        finally:
            execute(platform, service, repair)
        assert run(platform)[1] == 0


def test_the_command_exits_zero_when_clean_and_one_on_a_mismatch(platform: Platform) -> None:
    env = dict(os.environ)
    for name, svc in platform.services.items():
        env[f"{name.upper()}_DATABASE_URL"] = svc.database_url

    def command() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shared.reconcile"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )

    clean = command()
    assert clean.returncode == 0 and "CLEAN" in clean.stdout, clean.stdout + clean.stderr
    execute(platform, "wallet", "UPDATE wallets SET held_minor = held_minor + 1")
    try:
        dirty = command()
    finally:
        execute(platform, "wallet", "UPDATE wallets SET held_minor = held_minor - 1")
    assert dirty.returncode == 1 and "MISMATCH" in dirty.stdout
