"""Tables of the Points database (its own metadata, apart from every other service)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, String
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.db import UtcDateTime
from shared.runtime_tables import add_runtime_tables


class PointsTable(SQLModel, registry=registry()):
    pass


class Lot(PointsTable, table=True):
    __tablename__ = "lots"
    __table_args__ = (
        Index("ix_lots_customer_status_expiry", "customer_id", "status", "expires_at"),
        Index("ix_lots_reference", "reference"),
    )

    lot_id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(max_length=64)
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    remaining: int = Field(sa_column=Column(BigInteger, nullable=False))
    source: str = Field(max_length=32)
    reference: str = Field(max_length=128)
    status: str = Field(max_length=16)
    available_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    expires_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    reason: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))
    operator_id: str = Field(default="", max_length=64)


class Entry(PointsTable, table=True):
    """History: one row per change of any lot, so every balance change is explained."""

    __tablename__ = "entries"
    __table_args__ = (Index("ix_entries_customer_time", "customer_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: str = Field(max_length=64)
    lot_id: str = Field(max_length=36, foreign_key="lots.lot_id")
    kind: str = Field(max_length=32)
    delta: int = Field(sa_column=Column(BigInteger, nullable=False))
    source: str = Field(max_length=32)
    reference: str = Field(max_length=128)
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    note: str = Field(default="", max_length=500)


metadata = PointsTable.metadata
runtime_tables = add_runtime_tables(metadata)
