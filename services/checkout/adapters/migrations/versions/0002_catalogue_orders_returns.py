"""The catalogue, orders with their lines, status history and saga state, and returns.

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


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("payment_method", sa.String(length=16), nullable=False),
        sa.Column("card_token", sa.String(length=64), nullable=False),
        sa.Column("card_brand", sa.String(length=32), nullable=False),
        sa.Column("card_last4", sa.String(length=4), nullable=False),
        sa.Column("promo_code", sa.String(length=64), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("points_applied", sa.BigInteger(), nullable=False),
        sa.Column("money_paid_minor", sa.BigInteger(), nullable=False),
        sa.Column("points_to_earn", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("order_level_points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("explanation", sa.Text(), server_default="[]", nullable=False),
        sa.Column("wallet_balance_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("money_refunded_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("failure_reason", sa.String(length=64), nullable=False),
        sa.Column("failure_message", sa.String(length=500), server_default="", nullable=False),
        sa.Column("cancel_reason", sa.String(length=500), server_default="", nullable=False),
        sa.Column("steps_done", sa.String(length=300), server_default="", nullable=False),
        sa.Column("compensating", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("refused_step", sa.String(length=24), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("points_hold_id", sa.String(length=64), nullable=False),
        sa.Column("wallet_hold_id", sa.String(length=64), nullable=False),
        sa.Column("promo_reservation_id", sa.String(length=64), nullable=False),
        sa.Column("saga_open", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("saga_at", UtcDateTime, nullable=False),
        sa.Column("saga_attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), server_default="", nullable=False),
        sa.Column("lease_owner", sa.String(length=36), nullable=False),
        sa.Column("lease_until", UtcDateTime, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("deliver_time", UtcDateTime, nullable=True),
        sa.Column("return_window_end", UtcDateTime, nullable=True),
        sa.CheckConstraint("money_paid_minor > 0", name="ck_orders_money"),
        sa.CheckConstraint(
            "money_refunded_minor >= 0 AND money_refunded_minor <= money_paid_minor", name="ck_orders_refunded"
        ),
        sa.CheckConstraint("points_applied >= 0", name="ck_orders_points"),
        sa.CheckConstraint("total_minor > 0", name="ck_orders_total"),
        sa.PrimaryKeyConstraint("order_id"),
        sa.UniqueConstraint("request_id"),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_created", ["created_at", "order_id"], unique=False)
        batch_op.create_index("ix_orders_customer_created", ["customer_id", "created_at", "order_id"], unique=False)
        batch_op.create_index("ix_orders_saga", ["saga_open", "saga_at"], unique=False)

    op.create_table(
        "products",
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("price_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.CheckConstraint("price_minor > 0", name="ck_products_price"),
        sa.PrimaryKeyConstraint("sku"),
    )
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.create_index("ix_products_category_sku", ["category", "sku"], unique=False)

    op.create_table(
        "order_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("time", UtcDateTime, nullable=False),
        sa.Column("reason", sa.String(length=500), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.order_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("order_events", schema=None) as batch_op:
        batch_op.create_index("ix_order_events_order", ["order_id", "id"], unique=False)

    op.create_table(
        "order_lines",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger(), nullable=False),
        sa.Column("points_applied", sa.BigInteger(), nullable=False),
        sa.Column("unit_points", sa.Text(), nullable=False),
        sa.Column("points_to_earn", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("points_excluded", sa.Boolean(), nullable=False),
        sa.Column("returned_quantity", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("points_applied >= 0", name="ck_order_lines_points"),
        sa.CheckConstraint("quantity > 0", name="ck_order_lines_quantity"),
        sa.CheckConstraint("returned_quantity >= 0 AND returned_quantity <= quantity", name="ck_order_lines_returned"),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.order_id"],
        ),
        sa.PrimaryKeyConstraint("order_id", "position"),
    )
    op.create_table(
        "order_returns",
        sa.Column("return_id", sa.String(length=36), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("money_refunded_minor", sa.BigInteger(), nullable=False),
        sa.Column("points_returned", sa.BigInteger(), nullable=False),
        sa.Column("points_reversed", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=500), server_default="", nullable=False),
        sa.Column("steps_done", sa.String(length=100), server_default="", nullable=False),
        sa.Column("saga_at", UtcDateTime, nullable=False),
        sa.Column("last_error", sa.String(length=500), server_default="", nullable=False),
        sa.Column("lease_owner", sa.String(length=36), nullable=False),
        sa.Column("lease_until", UtcDateTime, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.order_id"],
        ),
        sa.PrimaryKeyConstraint("return_id"),
    )
    with op.batch_alter_table("order_returns", schema=None) as batch_op:
        batch_op.create_index("ix_order_returns_order", ["order_id", "created_at"], unique=False)
        batch_op.create_index("ix_order_returns_saga", ["status", "saga_at"], unique=False)

    op.create_table(
        "return_lines",
        sa.Column("return_id", sa.String(length=36), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("money_refunded_minor", sa.BigInteger(), nullable=False),
        sa.Column("points_returned", sa.BigInteger(), nullable=False),
        sa.Column("points_reversed", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["return_id"],
            ["order_returns.return_id"],
        ),
        sa.PrimaryKeyConstraint("return_id", "sku"),
    )


def downgrade() -> None:
    op.drop_table("return_lines")
    with op.batch_alter_table("order_returns", schema=None) as batch_op:
        batch_op.drop_index("ix_order_returns_saga")
        batch_op.drop_index("ix_order_returns_order")

    op.drop_table("order_returns")
    op.drop_table("order_lines")
    with op.batch_alter_table("order_events", schema=None) as batch_op:
        batch_op.drop_index("ix_order_events_order")

    op.drop_table("order_events")
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_index("ix_products_category_sku")

    op.drop_table("products")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_saga")
        batch_op.drop_index("ix_orders_customer_created")
        batch_op.drop_index("ix_orders_created")

    op.drop_table("orders")
