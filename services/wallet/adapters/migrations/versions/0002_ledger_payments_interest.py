"""Ledger, top-ups, holds, refunds, interest accruals and the acquirer simulator's state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("wallets") as batch:
        batch.add_column(sa.Column("held_minor", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("updated_at", UtcDateTime, nullable=True))
    op.execute("UPDATE wallets SET updated_at = created_at")
    with op.batch_alter_table("wallets") as batch:
        batch.alter_column("updated_at", existing_type=UtcDateTime, nullable=False)
        batch.create_check_constraint("ck_wallets_held_within_balance", "held_minor >= 0 AND held_minor <= balance_minor")

    op.create_table(
        "wallet_status_changes",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("wallet_id", sa.String(36), sa.ForeignKey("wallets.wallet_id"), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=False),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("operator_id", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_wallet_status_changes_wallet", "wallet_status_changes", ["wallet_id"])

    accounts = op.create_table(
        "ledger_accounts",
        sa.Column("account_id", sa.String(48), primary_key=True),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("wallet_id", sa.String(36), sa.ForeignKey("wallets.wallet_id"), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_ledger_accounts_wallet_id", "ledger_accounts", ["wallet_id"])
    opened = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {"account_id": "card-clearing", "kind": "CARD_CLEARING", "wallet_id": None, "currency": "RUB", "created_at": opened},
        {"account_id": "merchant", "kind": "MERCHANT", "wallet_id": None, "currency": "RUB", "created_at": opened},
    ]
    op.bulk_insert(accounts, rows)
    # Wallets opened before the ledger existed get their two accounts (their balance was zero).
    op.execute(
        "INSERT INTO ledger_accounts (account_id, kind, wallet_id, currency, created_at) "
        "SELECT 'wallet:' || wallet_id, 'CUSTOMER_WALLET', wallet_id, currency, created_at FROM wallets"
    )
    op.execute(
        "INSERT INTO ledger_accounts (account_id, kind, wallet_id, currency, created_at) "
        "SELECT 'holds:' || wallet_id, 'CUSTOMER_HOLDS', wallet_id, currency, created_at FROM wallets"
    )

    op.create_table(
        "ledger_transfers",
        sa.Column("transfer_id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "ledger_postings",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("transfer_id", sa.String(36), sa.ForeignKey("ledger_transfers.transfer_id"), nullable=False),
        sa.Column("account_id", sa.String(48), sa.ForeignKey("ledger_accounts.account_id"), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_ledger_postings_account", "ledger_postings", ["account_id", "id"])
    op.create_index("ix_ledger_postings_transfer", "ledger_postings", ["transfer_id"])

    op.create_table(
        "statement_entries",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("wallet_id", sa.String(36), sa.ForeignKey("wallets.wallet_id"), nullable=False),
        sa.Column("transfer_id", sa.String(36), sa.ForeignKey("ledger_transfers.transfer_id"), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("balance_after_minor", sa.BigInteger, nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_statement_entries_wallet", "statement_entries", ["wallet_id", "id"])
    op.create_index("ix_statement_entries_wallet_time", "statement_entries", ["wallet_id", "created_at"])

    op.create_table(
        "top_ups",
        sa.Column("top_up_id", sa.String(36), primary_key=True),
        sa.Column("wallet_id", sa.String(36), sa.ForeignKey("wallets.wallet_id"), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("card_token", sa.String(64), nullable=False),
        sa.Column("card_brand", sa.String(16), nullable=False),
        sa.Column("card_last4", sa.String(4), nullable=False),
        sa.Column("acquirer_key", sa.String(200), nullable=False, unique=True),
        sa.Column("timed_out", sa.Boolean, nullable=False),
        sa.Column("failure_reason", sa.String(64), nullable=False),
        sa.Column("transfer_id", sa.String(36), nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("settled_at", UtcDateTime, nullable=True),
    )
    op.create_index("ix_top_ups_customer_time", "top_ups", ["customer_id", "created_at"])

    op.create_table(
        "holds",
        sa.Column("hold_id", sa.String(36), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("wallet_id", sa.String(36), sa.ForeignKey("wallets.wallet_id"), nullable=True),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("payment_method", sa.String(16), nullable=False),
        sa.Column("card_token", sa.String(64), nullable=False),
        sa.Column("card_brand", sa.String(16), nullable=False),
        sa.Column("card_last4", sa.String(4), nullable=False),
        sa.Column("acquirer_key", sa.String(200), nullable=False),
        sa.Column("timed_out", sa.Boolean, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("captured_minor", sa.BigInteger, nullable=False),
        sa.Column("refunded_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("release_reason", sa.String(500), nullable=False),
        sa.Column("expire_at", UtcDateTime, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("captured_at", UtcDateTime, nullable=True),
    )
    op.create_index("ix_holds_status_expiry", "holds", ["status", "expire_at"])
    op.create_index("ix_holds_customer", "holds", ["customer_id"])

    op.create_table(
        "refunds",
        sa.Column("refund_id", sa.String(36), primary_key=True),
        sa.Column("hold_id", sa.String(36), sa.ForeignKey("holds.hold_id"), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("destination", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("transfer_id", sa.String(36), nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_refunds_hold", "refunds", ["hold_id"])

    op.create_table(
        "interest_accruals",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("wallet_id", sa.String(36), sa.ForeignKey("wallets.wallet_id"), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("mechanic_code", sa.String(64), nullable=False),
        sa.Column("mechanic_name", sa.String(200), nullable=False),
        sa.Column("apr_bps", sa.Integer, nullable=False),
        sa.Column("basis", sa.String(16), nullable=False),
        sa.Column("basis_minor", sa.BigInteger, nullable=False),
        sa.Column("carry_in_micro", sa.BigInteger, nullable=False),
        sa.Column("accrued_micro", sa.BigInteger, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("carry_out_micro", sa.BigInteger, nullable=False),
        sa.Column("posted_at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("wallet_id", "month", name="uq_interest_accruals_wallet_month"),
    )

    op.create_table(
        "acquirer_simulator_operations",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("parent_key", sa.String(200), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("approved", sa.Boolean, nullable=False),
        sa.Column("decline_reason", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("acquirer_simulator_operations")
    op.drop_table("interest_accruals")
    op.drop_index("ix_refunds_hold", table_name="refunds")
    op.drop_table("refunds")
    op.drop_index("ix_holds_customer", table_name="holds")
    op.drop_index("ix_holds_status_expiry", table_name="holds")
    op.drop_table("holds")
    op.drop_index("ix_top_ups_customer_time", table_name="top_ups")
    op.drop_table("top_ups")
    op.drop_index("ix_statement_entries_wallet_time", table_name="statement_entries")
    op.drop_index("ix_statement_entries_wallet", table_name="statement_entries")
    op.drop_table("statement_entries")
    op.drop_index("ix_ledger_postings_transfer", table_name="ledger_postings")
    op.drop_index("ix_ledger_postings_account", table_name="ledger_postings")
    op.drop_table("ledger_postings")
    op.drop_table("ledger_transfers")
    op.drop_index("ix_ledger_accounts_wallet_id", table_name="ledger_accounts")
    op.drop_table("ledger_accounts")
    op.drop_index("ix_wallet_status_changes_wallet", table_name="wallet_status_changes")
    op.drop_table("wallet_status_changes")
    with op.batch_alter_table("wallets") as batch:
        batch.drop_constraint("ck_wallets_held_within_balance", type_="check")
        batch.drop_column("updated_at")
        batch.drop_column("held_minor")
