"""Opening, reading and changing the status of wallets."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from services.wallet.adapters.ledger import LedgerRepository
from services.wallet.adapters.promotions_peer import MechanicLookup
from services.wallet.adapters.repository import WalletRepository
from services.wallet.adapters.tables import Wallet, WalletStatusChange
from services.wallet.domain.mechanics import Mechanic
from services.wallet.domain.wallets import WalletStatus, currency_of
from shared.clock import Clock
from shared.db import Database, UnitOfWork
from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from shared.ids import new_id
from shared.validation import validate_customer_id


def wallet_not_found(customer_id: str) -> NotFound:
    return NotFound("WALLET_NOT_FOUND", f"customer {customer_id} has no wallet", metadata={"customer_id": customer_id})


def check_accepts_money_in(wallet: Wallet) -> None:
    """Top-ups and new holds need an active wallet."""
    if wallet.status == WalletStatus.FROZEN:
        raise FailedPrecondition("WALLET_FROZEN", "the wallet is frozen", metadata={"wallet_id": wallet.wallet_id})
    if wallet.status == WalletStatus.CLOSED:
        raise FailedPrecondition("WALLET_CLOSED", "the wallet is closed", metadata={"wallet_id": wallet.wallet_id})


class Accounts:
    def __init__(self, database: Database, clock: Clock, mechanics: MechanicLookup) -> None:
        self._db = database
        self._clock = clock
        self.mechanics = mechanics

    @property
    def default_mechanic(self) -> Mechanic:
        return self.mechanics.default

    def open(self, uow: UnitOfWork, customer_id: str, currency_code: str) -> Wallet:
        validate_customer_id(customer_id)
        currency = currency_of(currency_code)
        if WalletRepository(uow.session).by_customer(customer_id) is not None:
            raise self._exists(customer_id)
        wallet = self._insert(uow, customer_id, currency)
        if wallet is None:
            raise self._exists(customer_id)
        return wallet

    def open_if_missing(self, uow: UnitOfWork, customer_id: str) -> Wallet:
        """The customer's wallet, locked for the rest of the transaction; opened if missing."""
        wallets = WalletRepository(uow.session)
        wallet = wallets.by_customer(customer_id, lock=True)
        if wallet is None:
            wallet = self._insert(uow, customer_id, "RUB") or wallets.by_customer(customer_id, lock=True)
        assert wallet is not None
        return wallet

    def _insert(self, uow: UnitOfWork, customer_id: str, currency: str) -> Wallet | None:
        """Insert a wallet with its ledger accounts; None if a concurrent request opened it first."""
        now = self._clock.now()
        wallet = Wallet(
            wallet_id=new_id(),
            customer_id=customer_id,
            currency=currency,
            balance_minor=0,
            held_minor=0,
            status=WalletStatus.ACTIVE.value,
            created_at=now,
            updated_at=now,
        )
        try:
            with uow.session.begin_nested():
                WalletRepository(uow.session).add(wallet)
                LedgerRepository(uow.session).open_accounts(wallet.wallet_id, currency, now)
        except IntegrityError:
            return None
        return wallet

    @staticmethod
    def _exists(customer_id: str) -> AlreadyExists:
        return AlreadyExists(
            "WALLET_ALREADY_EXISTS",
            f"customer {customer_id} already has a wallet",
            metadata={"customer_id": customer_id},
        )

    def get(self, customer_id: str) -> Wallet:
        validate_customer_id(customer_id)
        with self._db.read() as session:
            wallet = WalletRepository(session).by_customer(customer_id)
            session.expunge_all()  # detached, fully loaded: the end of the session expires nothing
        if wallet is None:
            raise wallet_not_found(customer_id)
        return wallet

    def find(self, customer_id: str) -> Wallet | None:
        with self._db.read() as session:
            wallet = WalletRepository(session).by_customer(customer_id)
            session.expunge_all()
        return wallet

    def mechanic_of(self, customer_id: str) -> Mechanic:
        """The customer's mechanic now, as Promotions answers, or the configured default."""
        return self.mechanics.current(customer_id)

    def update_status(
        self, uow: UnitOfWork, customer_id: str, status: WalletStatus, reason: str, operator_id: str
    ) -> Wallet:
        validate_customer_id(customer_id)
        if not operator_id.strip():
            raise InvalidArgument.field("operator_id", "is required for an operator action", "OPERATOR_REQUIRED")
        if not reason.strip():
            raise InvalidArgument.field("reason", "is required for the audit record", "REASON_REQUIRED")
        if len(reason) > 500 or len(operator_id) > 64:
            raise InvalidArgument.field("reason", "at most 500 characters (operator_id 64)", "INVALID_ARGUMENT")
        wallet = WalletRepository(uow.session).by_customer(customer_id, lock=True)
        if wallet is None:
            raise wallet_not_found(customer_id)
        if wallet.status == WalletStatus.CLOSED:
            raise FailedPrecondition(
                "WALLET_CLOSED", "a closed wallet stays closed", metadata={"wallet_id": wallet.wallet_id}
            )
        if status is WalletStatus.CLOSED and wallet.balance_minor != 0:
            raise FailedPrecondition(
                "WALLET_BALANCE_NOT_ZERO",
                "only a wallet with a zero balance (and no holds) can be closed",
                metadata={"wallet_id": wallet.wallet_id, "balance_minor": str(wallet.balance_minor)},
            )
        now = self._clock.now()
        uow.session.add(
            WalletStatusChange(
                wallet_id=wallet.wallet_id,
                from_status=wallet.status,
                to_status=status.value,
                reason=reason.strip(),
                operator_id=operator_id.strip(),
                created_at=now,
            )
        )
        wallet.status = status.value
        wallet.updated_at = now
        uow.session.add(wallet)
        uow.session.flush()
        return wallet
