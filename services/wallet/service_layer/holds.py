"""Two-phase movement of money: hold, then capture (all or part) or release; refunds; expiry.

Wallet holds move money from the customer's wallet account to their holds account (the balance
stays the customer's, the available part shrinks); the database refuses a hold larger than the
available balance, so concurrent holds never overdraw. Card holds are authorisations at the
acquirer and touch the ledger only when captured (card -> merchant).

Every acquirer call happens outside database transactions, under a key derived from the hold and
the request, so a retry after a failure or a timeout never moves card money twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Table, bindparam, delete, select, update

from services.wallet.adapters.ledger import LedgerRepository
from services.wallet.adapters.repository import PaymentRepository, WalletRepository
from services.wallet.adapters.tables import Hold, Refund
from services.wallet.domain.holds import (
    HoldStatus,
    PaymentMethod,
    RefundDestination,
    RefundStatus,
    check_capture,
    check_refund,
    validate_reference,
)
from services.wallet.domain.ledger import (
    CARD_CLEARING,
    MERCHANT,
    Leg,
    StatementEntryType,
    TransferKind,
    holds_account,
    wallet_account,
)
from services.wallet.domain.wallets import WalletStatus
from services.wallet.service_layer.accounts import check_accepts_money_in, wallet_not_found
from services.wallet.service_layer.acquirer import Acquirer, AcquirerResult, AcquirerTimeout
from services.wallet.service_layer.top_ups import card_declined
from shared.clock import Clock
from shared.db import Database, UnitOfWork, rowcount
from shared.errors import DomainError, FailedPrecondition, NotFound, PeerUnavailable
from shared.idempotency import Idempotency
from shared.ids import new_id
from shared.validation import validate_customer_id

log = logging.getLogger(__name__)

HOLD_SCOPE = "WalletService/HoldMoney"
_holds: Table = Hold.__table__  # type: ignore[attr-defined]
SWEEP_BATCH = 500
_MARK_CAPTURED = (
    update(_holds)
    .where(_holds.c.hold_id == bindparam("c_hold_id", type_=_holds.c.hold_id.type))
    .values(
        status=bindparam("c_status", type_=_holds.c.status.type),
        captured_minor=bindparam("c_amount", type_=_holds.c.captured_minor.type),
        captured_at=bindparam("c_now", type_=_holds.c.captured_at.type),
        updated_at=bindparam("c_now"),
    )
)


def hold_not_found(hold_id: str) -> NotFound:
    return NotFound("HOLD_NOT_FOUND", f"no hold {hold_id}", metadata={"hold_id": hold_id})


def capture_key(hold_id: str, amount_minor: int) -> str:
    return f"capture:{hold_id}:{amount_minor}"


class CardCaptureFirst(Exception):
    """The hold to capture is a card's: the acquirer captures before the ledger books it."""

    def __init__(self, hold_id: str, acquirer_key: str, amount_minor: int) -> None:
        super().__init__(hold_id)
        self.hold_id = hold_id
        self.acquirer_key = acquirer_key
        self.amount_minor = amount_minor


@dataclass(frozen=True)
class Released:
    holds: int
    amount_minor: int


