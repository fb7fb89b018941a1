"""Lots and history entries through one session (the unit of work's)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from services.points.adapters.tables import Entry, Lot
from services.points.domain.lots import LotStatus, LotView


class LotRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, lot: Lot, entry: Entry) -> None:
        self._session.add(lot)
        self._session.flush()  # the entry's foreign key needs the lot row first
        self._session.add(entry)
        self._session.flush()

    def live_lots(self, customer_id: str, now: datetime) -> list[LotView]:
        rows = self._session.exec(
            select(Lot).where(
                Lot.customer_id == customer_id,
                col(Lot.status).in_([LotStatus.PENDING.value, LotStatus.AVAILABLE.value]),
                Lot.remaining > 0,
                col(Lot.expires_at) > now,
            )
        ).all()
        return [LotView(remaining=r.remaining, status=LotStatus(r.status), expires_at=r.expires_at) for r in rows]
