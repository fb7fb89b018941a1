"""Card top-ups: reserve, ask the acquirer, settle exactly once.

1. In one transaction with the idempotency key: open the wallet if needed, check its status and
   the limits, record the top-up PENDING with its acquirer key (derived from the request).
2. Outside any transaction: ask the acquirer to charge under that key.
3. Settle: approved -> SUCCEEDED and the ledger transfer card -> wallet, guarded by
   `status = PENDING` so only one settlement ever books; declined on the first answer -> the
   top-up and its key are removed and the call fails with CARD_DECLINED (nothing happened);
   no answer -> stays PENDING. A retry with the same request id finds the pending top-up and asks
   the acquirer again under the same key, which answers with the first outcome and never charges
   twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Table, delete, func, select, update

from services.wallet.adapters.ledger import LedgerRepository
from services.wallet.adapters.repository import PaymentRepository, WalletRepository
from services.wallet.adapters.tables import TopUp, Wallet
from services.wallet.domain.holds import TopUpStatus
from services.wallet.domain.ledger import CARD_CLEARING, Leg, StatementEntryType, TransferKind, wallet_account
from services.wallet.domain.limits import Limits
from services.wallet.service_layer.accounts import Accounts, check_accepts_money_in
from services.wallet.service_layer.acquirer import Acquirer, AcquirerTimeout
from shared.calendar import ProgrammeCalendar
from shared.clock import Clock
from shared.db import Database, UnitOfWork, rowcount
from shared.errors import FailedPrecondition, NotFound
from shared.idempotency import Idempotency
from shared.ids import new_id
from shared.metrics import Metrics

log = logging.getLogger(__name__)

SCOPE = "WalletService/TopUp"
_top_ups: Table = TopUp.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class LimitsView:
    limits: Limits
    used_today_minor: int | None
    allowance_minor: int | None


def card_declined(reason: str, **metadata: str) -> FailedPrecondition:
    return FailedPrecondition(
        "CARD_DECLINED", "the card was declined", metadata={"acquirer_reason": reason or "CARD_DECLINED", **metadata}
    )


class TopUps:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        calendar: ProgrammeCalendar,
        limits: Limits,
        acquirer: Acquirer,
        accounts: Accounts,
        idempotency: Idempotency,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = database
        self._metrics = metrics or Metrics.noop()
        self._clock = clock
        self._calendar = calendar
        self.limits = limits
        self._acquirer = acquirer
        self._accounts = accounts
        self._idempotency = idempotency

    def begin(self, uow: UnitOfWork, customer_id: str, amount_minor: int, card_token: str, acquirer_key: str) -> TopUp:
        wallet = self._accounts.open_if_missing(uow, customer_id)  # locked until commit
        check_accepts_money_in(wallet)
        used_today, pending = self._reserved(uow, wallet)
        self.limits.check_top_up(amount_minor, used_today, wallet.balance_minor + pending)
        top_up = TopUp(
            top_up_id=new_id(),
            wallet_id=wallet.wallet_id,
            customer_id=customer_id,
            amount_minor=amount_minor,
            currency=wallet.currency,
            status=TopUpStatus.PENDING.value,
            card_token=card_token,
            acquirer_key=acquirer_key,
            created_at=self._clock.now(),
        )
        PaymentRepository(uow.session).add(top_up)
        return top_up

    def _reserved(self, uow: UnitOfWork, wallet: Wallet) -> tuple[int, int]:
        """(top-ups of the customer today, pending or succeeded; pending top-ups of the wallet)."""
        t = _top_ups.c
        today = self._calendar.start_of_day(self._calendar.local_date(self._clock.now()))
        used = uow.session.execute(
            select(func.coalesce(func.sum(t.amount_minor), 0)).where(
                t.customer_id == wallet.customer_id,
                t.status.in_([TopUpStatus.PENDING.value, TopUpStatus.SUCCEEDED.value]),
                t.created_at >= today,
            )
        ).scalar_one()
        pending = uow.session.execute(
            select(func.coalesce(func.sum(t.amount_minor), 0)).where(
                t.wallet_id == wallet.wallet_id, t.status == TopUpStatus.PENDING.value
            )
        ).scalar_one()
        return int(used), int(pending)

    def settle(self, top_up_id: str, request_id: str) -> TopUp:
        """Bring a pending top-up to its outcome if the acquirer answers; see the module doc."""
        top_up = self.get(top_up_id)
        if top_up.status != TopUpStatus.PENDING:
            return top_up
        try:
            result = self._acquirer.charge(top_up.acquirer_key, top_up.card_token, top_up.amount_minor, top_up.currency)
        except AcquirerTimeout:
            log.warning("acquirer timed out; top-up left pending", extra={"top_up_id": top_up_id})
            with self._db.unit_of_work() as uow:
                uow.session.execute(
                    update(_top_ups)
                    .where(_top_ups.c.top_up_id == top_up_id, _top_ups.c.status == TopUpStatus.PENDING.value)
                    .values(timed_out=True)
                )
                uow.commit()
            return self.get(top_up_id)
        t = _top_ups.c
        now = self._clock.now()
        with self._db.unit_of_work() as uow:
            if result.approved:
                settled = rowcount(
                    uow.session.execute(
                        update(_top_ups)
                        .where(t.top_up_id == top_up_id, t.status == TopUpStatus.PENDING.value)
                        .values(
                            status=TopUpStatus.SUCCEEDED.value,
                            card_brand=result.card.brand,
                            card_last4=result.card.last4,
                            settled_at=now,
                        )
                    )
                )
                if settled == 1:  # this call settles it; any other found it settled already
                    transfer_id = LedgerRepository(uow.session).transfer(
                        kind=TransferKind.TOP_UP,
                        legs=[Leg(CARD_CLEARING, wallet_account(top_up.wallet_id), top_up.amount_minor)],
                        reference=top_up_id,
                        now=now,
                        wallet_id=top_up.wallet_id,
                        entry=(StatementEntryType.TOP_UP, f"Top-up from {result.card.brand} *{result.card.last4}"),
                    )
                    uow.session.execute(
                        update(_top_ups).where(t.top_up_id == top_up_id).values(transfer_id=transfer_id)
                    )
                    uow.on_commit(lambda: self._metrics.money_topped_up(top_up.amount_minor, top_up.currency))
                uow.commit()
                return self.get(top_up_id)
            # Declined. Answered at once: the top-up never was (and its request id is free again).
            removed = rowcount(
                uow.session.execute(
                    delete(_top_ups).where(
                        t.top_up_id == top_up_id, t.status == TopUpStatus.PENDING.value, t.timed_out.is_(False)
                    )
                )
            )
            if removed == 1:
                self._idempotency.forget(uow, SCOPE, request_id)
                uow.commit()
                raise card_declined(result.decline_reason)
            # Declined after the top-up was reported pending: it settles as DECLINED.
            uow.session.execute(
                update(_top_ups)
                .where(t.top_up_id == top_up_id, t.status == TopUpStatus.PENDING.value)
                .values(
                    status=TopUpStatus.DECLINED.value,
                    failure_reason=result.decline_reason or "CARD_DECLINED",
                    card_brand=result.card.brand,
                    card_last4=result.card.last4,
                    settled_at=now,
                )
            )
            uow.commit()
        return self.get(top_up_id)

    def get(self, top_up_id: str) -> TopUp:
        with self._db.unit_of_work() as uow:
            top_up = PaymentRepository(uow.session).top_up(top_up_id)
            uow.session.expunge_all()
        if top_up is None:
            raise NotFound("TOP_UP_NOT_FOUND", f"no top-up {top_up_id}", metadata={"top_up_id": top_up_id})
        return top_up

    def wallet_of(self, top_up: TopUp) -> Wallet:
        with self._db.unit_of_work() as uow:
            wallet = WalletRepository(uow.session).by_id(top_up.wallet_id)
            uow.session.expunge_all()
        assert wallet is not None
        return wallet

    def limits_for(self, customer_id: str) -> LimitsView:
        if not customer_id:
            return LimitsView(self.limits, None, None)
        with self._db.unit_of_work() as uow:
            wallet = WalletRepository(uow.session).by_customer(customer_id)
            if wallet is None:
                return LimitsView(self.limits, 0, self.limits.allowance(0, 0))
            used, pending = self._reserved(uow, wallet)
            balance = wallet.balance_minor
        return LimitsView(self.limits, used, self.limits.allowance(used, balance + pending))
