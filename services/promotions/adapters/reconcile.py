"""Promotions checked against itself: no campaign beyond its budget, no promo code beyond its
limits, reserved counts equal the open reservations."""

from __future__ import annotations

from sqlalchemy import text

from shared.db import Database
from shared.reconcile import Audit, totals


def audit(database: Database) -> Audit:
    result = Audit("promotions")
    with database.engine.connect() as db:
        campaigns = db.execute(text("SELECT campaign_id, budget_points, spent_points FROM campaigns")).all()
        for campaign_id, budget, spent in campaigns:
            if spent < 0 or (budget > 0 and spent > budget):
                result.mismatch("campaigns within budget", f"campaign {campaign_id}: spent {spent} of {budget}")
        result.count("campaigns", len(campaigns))
        open_reservations = totals(
            db, "SELECT code, COUNT(*) FROM promo_reservations WHERE status = 'RESERVED' GROUP BY code"
        )
        codes = db.execute(
            text(
                "SELECT code, usage_limit, used_count, reserved_count, budget_points, budget_used_points"
                " FROM promo_codes"
            )
        ).all()
        for code, limit, used, reserved, budget, budget_used in codes:
            if limit > 0 and used + reserved > limit:
                result.mismatch(
                    "promo codes within their limit", f"{code}: {used} used + {reserved} reserved of {limit}"
                )
            if budget > 0 and budget_used > budget:
                result.mismatch("promo codes within their budget", f"{code}: {budget_used} of {budget} points")
            if reserved != open_reservations.get(code, 0):
                result.mismatch(
                    "reserved counts equal open reservations",
                    f"{code}: reserved_count {reserved}, open reservations {open_reservations.get(code, 0)}",
                )
        result.count("promo codes", len(codes))
    return result
