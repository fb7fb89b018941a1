"""Wallets, top-ups, holds and refunds through one session (the unit of work's)."""

from __future__ import annotations

from sqlmodel import Session, select

from services.wallet.adapters.tables import Hold, Refund, TopUp, Wallet


class WalletRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def by_customer(self, customer_id: str, *, lock: bool = False) -> Wallet | None:
        query = select(Wallet).where(Wallet.customer_id == customer_id).execution_options(populate_existing=True)
        if lock:
            query = query.with_for_update()
        return self._session.exec(query).first()

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
        query = select(Hold).where(Hold.hold_id == hold_id).execution_options(populate_existing=True)
        if lock:
            query = query.with_for_update()
        return self._session.exec(query).first()

    def refunds_of(self, hold_id: str) -> list[Refund]:
        query = select(Refund).where(Refund.hold_id == hold_id).order_by(Refund.created_at, Refund.refund_id)  # type: ignore[arg-type]
        return list(self._session.exec(query).all())

    def add(self, row: TopUp | Hold | Refund) -> None:
        self._session.add(row)
        self._session.flush()
