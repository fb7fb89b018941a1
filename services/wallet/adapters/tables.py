"""Tables of the Wallet database (its own metadata, apart from every other service)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.db import UtcDateTime
from shared.runtime_tables import add_runtime_tables

# SQLite only auto-increments an INTEGER PRIMARY KEY.
_Id = BigInteger().with_variant(Integer(), "sqlite")


class WalletTable(SQLModel, registry=registry()):
    pass


class Wallet(WalletTable, table=True):
    """A customer's wallet and the running balances of its two ledger accounts.

    `balance_minor` is the customer's money (wallet plus holds accounts), `held_minor` the part
    reserved by active holds. The database refuses a negative balance and a hold above the
    balance, whatever the code above it does; every change goes through a conditional UPDATE in
    the transaction that writes the ledger transfer."""

    __tablename__ = "wallets"
    __table_args__ = (
        CheckConstraint("balance_minor >= 0", name="ck_wallets_balance_not_negative"),
        CheckConstraint("held_minor >= 0 AND held_minor <= balance_minor", name="ck_wallets_held_within_balance"),
    )

    wallet_id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(max_length=64, unique=True)
    currency: str = Field(max_length=3)
    balance_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    held_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    status: str = Field(max_length=16)
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class WalletStatusChange(WalletTable, table=True):
    """Audit of operator status changes."""

    __tablename__ = "wallet_status_changes"
    __table_args__ = (Index("ix_wallet_status_changes_wallet", "wallet_id"),)

    id: int | None = Field(default=None, sa_column=Column(_Id, primary_key=True, autoincrement=True))
    wallet_id: str = Field(sa_column=Column(String(36), ForeignKey("wallets.wallet_id"), nullable=False))
    from_status: str = Field(max_length=16)
    to_status: str = Field(max_length=16)
    reason: str = Field(max_length=500)
    operator_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class LedgerAccount(WalletTable, table=True):
    """An account of the double-entry ledger: two per wallet, plus the system accounts."""

    __tablename__ = "ledger_accounts"

    account_id: str = Field(primary_key=True, max_length=48)
    kind: str = Field(max_length=24)
    wallet_id: str | None = Field(
        default=None, sa_column=Column(String(36), ForeignKey("wallets.wallet_id"), nullable=True, index=True)
    )
    currency: str = Field(max_length=3)
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class LedgerTransfer(WalletTable, table=True):
    """One movement of money; immutable. Its postings sum to zero."""

    __tablename__ = "ledger_transfers"

    transfer_id: str = Field(primary_key=True, max_length=36)
    kind: str = Field(max_length=24)
    reference: str = Field(max_length=128)
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class LedgerPosting(WalletTable, table=True):
    """One side of a leg: a signed amount on one account. Immutable."""

    __tablename__ = "ledger_postings"
    __table_args__ = (
        Index("ix_ledger_postings_account", "account_id", "id"),
        Index("ix_ledger_postings_transfer", "transfer_id"),
    )

    id: int | None = Field(default=None, sa_column=Column(_Id, primary_key=True, autoincrement=True))
    transfer_id: str = Field(sa_column=Column(String(36), ForeignKey("ledger_transfers.transfer_id"), nullable=False))
    account_id: str = Field(sa_column=Column(String(48), ForeignKey("ledger_accounts.account_id"), nullable=False))
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class StatementEntry(WalletTable, table=True):
    """The customer's side of a transfer that changed the wallet balance, with the balance after
    it: the statement, and the end-of-day balances interest and statistics are computed from."""

    __tablename__ = "statement_entries"
    __table_args__ = (
        Index("ix_statement_entries_wallet", "wallet_id", "id"),
        Index("ix_statement_entries_wallet_time", "wallet_id", "created_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(_Id, primary_key=True, autoincrement=True))
    wallet_id: str = Field(sa_column=Column(String(36), ForeignKey("wallets.wallet_id"), nullable=False))
    transfer_id: str = Field(sa_column=Column(String(36), ForeignKey("ledger_transfers.transfer_id"), nullable=False))
    type: str = Field(max_length=16)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    balance_after_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    reference: str = Field(max_length=128)
    description: str = Field(max_length=200)
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class TopUp(WalletTable, table=True):
    __tablename__ = "top_ups"
    __table_args__ = (Index("ix_top_ups_customer_time", "customer_id", "created_at"),)

    top_up_id: str = Field(primary_key=True, max_length=36)
    wallet_id: str = Field(sa_column=Column(String(36), ForeignKey("wallets.wallet_id"), nullable=False))
    customer_id: str = Field(max_length=64)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    status: str = Field(max_length=16)
    card_token: str = Field(max_length=64)
    card_brand: str = Field(default="", max_length=16)
    card_last4: str = Field(default="", max_length=4)
    acquirer_key: str = Field(max_length=200, unique=True)
    timed_out: bool = Field(default=False)
    failure_reason: str = Field(default="", max_length=64)
    transfer_id: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    settled_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime, nullable=True))


class Hold(WalletTable, table=True):
    __tablename__ = "holds"
    __table_args__ = (
        Index("ix_holds_status_expiry", "status", "expire_at"),
        Index("ix_holds_customer", "customer_id"),
    )

    hold_id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(max_length=64)
    wallet_id: str | None = Field(
        default=None, sa_column=Column(String(36), ForeignKey("wallets.wallet_id"), nullable=True)
    )
    reference: str = Field(max_length=128)
    payment_method: str = Field(max_length=16)
    card_token: str = Field(default="", max_length=64)
    card_brand: str = Field(default="", max_length=16)
    card_last4: str = Field(default="", max_length=4)
    acquirer_key: str = Field(default="", max_length=200)
    timed_out: bool = Field(default=False)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    captured_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    refunded_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    status: str = Field(max_length=16)
    release_reason: str = Field(default="", max_length=500)
    expire_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    captured_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime, nullable=True))


class Refund(WalletTable, table=True):
    __tablename__ = "refunds"
    __table_args__ = (Index("ix_refunds_hold", "hold_id"),)

    refund_id: str = Field(primary_key=True, max_length=36)
    hold_id: str = Field(sa_column=Column(String(36), ForeignKey("holds.hold_id"), nullable=False))
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    destination: str = Field(max_length=16)
    status: str = Field(max_length=16)
    reference: str = Field(max_length=128)
    reason: str = Field(max_length=500)
    transfer_id: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class InterestAccrual(WalletTable, table=True):
    """Interest of one wallet for one month; the unique key makes posting a month idempotent."""

    __tablename__ = "interest_accruals"
    __table_args__ = (UniqueConstraint("wallet_id", "month", name="uq_interest_accruals_wallet_month"),)

    id: int | None = Field(default=None, sa_column=Column(_Id, primary_key=True, autoincrement=True))
    wallet_id: str = Field(sa_column=Column(String(36), ForeignKey("wallets.wallet_id"), nullable=False))
    customer_id: str = Field(max_length=64)
    month: str = Field(max_length=7)
    mechanic_code: str = Field(max_length=64)
    mechanic_name: str = Field(max_length=200)
    apr_bps: int
    basis: str = Field(max_length=16)
    basis_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    carry_in_micro: int = Field(sa_column=Column(BigInteger, nullable=False))
    accrued_micro: int = Field(sa_column=Column(BigInteger, nullable=False))
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    carry_out_micro: int = Field(sa_column=Column(BigInteger, nullable=False))
    posted_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class AcquirerSimulatorOperation(WalletTable, table=True):
    """State of the bundled acquirer SIMULATOR (not of the wallet): what it was asked, keyed by
    the idempotency key it was given, so it answers a repeated request as the first time even
    after a restart. A real acquirer keeps this on its side; nothing of the wallet reads it."""

    __tablename__ = "acquirer_simulator_operations"

    key: str = Field(primary_key=True, max_length=200)
    kind: str = Field(max_length=16)
    token: str = Field(max_length=64)
    parent_key: str = Field(default="", max_length=200)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    approved: bool
    decline_reason: str = Field(default="", max_length=64)
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


metadata = WalletTable.metadata
runtime_tables = add_runtime_tables(metadata)
