"""Wallets through one session (the unit of work's)."""

from __future__ import annotations

from sqlmodel import Session, select

from services.wallet.adapters.tables import Wallet


class WalletRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def by_customer(self, customer_id: str) -> Wallet | None:
        return self._session.exec(select(Wallet).where(Wallet.customer_id == customer_id)).first()

    def add(self, wallet: Wallet) -> None:
        self._session.add(wallet)
        self._session.flush()
