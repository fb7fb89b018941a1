"""Tables of the Points database (its own metadata, apart from every other service).

`accounts` keeps each customer's three balances; the database refuses a negative one (CHECK) and
every mutation of a customer takes that row's lock first, so concurrent holds serialise per
customer. `lots` carry the detail, `holds` and `hold_allocations` the reservations, and
`history` one line per change, whose deltas sum to the account's balances.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Column, Index, String, UniqueConstraint, text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.db import UtcDateTime
from shared.runtime_tables import add_runtime_tables


class PointsTable(SQLModel, registry=registry()):
    pass


def _points(*, default: int | None = None) -> Column[int]:
    if default is None:
        return Column(BigInteger, nullable=False)
    return Column(BigInteger, nullable=False, server_default=str(default))


class Account(PointsTable, table=True):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("available >= 0", name="ck_accounts_available"),
        CheckConstraint("pending >= 0", name="ck_accounts_pending"),
        CheckConstraint("held >= 0", name="ck_accounts_held"),
    )

    customer_id: str = Field(primary_key=True, max_length=64)
    available: int = Field(default=0, sa_column=_points(default=0))
    pending: int = Field(default=0, sa_column=_points(default=0))
    held: int = Field(default=0, sa_column=_points(default=0))
    updated_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


# The predicates of the partial indexes on lots; a query meets them with the same literal status
# (`repository.AVAILABLE`, `repository.PENDING`), so that every plan, generic ones too, can use them.
AVAILABLE_ONLY = "status = 'AVAILABLE'"
PENDING_ONLY = "status = 'PENDING'"


class Lot(PointsTable, table=True):
    __tablename__ = "lots"
    __table_args__ = (
        Index("ix_lots_customer_status_expiry", "customer_id", "status", "expires_at"),
        Index("ix_lots_customer_reference", "customer_id", "reference"),
        # The jobs' scans (expiry, activation) read only AVAILABLE or only PENDING lots: partial
        # indexes keep the other lots out, so a lot that expires, is spent or is credited
        # available (wallet interest, for one) is written into one index fewer, or two.
        Index(
            "ix_lots_available_expiry",
            "expires_at",
            postgresql_where=text(AVAILABLE_ONLY),
            sqlite_where=text(AVAILABLE_ONLY),
        ),
        Index(
            "ix_lots_pending_available",
            "available_at",
            postgresql_where=text(PENDING_ONLY),
            sqlite_where=text(PENDING_ONLY),
        ),
        Index("ix_lots_customer_created", "customer_id", "created_at"),
        CheckConstraint("amount > 0", name="ck_lots_amount"),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="ck_lots_remaining"),
        CheckConstraint("held >= 0 AND held <= remaining", name="ck_lots_held"),
        CheckConstraint("withdrawn >= 0 AND withdrawn <= amount", name="ck_lots_withdrawn"),
    )

    lot_id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(max_length=64)
    amount: int = Field(sa_column=_points())
    remaining: int = Field(sa_column=_points())
    # Part of remaining reserved by active holds.
    held: int = Field(default=0, sa_column=_points(default=0))
    # Part of amount cancelled or reversed (the earning taken back), whoever's points paid for it.
    withdrawn: int = Field(default=0, sa_column=_points(default=0))
    source: str = Field(max_length=32)
    reference: str = Field(max_length=128)
    status: str = Field(max_length=16)
    # Unset while pending and not scheduled; a future time while scheduled.
    available_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime, nullable=True))
    # Unset while pending with the source's lifetime (fixed at activation).
    expires_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime, nullable=True))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    reason: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))
    operator_id: str = Field(default="", max_length=64)


class ReferenceDecision(PointsTable, table=True):
    """What was decided for a reference's pending points (an order delivered or cancelled), kept so
    that pending lots of the reference credited later (through another service's outbox, which
    may arrive after the decision) follow it too."""

    __tablename__ = "reference_decisions"

    customer_id: str = Field(primary_key=True, max_length=64)
    reference: str = Field(primary_key=True, max_length=128)
    # ACTIVATE (at available_at) or CANCEL.
    action: str = Field(max_length=16)
    available_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime, nullable=True))
    reason: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))
    decided_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class Hold(PointsTable, table=True):
    __tablename__ = "holds"
    __table_args__ = (
        Index("ix_holds_status_expire", "status", "expire_time"),
        Index("ix_holds_customer_status", "customer_id", "status"),
        CheckConstraint("points > 0", name="ck_holds_points"),
        CheckConstraint("captured >= 0 AND captured <= points", name="ck_holds_captured"),
        CheckConstraint("returned >= 0 AND returned <= captured", name="ck_holds_returned"),
    )

    hold_id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(max_length=64)
    reference: str = Field(max_length=128)
    points: int = Field(sa_column=_points())
    captured: int = Field(default=0, sa_column=_points(default=0))
    returned: int = Field(default=0, sa_column=_points(default=0))
    status: str = Field(max_length=16)
    expire_time: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class HoldAllocation(PointsTable, table=True):
    """How many points of a hold came from one lot, and what became of them."""

    __tablename__ = "hold_allocations"
    __table_args__ = (
        UniqueConstraint("hold_id", "lot_id", name="uq_hold_allocations_hold_lot"),
        CheckConstraint("points > 0", name="ck_hold_allocations_points"),
        CheckConstraint("captured >= 0 AND captured <= points", name="ck_hold_allocations_captured"),
        CheckConstraint("returned >= 0 AND returned <= captured", name="ck_hold_allocations_returned"),
    )

    id: int | None = Field(default=None, primary_key=True)
    hold_id: str = Field(max_length=36, foreign_key="holds.hold_id")
    lot_id: str = Field(max_length=36, foreign_key="lots.lot_id")
    # Position in the hold: nearest expiry first.
    position: int
    points: int = Field(sa_column=_points())
    captured: int = Field(default=0, sa_column=_points(default=0))
    returned: int = Field(default=0, sa_column=_points(default=0))


class HistoryLine(PointsTable, table=True):
    """One line per change of a customer's balances; the deltas sum to the account."""

    __tablename__ = "history"
    __table_args__ = (
        Index("ix_history_customer_id", "customer_id", "id"),
        Index("ix_history_created", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    customer_id: str = Field(max_length=64)
    type: str = Field(max_length=32)
    available_delta: int = Field(default=0, sa_column=_points(default=0))
    pending_delta: int = Field(default=0, sa_column=_points(default=0))
    held_delta: int = Field(default=0, sa_column=_points(default=0))
    unrecovered_points: int = Field(default=0, sa_column=_points(default=0))
    lot_id: str = Field(default="", max_length=36)
    hold_id: str = Field(default="", max_length=36)
    source: str = Field(default="", max_length=32)
    reference: str = Field(default="", max_length=128)
    description: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))
    operator_id: str = Field(default="", max_length=64)
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


metadata = PointsTable.metadata
runtime_tables = add_runtime_tables(metadata)
