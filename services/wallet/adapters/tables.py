"""Tables of the Wallet database (its own metadata, apart from every other service)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.db import UtcDateTime
from shared.runtime_tables import add_runtime_tables


class WalletTable(SQLModel, registry=registry()):
    pass


class Wallet(WalletTable, table=True):
    __tablename__ = "wallets"

    wallet_id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(max_length=64, unique=True)
    currency: str = Field(max_length=3)
    balance_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    status: str = Field(max_length=16)
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


metadata = WalletTable.metadata
runtime_tables = add_runtime_tables(metadata)
