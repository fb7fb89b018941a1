"""The expiry and activation scans use partial indexes: only AVAILABLE lots by expiry, only
PENDING lots by activation time. A lot credited available, expired or spent is written into fewer
indexes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AVAILABLE_ONLY = "status = 'AVAILABLE'"
PENDING_ONLY = "status = 'PENDING'"


def upgrade() -> None:
    op.create_index(
        "ix_lots_available_expiry",
        "lots",
        ["expires_at"],
        postgresql_where=sa.text(AVAILABLE_ONLY),
        sqlite_where=sa.text(AVAILABLE_ONLY),
    )
    op.create_index(
        "ix_lots_pending_available",
        "lots",
        ["available_at"],
        postgresql_where=sa.text(PENDING_ONLY),
        sqlite_where=sa.text(PENDING_ONLY),
    )
    op.drop_index("ix_lots_status_expiry", table_name="lots")
    op.drop_index("ix_lots_status_available", table_name="lots")


def downgrade() -> None:
    op.create_index("ix_lots_status_available", "lots", ["status", "available_at"])
    op.create_index("ix_lots_status_expiry", "lots", ["status", "expires_at"])
    op.drop_index("ix_lots_pending_available", table_name="lots")
    op.drop_index("ix_lots_available_expiry", table_name="lots")
