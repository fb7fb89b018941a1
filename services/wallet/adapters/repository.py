"""Wallets, top-ups, holds and refunds through one session (the unit of work's).

The statements of the payment path are built once, with bind parameters: building a SQLAlchemy
construct costs more CPU than executing its cached compiled form.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, bindparam, insert
from sqlmodel import Session, select

from services.wallet.adapters.tables import Hold, Refund, TopUp, Wallet

_holds: Table = Hold.__table__  # type: ignore[attr-defined]

_WALLET_OF_CUSTOMER = (
    select(Wallet).where(Wallet.customer_id == bindparam("customer_id")).execution_options(populate_existing=True)
)
_WALLET_OF_CUSTOMER_LOCKED = _WALLET_OF_CUSTOMER.with_for_update()
_HOLD = select(Hold).where(Hold.hold_id == bindparam("hold_id")).execution_options(populate_existing=True)
_HOLD_LOCKED = _HOLD.with_for_update()
_INSERT_HOLD = insert(_holds)


class WalletRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def by_customer(self, customer_id: str, *, lock: bool = False) -> Wallet | None:
        query = _WALLET_OF_CUSTOMER_LOCKED if lock else _WALLET_OF_CUSTOMER
        return self._session.exec(query, params={"customer_id": customer_id}).first()

    def by_id(self, wallet_id: str, *, lock: bool = False) -> Wallet | None:
        query = select(Wallet).where(Wallet.wallet_id == wallet_id).execution_options(populate_existing=True)
        if lock:
            query = query.with_for_update()
        return self._session.exec(query).first()

    def add(self, wallet: Wallet) -> None:
        self._session.add(wallet)
        self._session.flush()


class PaymentRepository:
    """Top-ups, holds and refunds."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def top_up(self, top_up_id: str) -> TopUp | None:
        query = select(TopUp).where(TopUp.top_up_id == top_up_id).execution_options(populate_existing=True)
        return self._session.exec(query).first()

    def hold(self, hold_id: str, *, lock: bool = False) -> Hold | None:
        return self._session.exec(_HOLD_LOCKED if lock else _HOLD, params={"hold_id": hold_id}).first()

    def insert_hold(self, hold: Hold) -> None:
        """Insert a new hold row without tracking `hold` in the session (a plain INSERT)."""
        values: dict[str, Any] = {column.name: getattr(hold, column.name) for column in _holds.columns}
        self._session.execute(_INSERT_HOLD, values)

    def refunds_of(self, hold_id: str) -> list[Refund]:
        query = select(Refund).where(Refund.hold_id == hold_id).order_by(Refund.created_at, Refund.refund_id)  # type: ignore[arg-type]
        return list(self._session.exec(query).all())

    def add(self, row: TopUp | Hold | Refund) -> None:
        self._session.add(row)
        self._session.flush()
