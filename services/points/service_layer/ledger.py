"""Crediting points and reading balances."""

from __future__ import annotations

import uuid
from datetime import timedelta

from services.points.adapters.repository import LotRepository
from services.points.adapters.tables import Entry, Lot
from services.points.domain.lots import (
    Balance,
    CreditRequest,
    LotStatus,
    balance_of,
    expiry_of,
    validate_credit,
)
from shared.clock import Clock
from shared.db import Database, UnitOfWork
from shared.errors import InvalidArgument
from shared.validation import validate_customer_id

MAX_EXPIRING_WINDOW_DAYS = 3650


class Ledger:
    def __init__(self, database: Database, clock: Clock, default_lifetime: timedelta) -> None:
        self._db = database
        self._clock = clock
        self._default_lifetime = default_lifetime

    def credit(self, uow: UnitOfWork, request: CreditRequest) -> Lot:
        """Add a lot (inside the caller's transaction, which also holds the idempotency key)."""
        now = self._clock.now()
        validate_credit(request, now)
        status = LotStatus.PENDING if request.pending else LotStatus.AVAILABLE
        lot = Lot(
            lot_id=str(uuid.uuid4()),
            customer_id=request.customer_id,
            amount=request.points,
            remaining=request.points,
            source=request.source.value,
            reference=request.reference,
            status=status.value,
            available_at=now,
            expires_at=expiry_of(request, now, self._default_lifetime),
            created_at=now,
            reason=request.reason,
            operator_id=request.operator_id,
        )
        entry = Entry(
            customer_id=request.customer_id,
            lot_id=lot.lot_id,
            kind="CREDIT_PENDING" if request.pending else "CREDIT",
            delta=request.points,
            source=request.source.value,
            reference=request.reference,
            created_at=now,
            note=request.reason,
        )
        LotRepository(uow.session).add(lot, entry)
        return lot

    def balance(self, customer_id: str, expiring_within_days: int) -> Balance:
        validate_customer_id(customer_id)
        if not 0 <= expiring_within_days <= MAX_EXPIRING_WINDOW_DAYS:
            raise InvalidArgument.field(
                "expiring_within_days", f"must be between 0 and {MAX_EXPIRING_WINDOW_DAYS}", "INVALID_WINDOW"
            )
        now = self._clock.now()
        with self._db.unit_of_work() as uow:
            lots = LotRepository(uow.session).live_lots(customer_id, now)
        return balance_of(lots, now, timedelta(days=expiring_within_days or 30))