class Holds:
    def __init__(self, database: Database, clock: Clock, acquirer: Acquirer, idempotency: Idempotency) -> None:
        self._db = database
        self._clock = clock
        self._acquirer = acquirer
        self._idempotency = idempotency

    # -- hold ------------------------------------------------------------------------------------

    def hold_wallet(self, uow: UnitOfWork, customer_id: str, amount_minor: int, reference: str, ttl: timedelta) -> Hold:
        validate_customer_id(customer_id)
        validate_reference(reference)
        wallet = WalletRepository(uow.session).by_customer(customer_id)
        if wallet is None:
            raise wallet_not_found(customer_id)
        check_accepts_money_in(wallet)
        now = self._clock.now()
        hold = Hold(
            hold_id=new_id(),
            customer_id=customer_id,
            wallet_id=wallet.wallet_id,
            reference=reference,
            payment_method=PaymentMethod.WALLET.value,
            amount_minor=amount_minor,
            currency=wallet.currency,
            status=HoldStatus.ACTIVE.value,
            expire_at=now + ttl,
            created_at=now,
            updated_at=now,
        )
        PaymentRepository(uow.session).insert_hold(hold)
        # The database decides: the conditional update refuses what the available balance lacks.
        LedgerRepository(uow.session).transfer(
            kind=TransferKind.HOLD,
            legs=[Leg(wallet_account(wallet.wallet_id), holds_account(wallet.wallet_id), amount_minor)],
            reference=hold.hold_id,
            now=now,
            wallet_id=wallet.wallet_id,
        )
        return hold

    def begin_card(
        self,
        uow: UnitOfWork,
        customer_id: str,
        amount_minor: int,
        reference: str,
        ttl: timedelta,
        card_token: str,
        acquirer_key: str,
    ) -> Hold:
        validate_customer_id(customer_id)
        validate_reference(reference)
        wallet = WalletRepository(uow.session).by_customer(customer_id)
        now = self._clock.now()
        hold = Hold(
            hold_id=new_id(),
            customer_id=customer_id,
            wallet_id=wallet.wallet_id if wallet is not None else None,
            reference=reference,
            payment_method=PaymentMethod.CARD.value,
            card_token=card_token,
            acquirer_key=acquirer_key,
            amount_minor=amount_minor,
            currency="RUB",
            status=HoldStatus.PENDING.value,
            expire_at=now + ttl,
            created_at=now,
            updated_at=now,
        )
        PaymentRepository(uow.session).add(hold)
        return hold

    def settle_card(self, hold_id: str, request_id: str) -> Hold:
        """Authorise a pending card hold exactly once (as `TopUps.settle` charges)."""
        hold = self.get(hold_id)
        if hold.status != HoldStatus.PENDING:
            if hold.status == HoldStatus.RELEASED and hold.release_reason == "CARD_DECLINED":
                raise card_declined("CARD_DECLINED", hold_id=hold_id)
            return hold
        try:
            result = self._acquirer.authorise(hold.acquirer_key, hold.card_token, hold.amount_minor, hold.currency)
        except AcquirerTimeout:
            log.warning("acquirer timed out; card hold left pending", extra={"hold_id": hold_id})
            self._set_if_pending(hold_id, timed_out=True)
            return self.get(hold_id)
        h = _holds.c
        now = self._clock.now()
        if result.approved:
            self._set_if_pending(
                hold_id,
                status=HoldStatus.ACTIVE.value,
                card_brand=result.card.brand,
                card_last4=result.card.last4,
                updated_at=now,
            )
            return self.get(hold_id)
        with self._db.unit_of_work() as uow:
            removed = rowcount(
                uow.session.execute(
                    delete(_holds).where(
                        h.hold_id == hold_id, h.status == HoldStatus.PENDING.value, h.timed_out.is_(False)
                    )
                )
            )
            if removed == 1:
                self._idempotency.forget(uow, HOLD_SCOPE, request_id)
                uow.commit()
                raise card_declined(result.decline_reason)
            uow.session.execute(
                update(_holds)
                .where(h.hold_id == hold_id, h.status == HoldStatus.PENDING.value)
                .values(status=HoldStatus.RELEASED.value, release_reason="CARD_DECLINED", updated_at=now)
            )
            uow.commit()
        raise card_declined(result.decline_reason, hold_id=hold_id)

    def _set_if_pending(self, hold_id: str, **values: object) -> None:
        with self._db.unit_of_work() as uow:
            uow.session.execute(
                update(_holds)
                .where(_holds.c.hold_id == hold_id, _holds.c.status == HoldStatus.PENDING.value)
                .values(**values)
            )
            uow.commit()

    # -- capture -----------------------------------------------------------------------------------

    def capture_at_acquirer(self, card: CardCaptureFirst) -> None:
        """Capture a card hold at the acquirer (outside any transaction), before `capture` books it."""
        result = self._call_acquirer(
            lambda: self._acquirer.capture(
                capture_key(card.hold_id, card.amount_minor), card.acquirer_key, card.amount_minor
            )
        )
        if not result.approved:
            raise FailedPrecondition(
                "CARD_CAPTURE_FAILED",
                "the acquirer refused the capture",
                metadata={"hold_id": card.hold_id, "acquirer_reason": result.decline_reason},
            )

    def capture(self, uow: UnitOfWork, hold_id: str, amount_minor: int | None, *, card_captured: bool = False) -> Hold:
        """Capture `amount_minor` (None: all) of a hold, under its row lock.

        A card hold must be captured at the acquirer first: unless `card_captured`, this raises
        CardCaptureFirst (the caller rolls back, calls `capture_at_acquirer`, and comes back)."""
        hold = self._locked(uow, hold_id)
        now = self._clock.now()
        amount = hold.amount_minor if amount_minor is None else amount_minor
        check_capture(HoldStatus(hold.status), hold.expire_at, now, amount, hold.amount_minor)
        if hold.payment_method == PaymentMethod.CARD and not card_captured:
            raise CardCaptureFirst(hold_id, hold.acquirer_key, amount)
        ledger = LedgerRepository(uow.session)
        if hold.payment_method == PaymentMethod.WALLET:
            assert hold.wallet_id is not None
            legs = [Leg(holds_account(hold.wallet_id), MERCHANT, amount)]
            if amount < hold.amount_minor:  # the rest is released at the same time
                legs.append(
                    Leg(holds_account(hold.wallet_id), wallet_account(hold.wallet_id), hold.amount_minor - amount)
                )
            ledger.transfer(
                kind=TransferKind.CAPTURE,
                legs=legs,
                reference=hold.reference,
                now=now,
                wallet_id=hold.wallet_id,
                entry=(StatementEntryType.PAYMENT, f"Payment {hold.reference}".strip()),
            )
        else:
            ledger.transfer(
                kind=TransferKind.CARD_CAPTURE,
                legs=[Leg(CARD_CLEARING, MERCHANT, amount)],
                reference=hold.reference,
                now=now,
            )
        uow.session.execute(
            _MARK_CAPTURED,
            {"c_hold_id": hold_id, "c_status": HoldStatus.CAPTURED.value, "c_amount": amount, "c_now": now},
        )
        uow.session.expunge(hold)  # the UPDATE above wrote the change: nothing for the session to flush
        hold.status = HoldStatus.CAPTURED.value
        hold.captured_minor = amount
        hold.captured_at = now
        hold.updated_at = now
        return hold

    # -- release -----------------------------------------------------------------------------------

    def prepare_release(self, hold_id: str) -> None:
        hold = self.get(hold_id)
        if hold.status == HoldStatus.CAPTURED:
            raise FailedPrecondition("HOLD_ALREADY_CAPTURED", "a captured hold cannot be released; refund it")
        if hold.payment_method == PaymentMethod.CARD and hold.status in (HoldStatus.ACTIVE, HoldStatus.PENDING):
            self._void(hold)

    def release(self, uow: UnitOfWork, hold_id: str, reason: str, *, expired: bool = False) -> Hold:
        """Release an active (or pending card) hold in full; a released or expired one as is."""
        hold = self._locked(uow, hold_id)
        status = HoldStatus(hold.status)
        if status is HoldStatus.CAPTURED:
            raise FailedPrecondition("HOLD_ALREADY_CAPTURED", "a captured hold cannot be released; refund it")
        if status in (HoldStatus.RELEASED, HoldStatus.EXPIRED):
            return hold
        now = self._clock.now()
        if hold.payment_method == PaymentMethod.WALLET:
            assert hold.wallet_id is not None
            LedgerRepository(uow.session).transfer(
                kind=TransferKind.RELEASE,
                legs=[Leg(holds_account(hold.wallet_id), wallet_account(hold.wallet_id), hold.amount_minor)],
                reference=hold.hold_id,
                now=now,
                wallet_id=hold.wallet_id,
            )
        hold.status = (HoldStatus.EXPIRED if expired else HoldStatus.RELEASED).value
        hold.release_reason = reason[:500]
        hold.updated_at = now
        uow.session.add(hold)
        uow.session.flush()
        return hold

    def release_expired(self) -> Released:
        """Release every active or pending hold past its expiry, in batches of short transactions;
        the status guard under the row lock makes each release happen once."""
        count = amount = 0
        skipped: set[str] = set()  # card holds the acquirer would not void this run; tried again next run
        while True:
            now = self._clock.now()
            with self._db.unit_of_work() as uow:
                query = select(_holds.c.hold_id).where(
                    _holds.c.status.in_([HoldStatus.ACTIVE.value, HoldStatus.PENDING.value]),
                    _holds.c.expire_at <= now,
                )
                if skipped:
                    query = query.where(_holds.c.hold_id.not_in(skipped))
                due = list(uow.session.execute(query.order_by(_holds.c.expire_at).limit(SWEEP_BATCH)).scalars())
            if not due:
                return Released(count, amount)
            for hold_id in due:
                hold = self.get(hold_id)
                if hold.payment_method == PaymentMethod.CARD:
                    try:
                        self._void(hold)
                    except DomainError as error:
                        # One card the acquirer will not void must not stop every other release.
                        log.warning("hold %s not released: %s %s", hold_id, error.reason, error.message)
                        skipped.add(hold_id)
                        continue
                with self._db.unit_of_work() as uow:
                    before = self._locked(uow, hold_id).status
                    released = self.release(uow, hold_id, "expired", expired=True)
                    uow.commit()
                if before in (HoldStatus.ACTIVE, HoldStatus.PENDING) and released.status == HoldStatus.EXPIRED:
                    count += 1
                    amount += released.amount_minor

    def _void(self, hold: Hold) -> None:
        result = self._call_acquirer(lambda: self._acquirer.void(f"void:{hold.hold_id}", hold.acquirer_key))
        if not result.approved:
            raise FailedPrecondition(
                "CARD_VOID_FAILED",
                "the acquirer refused to void the authorisation",
                metadata={"hold_id": hold.hold_id, "acquirer_reason": result.decline_reason},
            )

    # -- refund ------------------------------------------------------------------------------------

    def prepare_refund(self, hold_id: str, amount_minor: int, destination: RefundDestination, request_id: str) -> None:
        hold = self.get(hold_id)
        check_refund(HoldStatus(hold.status), hold.captured_minor, hold.refunded_minor, amount_minor)
        if self._to_card(hold, destination):
            payment = capture_key(hold_id, hold.captured_minor)
            result = self._call_acquirer(
                lambda: self._acquirer.refund(f"refund:{hold_id}:{request_id}", payment, amount_minor)
            )
            if not result.approved:
                raise FailedPrecondition(
                    "CARD_REFUND_FAILED",
                    "the acquirer refused the refund",
                    metadata={"hold_id": hold_id, "acquirer_reason": result.decline_reason},
                )

    def refund(
        self,
        uow: UnitOfWork,
        hold_id: str,
        amount_minor: int,
        destination: RefundDestination,
        reference: str,
        reason: str,
    ) -> tuple[Refund, Hold]:
        validate_reference(reference)
        hold = self._locked(uow, hold_id)
        check_refund(HoldStatus(hold.status), hold.captured_minor, hold.refunded_minor, amount_minor)
        now = self._clock.now()
        refund = Refund(
            refund_id=new_id(),
            hold_id=hold_id,
            amount_minor=amount_minor,
            destination=destination.value,
            status=RefundStatus.SUCCEEDED.value,
            reference=reference,
            reason=reason[:500],
            created_at=now,
        )
        ledger = LedgerRepository(uow.session)
        if self._to_card(hold, destination):
            refund.transfer_id = ledger.transfer(
                kind=TransferKind.REFUND,
                legs=[Leg(MERCHANT, CARD_CLEARING, amount_minor)],
                reference=refund.refund_id,
                now=now,
            )
        else:
            wallets = WalletRepository(uow.session)
            wallet = wallets.by_id(hold.wallet_id) if hold.wallet_id else wallets.by_customer(hold.customer_id)
            if wallet is None:
                raise wallet_not_found(hold.customer_id)
            if wallet.status == WalletStatus.CLOSED:
                raise FailedPrecondition(
                    "WALLET_CLOSED", "the wallet is closed", metadata={"wallet_id": wallet.wallet_id}
                )
            refund.transfer_id = ledger.transfer(
                kind=TransferKind.REFUND,
                legs=[Leg(MERCHANT, wallet_account(wallet.wallet_id), amount_minor)],
                reference=refund.refund_id,
                now=now,
                wallet_id=wallet.wallet_id,
                entry=(StatementEntryType.REFUND, f"Refund {hold.reference}".strip()),
            )
        PaymentRepository(uow.session).add(refund)
        hold.refunded_minor += amount_minor
        hold.updated_at = now
        uow.session.add(hold)
        uow.session.flush()
        return refund, hold

    @staticmethod
    def _to_card(hold: Hold, destination: RefundDestination) -> bool:
        return destination is RefundDestination.ORIGINAL_METHOD and hold.payment_method == PaymentMethod.CARD

    # -- reading -----------------------------------------------------------------------------------

    def get(self, hold_id: str) -> Hold:
        with self._db.unit_of_work() as uow:
            hold = PaymentRepository(uow.session).hold(hold_id)
            uow.session.expunge_all()
        if hold is None:
            raise hold_not_found(hold_id)
        return hold

    def get_with_refunds(self, hold_id: str) -> tuple[Hold, list[Refund]]:
        with self._db.unit_of_work() as uow:
            repository = PaymentRepository(uow.session)
            hold = repository.hold(hold_id)
            if hold is None:
                raise hold_not_found(hold_id)
            refunds = repository.refunds_of(hold_id)
            uow.session.expunge_all()
        return hold, refunds

    def refunds_of(self, hold_id: str) -> list[Refund]:
        with self._db.unit_of_work() as uow:
            refunds = PaymentRepository(uow.session).refunds_of(hold_id)
            uow.session.expunge_all()
        return refunds

    def _locked(self, uow: UnitOfWork, hold_id: str) -> Hold:
        hold = PaymentRepository(uow.session).hold(hold_id, lock=True)
        if hold is None:
            raise hold_not_found(hold_id)
        return hold

    @staticmethod
    def _call_acquirer(call: Callable[[], AcquirerResult]) -> AcquirerResult:
        try:
            return call()
        except AcquirerTimeout:
            raise PeerUnavailable(
                "ACQUIRER_TIMEOUT", "the acquirer did not answer; retry with the same request id"
            ) from None
