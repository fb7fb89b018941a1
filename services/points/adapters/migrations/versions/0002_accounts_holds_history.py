"""Accounts, holds and their allocations, and history lines with balance deltas.

Lots gain `held` and `withdrawn`; `available_at` and `expires_at` become optional (a pending lot
has neither until it is scheduled or activated). The old one-delta `entries` become `history`
lines, and each customer's account is built from the lots.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _points(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


def upgrade() -> None:
    with op.batch_alter_table("lots") as lots:
        lots.add_column(_points("held"))
        lots.add_column(_points("withdrawn"))
        lots.alter_column("available_at", existing_type=UtcDateTime, nullable=True)
        lots.alter_column("expires_at", existing_type=UtcDateTime, nullable=True)
        lots.drop_index("ix_lots_reference")
        lots.create_index("ix_lots_customer_reference", ["customer_id", "reference"])
        lots.create_index("ix_lots_status_expiry", ["status", "expires_at"])
        lots.create_index("ix_lots_status_available", ["status", "available_at"])
        lots.create_index("ix_lots_customer_created", ["customer_id", "created_at"])
        lots.create_check_constraint("ck_lots_held", "held >= 0 AND held <= remaining")
        lots.create_check_constraint("ck_lots_withdrawn", "withdrawn >= 0 AND withdrawn <= amount")
    # Pending lots were stamped available at credit time; now unset means "not scheduled yet".
    op.execute("UPDATE lots SET available_at = NULL WHERE status = 'PENDING'")

    op.create_table(
        "accounts",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        _points("available"),
        _points("pending"),
        _points("held"),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.CheckConstraint("available >= 0", name="ck_accounts_available"),
        sa.CheckConstraint("pending >= 0", name="ck_accounts_pending"),
        sa.CheckConstraint("held >= 0", name="ck_accounts_held"),
    )
    op.execute(
        "INSERT INTO accounts (customer_id, available, pending, held, updated_at) "
        "SELECT customer_id, "
        "SUM(CASE WHEN status = 'AVAILABLE' THEN remaining ELSE 0 END), "
        "SUM(CASE WHEN status = 'PENDING' THEN remaining ELSE 0 END), 0, MAX(created_at) "
        "FROM lots GROUP BY customer_id"
    )
    op.create_table(
        "holds",
        sa.Column("hold_id", sa.String(36), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        _points("captured"),
        _points("returned"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expire_time", UtcDateTime, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.CheckConstraint("points > 0", name="ck_holds_points"),
        sa.CheckConstraint("captured >= 0 AND captured <= points", name="ck_holds_captured"),
        sa.CheckConstraint("returned >= 0 AND returned <= captured", name="ck_holds_returned"),
    )
    op.create_index("ix_holds_status_expire", "holds", ["status", "expire_time"])
    op.create_index("ix_holds_customer_status", "holds", ["customer_id", "status"])
    op.create_table(
        "hold_allocations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("hold_id", sa.String(36), sa.ForeignKey("holds.hold_id"), nullable=False),
        sa.Column("lot_id", sa.String(36), sa.ForeignKey("lots.lot_id"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        _points("captured"),
        _points("returned"),
        sa.UniqueConstraint("hold_id", "lot_id", name="uq_hold_allocations_hold_lot"),
        sa.CheckConstraint("points > 0", name="ck_hold_allocations_points"),
        sa.CheckConstraint("captured >= 0 AND captured <= points", name="ck_hold_allocations_captured"),
        sa.CheckConstraint("returned >= 0 AND returned <= captured", name="ck_hold_allocations_returned"),
    )
    op.create_table(
        "history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        _points("available_delta"),
        _points("pending_delta"),
        _points("held_delta"),
        _points("unrecovered_points"),
        sa.Column("lot_id", sa.String(36), nullable=False),
        sa.Column("hold_id", sa.String(36), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("description", sa.String(500), nullable=False, server_default=""),
        sa.Column("operator_id", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_history_customer_id", "history", ["customer_id", "id"])
    op.create_index("ix_history_created", "history", ["created_at"])
    op.execute(
        "INSERT INTO history (customer_id, type, available_delta, pending_delta, held_delta, unrecovered_points, "
        "lot_id, hold_id, source, reference, description, operator_id, created_at) "
        "SELECT e.customer_id, "
        "CASE WHEN e.kind = 'CREDIT_PENDING' THEN 'CREDITED_PENDING' ELSE 'CREDITED' END, "
        "CASE WHEN e.kind = 'CREDIT_PENDING' THEN 0 ELSE e.delta END, "
        "CASE WHEN e.kind = 'CREDIT_PENDING' THEN e.delta ELSE 0 END, 0, 0, "
        "e.lot_id, '', e.source, e.reference, e.note, l.operator_id, e.created_at "
        "FROM entries e JOIN lots l ON l.lot_id = e.lot_id ORDER BY e.id"
    )
    op.drop_index("ix_entries_customer_time", table_name="entries")
    op.drop_table("entries")


def downgrade() -> None:
    op.create_table(
        "entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("lot_id", sa.String(36), sa.ForeignKey("lots.lot_id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("delta", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
    )
    op.create_index("ix_entries_customer_time", "entries", ["customer_id", "created_at"])
    # Only credits existed before; the other lines have no place in the old schema.
    op.execute(
        "INSERT INTO entries (customer_id, lot_id, kind, delta, source, reference, created_at, note) "
        "SELECT customer_id, lot_id, CASE WHEN type = 'CREDITED_PENDING' THEN 'CREDIT_PENDING' ELSE 'CREDIT' END, "
        "available_delta + pending_delta, source, reference, created_at, description "
        "FROM history WHERE type IN ('CREDITED', 'CREDITED_PENDING') ORDER BY id"
    )
    op.drop_index("ix_history_created", table_name="history")
    op.drop_index("ix_history_customer_id", table_name="history")
    op.drop_table("history")
    op.drop_table("hold_allocations")
    op.drop_index("ix_holds_customer_status", table_name="holds")
    op.drop_index("ix_holds_status_expire", table_name="holds")
    op.drop_table("holds")
    op.drop_table("accounts")
    op.execute("UPDATE lots SET available_at = created_at WHERE available_at IS NULL")
    op.execute("UPDATE lots SET expires_at = created_at WHERE expires_at IS NULL")
    with op.batch_alter_table("lots") as lots:
        lots.drop_constraint("ck_lots_withdrawn", type_="check")
        lots.drop_constraint("ck_lots_held", type_="check")
        lots.drop_index("ix_lots_customer_created")
        lots.drop_index("ix_lots_status_available")
        lots.drop_index("ix_lots_status_expiry")
        lots.drop_index("ix_lots_customer_reference")
        lots.create_index("ix_lots_reference", ["reference"])
        lots.alter_column("expires_at", existing_type=UtcDateTime, nullable=False)
        lots.alter_column("available_at", existing_type=UtcDateTime, nullable=False)
        lots.drop_column("withdrawn")
        lots.drop_column("held")
