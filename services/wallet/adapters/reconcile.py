"""The Wallet ledger checked against itself: every transfer balances, every wallet's balance and
held amount equal its ledger accounts and its holds; and the facts the cross-service checks need
(money captured per reference, interest posted per wallet and month)."""

from __future__ import annotations

from sqlalchemy import text

from services.wallet.adapters.points_peer import interest_key
from services.wallet.domain.ledger import holds_account, wallet_account
from shared.db import Database
from shared.reconcile import Audit, totals


def audit(database: Database) -> Audit:
    result = Audit("wallet")
    with database.engine.connect() as db:
        unbalanced = db.execute(
            text(
                "SELECT transfer_id, SUM(amount_minor) FROM ledger_postings"
                " GROUP BY transfer_id HAVING SUM(amount_minor) <> 0"
            )
        ).all()
        for transfer_id, total in unbalanced:
            result.mismatch("every transfer balances", f"transfer {transfer_id} sums to {total}")
        result.count("transfers", int(db.execute(text("SELECT COUNT(*) FROM ledger_transfers")).scalar_one()))
        postings = totals(db, "SELECT account_id, SUM(amount_minor) FROM ledger_postings GROUP BY account_id")
        active = totals(
            db,
            "SELECT wallet_id, SUM(amount_minor) FROM holds"
            " WHERE status = 'ACTIVE' AND payment_method = 'WALLET' GROUP BY wallet_id",
        )
        wallets = db.execute(text("SELECT wallet_id, balance_minor, held_minor FROM wallets")).all()
        for wallet_id, balance, held in wallets:
            in_wallet = postings.get(wallet_account(wallet_id), 0)
            in_holds = postings.get(holds_account(wallet_id), 0)
            if balance < 0 or held < 0 or held > balance:
                result.mismatch("no negative balance", f"wallet {wallet_id}: balance {balance}, held {held}")
            if (balance, held) != (in_wallet + in_holds, in_holds):
                result.mismatch(
                    "wallets equal their ledger",
                    f"wallet {wallet_id}: balance/held {balance}/{held}, ledger {in_wallet + in_holds}/{in_holds}",
                )
            if held != active.get(wallet_id, 0):
                result.mismatch(
                    "held equals active holds",
                    f"wallet {wallet_id}: held {held}, active holds {active.get(wallet_id, 0)}",
                )
        result.count("wallets", len(wallets))
        for hold_id, amount, captured, refunded in db.execute(
            text(
                "SELECT hold_id, amount_minor, captured_minor, refunded_minor FROM holds"
                " WHERE captured_minor > amount_minor OR refunded_minor > captured_minor OR captured_minor < 0"
            )
        ):
            result.mismatch(
                "holds within their amount", f"hold {hold_id}: {amount} held, {captured} captured, {refunded} refunded"
            )
        result.facts["money_captured_by_reference"] = totals(
            db,
            "SELECT reference, SUM(captured_minor - refunded_minor) FROM holds"
            " WHERE status = 'CAPTURED' GROUP BY reference",
        )
        result.facts["interest_posted"] = {
            interest_key(wallet_id, month): int(points)
            for wallet_id, month, points in db.execute(
                text("SELECT wallet_id, month, points FROM interest_accruals WHERE points > 0")
            )
        }
    return result
