"""Checkout checked against itself: every order's lines add up to its totals, units' points to
their lines, refunds to what was returned; and what each settled order should have captured in
Points and in Wallet, for the cross-service checks."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import text

from services.checkout.domain.pricing import KOPECKS_PER_POINT
from shared.db import Database
from shared.reconcile import Audit

SOLD = ("PAID", "DELIVERED", "PARTIALLY_RETURNED", "RETURNED")
UNDONE = ("CANCELLED", "FAILED")


def audit(database: Database) -> Audit:
    result = Audit("checkout")
    with database.engine.connect() as db:
        lines: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for order_id, quantity, price, points, unit_points, returned, sku in db.execute(
            text(
                "SELECT order_id, quantity, unit_price_minor, points_applied, unit_points, returned_quantity, sku"
                " FROM order_lines"
            )
        ):
            lines[order_id][0] += quantity * price
            lines[order_id][1] += points
            units = [int(p) for p in unit_points.split(",")]
            if len(units) != quantity or sum(units) != points or not 0 <= returned <= quantity:
                result.mismatch("lines equal their units", f"order {order_id} {sku}: {unit_points} vs {points}")
        returns: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        pending_returns: set[str] = set()
        for order_id, status, money, points in db.execute(
            text("SELECT order_id, status, money_refunded_minor, points_returned FROM order_returns")
        ):
            if status == "COMPLETED":
                returns[order_id][0] += money
                returns[order_id][1] += points
            else:
                pending_returns.add(order_id)
        points_expected: dict[str, int] = {}
        money_expected: dict[str, int] = {}
        orders = db.execute(
            text(
                "SELECT order_id, status, total_minor, points_applied, money_paid_minor, money_refunded_minor,"
                " points_hold_id, wallet_hold_id FROM orders"
            )
        ).all()
        for order_id, status, total, points, paid, refunded, points_hold, wallet_hold in orders:
            amount, applied = lines.get(order_id, [0, 0])
            if (amount, applied, paid) != (total, points, total - points * KOPECKS_PER_POINT):
                result.mismatch(
                    "orders equal their lines",
                    f"order {order_id}: total/points/paid {total}/{points}/{paid}, lines {amount}/{applied}",
                )
            if status == "PENDING" or order_id in pending_returns:
                continue  # in flight: the saga or recovery is still moving it
            if status in SOLD:
                if refunded != returns[order_id][0]:
                    result.mismatch(
                        "refunds equal returns",
                        f"order {order_id}: refunded {refunded}, returns {returns[order_id][0]}",
                    )
                points_expected[order_id] = points - returns[order_id][1]
                money_expected[order_id] = paid - refunded
            elif status in UNDONE:
                if points_hold:
                    points_expected[order_id] = 0
                if wallet_hold:
                    money_expected[order_id] = 0
        result.count("orders", len(orders))
        result.facts["order_points_captured"] = {k: v for k, v in points_expected.items()}
        result.facts["order_money_captured"] = money_expected
    return result
