"""Tables of the Promotions database (its own metadata, apart from every other service)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.db import UtcDateTime
from shared.runtime_tables import add_runtime_tables


class PromotionsTable(SQLModel, registry=registry()):
    pass


class ProfileReward(PromotionsTable, table=True):
    __tablename__ = "profile_rewards"
    __table_args__ = (UniqueConstraint("customer_id", "action", "survey_id", name="uq_profile_rewards_once"),)

    reward_id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(max_length=64)
    action: str = Field(max_length=32)
    survey_id: str = Field(max_length=64)
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


metadata = PromotionsTable.metadata
runtime_tables = add_runtime_tables(metadata)
