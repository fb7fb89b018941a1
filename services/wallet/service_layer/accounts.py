"""Opening and reading wallets."""

from __future__ import annotations

import uuid

from services.wallet.adapters.repository import WalletRepository
from services.wallet.adapters.tables import Wallet
from services.wallet.domain.mechanics import Mechanic
from services.wallet.domain.wallets import WalletStatus, currency_of
from shared.clock import Clock
from shared.db import Database, UnitOfWork
from shared.errors import AlreadyExists, NotFound
from shared.validation import validate_customer_id


class Accounts:
    def __init__(self, database: Database, clock: Clock, default_mechanic: Mechanic) -> None:
        self._db = database
        self._clock = clock
        self.default_mechanic = default_mechanic

    def open(self, uow: UnitOfWork, customer_id: str, currency_code: str) -> Wallet:
        validate_customer_id(customer_id)
        currency = currency_of(currency_code)
        wallets = WalletRepository(uow.session)
        if wallets.by_customer(customer_id) is not None:
            raise AlreadyExists(
                "WALLET_ALREADY_EXISTS",
                f"customer {customer_id} already has a wallet",
                metadata={"customer_id": customer_id},
            )
        wallet = Wallet(
            wallet_id=str(uuid.uuid4()),
            customer_id=customer_id,
            currency=currency,
            balance_minor=0,
            status=WalletStatus.ACTIVE.value,
            created_at=self._clock.now(),
        )
        wallets.add(wallet)
        return wallet

    def get(self, customer_id: str) -> Wallet:
        validate_customer_id(customer_id)
        with self._db.unit_of_work() as uow:
            wallet = WalletRepository(uow.session).by_customer(customer_id)
        if wallet is None:
            raise NotFound(
                "WALLET_NOT_FOUND", f"customer {customer_id} has no wallet", metadata={"customer_id": customer_id}
            )
        return wallet

    def mechanic_of(self, customer_id: str) -> Mechanic:
        """Until the Promotions look-up lands, every customer has the configured default."""
        return self.default_mechanic
