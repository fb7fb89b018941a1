"""The bundled acquirer simulator, with documented test card tokens.

| token                  | card             | outcome                                                      |
|------------------------|------------------|--------------------------------------------------------------|
| `tok_ok`               | VISA *4242       | approved                                                     |
| `tok_mastercard`       | MASTERCARD *4444 | approved                                                     |
| `tok_declined`         | VISA *0002       | declined (CARD_DECLINED)                                     |
| `tok_timeout`          | MIR *0003        | approved at the acquirer, but the answer never arrives       |
| `tok_timeout_declined` | MIR *0004        | declined at the acquirer, but the answer never arrives       |
| anything else          | unknown          | declined (UNKNOWN_CARD_TOKEN)                                 |

It behaves like a real acquirer with idempotency keys: the first request under a key decides the
outcome and stores it; any later request under the same key gets that stored outcome back and
changes nothing. For the `tok_timeout*` cards the first charge or authorisation is recorded and
then reported as a timeout (at once: the simulator does not make tests wait for a deadline); asking
again with the same key returns what was recorded. Captures, voids and refunds always answer.

Its state lives in its own table, `acquirer_simulator_operations`, in the wallet database, written
in transactions of its own (never the wallet's), exactly as if it were another system: it survives
restarts, and a wallet transaction that rolls back does not undo what the acquirer did.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from services.wallet.adapters.tables import AcquirerSimulatorOperation
from services.wallet.service_layer.acquirer import AcquirerResult, AcquirerTimeout, CardInfo
from shared.clock import Clock
from shared.db import Database

TEST_CARDS: dict[str, tuple[str, str, bool, bool]] = {
    # token: (brand, last4, approved, answer lost)
    "tok_ok": ("VISA", "4242", True, False),
    "tok_mastercard": ("MASTERCARD", "4444", True, False),
    "tok_declined": ("VISA", "0002", False, False),
    "tok_timeout": ("MIR", "0003", True, True),
    "tok_timeout_declined": ("MIR", "0004", False, True),
}


def card_of(token: str) -> CardInfo:
    brand, last4, _, _ = TEST_CARDS.get(token, ("UNKNOWN", "", False, False))
    return CardInfo(token=token, brand=brand, last4=last4)


class SimulatedAcquirer:
    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    # -- card-present operations: the outcome depends on the test card ------------------------

    def charge(self, key: str, token: str, amount_minor: int, currency: str) -> AcquirerResult:
        return self._first_phase("CHARGE", key, token, amount_minor, currency)

    def authorise(self, key: str, token: str, amount_minor: int, currency: str) -> AcquirerResult:
        return self._first_phase("AUTHORISE", key, token, amount_minor, currency)

    def _first_phase(self, kind: str, key: str, token: str, amount_minor: int, currency: str) -> AcquirerResult:
        _, _, approved, answer_lost = TEST_CARDS.get(token, ("UNKNOWN", "", False, False))
        reason = "" if approved else ("CARD_DECLINED" if token in TEST_CARDS else "UNKNOWN_CARD_TOKEN")
        stored, created = self._record(kind, key, token, "", amount_minor, currency, approved, reason)
        if created and answer_lost:
            raise AcquirerTimeout(f"acquirer did not answer {kind} {key}")
        return self._result(stored)

    # -- operations on an earlier authorisation or payment -----------------------------------

    def capture(self, key: str, authorisation_key: str, amount_minor: int) -> AcquirerResult:
        auth = self._get(authorisation_key)
        if auth is None or not auth.approved or auth.kind != "AUTHORISE":
            return self._refuse("CAPTURE", key, auth, authorisation_key, amount_minor, "AUTHORISATION_NOT_FOUND")
        if self._children(authorisation_key, ("CAPTURE", "VOID"), exclude=key):
            return self._refuse("CAPTURE", key, auth, authorisation_key, amount_minor, "AUTHORISATION_SETTLED")
        if amount_minor > auth.amount_minor:
            return self._refuse("CAPTURE", key, auth, authorisation_key, amount_minor, "CAPTURE_EXCEEDS_AUTHORISATION")
        stored, _ = self._record("CAPTURE", key, auth.token, authorisation_key, amount_minor, auth.currency, True, "")
        return self._result(stored)

    def void(self, key: str, authorisation_key: str) -> AcquirerResult:
        auth = self._get(authorisation_key)
        if auth is not None and self._children(authorisation_key, ("CAPTURE",), exclude=key):
            return self._refuse("VOID", key, auth, authorisation_key, 0, "AUTHORISATION_CAPTURED")
        token, currency = (auth.token, auth.currency) if auth is not None else ("", "RUB")
        stored, _ = self._record("VOID", key, token, authorisation_key, 0, currency, True, "")
        return self._result(stored)

    def refund(self, key: str, payment_key: str, amount_minor: int) -> AcquirerResult:
        payment = self._get(payment_key)
        if payment is None or not payment.approved or payment.kind not in ("CAPTURE", "CHARGE"):
            return self._refuse("REFUND", key, payment, payment_key, amount_minor, "PAYMENT_NOT_FOUND")
        existing = self._get(key)
        if existing is None:
            refunded = sum(op.amount_minor for op in self._children(payment_key, ("REFUND",)) if op.approved)
            if refunded + amount_minor > payment.amount_minor:
                return self._refuse("REFUND", key, payment, payment_key, amount_minor, "REFUND_EXCEEDS_PAYMENT")
        stored, _ = self._record("REFUND", key, payment.token, payment_key, amount_minor, payment.currency, True, "")
        return self._result(stored)

    # -- storage --------------------------------------------------------------------------------

    def _refuse(
        self,
        kind: str,
        key: str,
        parent: AcquirerSimulatorOperation | None,
        parent_key: str,
        amount_minor: int,
        reason: str,
    ) -> AcquirerResult:
        token, currency = (parent.token, parent.currency) if parent is not None else ("", "RUB")
        stored, _ = self._record(kind, key, token, parent_key, amount_minor, currency, False, reason)
        return self._result(stored)

    def _get(self, key: str) -> AcquirerSimulatorOperation | None:
        with self._db.unit_of_work() as uow:
            operation = uow.session.get(AcquirerSimulatorOperation, key)
            uow.session.expunge_all()
        return operation

    def _children(
        self, parent_key: str, kinds: tuple[str, ...], *, exclude: str = ""
    ) -> list[AcquirerSimulatorOperation]:
        with self._db.unit_of_work() as uow:
            rows = uow.session.exec(
                select(AcquirerSimulatorOperation).where(
                    AcquirerSimulatorOperation.parent_key == parent_key,
                    AcquirerSimulatorOperation.kind.in_(kinds),  # type: ignore[attr-defined]
                    AcquirerSimulatorOperation.key != exclude,
                    AcquirerSimulatorOperation.approved == True,  # noqa: E712
                )
            ).all()
            uow.session.expunge_all()
        return list(rows)

    def _record(
        self,
        kind: str,
        key: str,
        token: str,
        parent_key: str,
        amount_minor: int,
        currency: str,
        approved: bool,
        reason: str,
    ) -> tuple[AcquirerSimulatorOperation, bool]:
        """Store the outcome under `key` unless one is stored already; (stored, created now)."""
        existing = self._get(key)
        if existing is not None:
            return existing, False
        operation = AcquirerSimulatorOperation(
            key=key,
            kind=kind,
            token=token,
            parent_key=parent_key,
            amount_minor=amount_minor,
            currency=currency,
            approved=approved,
            decline_reason=reason,
            created_at=self._clock.now(),
        )
        try:
            with self._db.unit_of_work() as uow:
                uow.session.add(operation)
                uow.commit()
        except IntegrityError:  # a concurrent request under the same key got there first
            raced = self._get(key)
            assert raced is not None
            return raced, False
        return operation, True

    @staticmethod
    def _result(operation: AcquirerSimulatorOperation) -> AcquirerResult:
        return AcquirerResult(
            approved=operation.approved, card=card_of(operation.token), decline_reason=operation.decline_reason
        )
