"""The Points ledger checked against itself: accounts against lots, holds and history; and the
facts the cross-service checks need (points captured per reference, interest credited)."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import text

from shared.db import Database
from shared.reconcile import Audit, totals


def audit(database: Database) -> Audit:
    result = Audit("points")
    with database.engine.connect() as db:
        lots: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # available+held, pending, held
        for customer, status, remaining, held in db.execute(
            text("SELECT customer_id, status, SUM(remaining), SUM(held) FROM lots GROUP BY customer_id, status")
        ):
            if status == "AVAILABLE":
                lots[customer][0] += int(remaining)
                lots[customer][2] += int(held)
            elif status == "PENDING":
                lots[customer][1] += int(remaining)
        holds = totals(db, "SELECT customer_id, SUM(points) FROM holds WHERE status = 'ACTIVE' GROUP BY customer_id")
        history = {
            row[0]: (int(row[1]), int(row[2]), int(row[3]))
            for row in db.execute(
                text(
                    "SELECT customer_id, SUM(available_delta), SUM(pending_delta), SUM(held_delta)"
                    " FROM history GROUP BY customer_id"
                )
            )
        }
        accounts = db.execute(text("SELECT customer_id, available, pending, held FROM accounts")).all()
        for customer, available, pending, held in accounts:
            spendable, waiting, in_holds = lots.get(customer, [0, 0, 0])
            if min(available, pending, held) < 0:
                result.mismatch("no negative balance", f"{customer}: {available}/{pending}/{held}")
            if (available + held, pending, held) != (spendable, waiting, in_holds):
                result.mismatch(
                    "accounts equal their lots",
                    f"{customer}: account available+held/pending/held {available + held}/{pending}/{held},"
                    f" lots {spendable}/{waiting}/{in_holds}",
                )
            if held != holds.get(customer, 0):
                result.mismatch(
                    "held equals active holds", f"{customer}: held {held}, active holds {holds.get(customer, 0)}"
                )
            if history.get(customer, (0, 0, 0)) != (available, pending, held):
                result.mismatch(
                    "history sums to the account",
                    f"{customer}: history {history.get(customer)}, account {(available, pending, held)}",
                )
        result.count("accounts", len(accounts))
        unallocated = db.execute(
            text(
                "SELECT h.hold_id, h.points, COALESCE(SUM(a.points), 0) FROM holds h"
                " LEFT JOIN hold_allocations a ON a.hold_id = h.hold_id GROUP BY h.hold_id, h.points"
                " HAVING COALESCE(SUM(a.points), 0) <> h.points"
            )
        ).all()
        for hold_id, points, allocated in unallocated:
            result.mismatch("holds equal their allocations", f"hold {hold_id}: {points} held, {allocated} allocated")
        result.count("holds", int(db.execute(text("SELECT COUNT(*) FROM holds")).scalar_one()))
        result.facts["points_captured_by_reference"] = totals(
            db, "SELECT reference, SUM(captured - returned) FROM holds WHERE status = 'CAPTURED' GROUP BY reference"
        )
        result.facts["wallet_interest_credited"] = totals(
            db, "SELECT reference, SUM(amount) FROM lots WHERE source = 'WALLET_INTEREST' GROUP BY reference"
        )
    return result
