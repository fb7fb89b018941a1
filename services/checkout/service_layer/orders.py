"""Orders: placing one through the saga, delivering, cancelling, returning units, recovering
stuck sagas, and the views.

Every saga move is one short transaction around one remote call: read the order and decide the
next step (`domain.saga.next_step`), call the peer with a request id derived from the order, then
record the outcome. Only the holder of the order's lease records anything: the request that
placed the order holds it first; when it lapses (the process died, or gave up on an unavailable
peer), the recovery worker takes the order over and resumes or compensates it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from google.protobuf.json_format import MessageToDict, ParseDict
from loyalty.checkout.v1 import checkout_pb2
from loyalty.common.v1 import earning_pb2, payment_pb2
from loyalty.points.v1 import points_pb2
from loyalty.promotions.v1 import promotions_pb2
from loyalty.wallet.v1 import wallet_pb2
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import flag_modified
from sqlalchemy.orm.exc import StaleDataError

from services.checkout.adapters.peers import PeerServices, enqueue_activation
from services.checkout.adapters.repository import CheckoutRepository, OrderSnapshot
from services.checkout.adapters.tables import (
    OrderEventRow,
    OrderLineRow,
    OrderRow,
    ReturnLineRow,
    ReturnRow,
)
from services.checkout.domain.pricing import merge_lines, return_units
from services.checkout.domain.saga import CREATES, LOCAL, OrderStatus, SagaState, Step, next_step
from services.checkout.service_layer.pricing import Pricer, promotion_line
from shared import failpoints
from shared.clock import Clock
from shared.db import Database, UnitOfWork
from shared.errors import AlreadyExists, DomainError, FailedPrecondition, InvalidArgument, NotFound, PeerUnavailable
from shared.idempotency import Idempotency, request_fingerprint, validate_request_id
from shared.ids import new_id
from shared.metrics import Metrics
from shared.outbox import Outbox
from shared.validation import validate_customer_id

log = logging.getLogger(__name__)

METHODS = {payment_pb2.PAYMENT_METHOD_WALLET: "WALLET", payment_pb2.PAYMENT_METHOD_CARD: "CARD"}
METHOD_VALUES = {name: value for value, name in METHODS.items()}
RETURN_STEPS = ("REFUND", "RETURN_POINTS", "REVERSE")
# The saga steps as shared.metrics names them (the saga failures counter).
METRIC_STEPS = {
    Step.RESERVE_CODE: "reserve_promo_code",
    Step.HOLD_POINTS: "hold_points",
    Step.HOLD_MONEY: "hold_money",
    Step.CAPTURE_MONEY: "capture_money",
    Step.CAPTURE_POINTS: "capture_points",
}
AFTER_DELIVERY = (OrderStatus.DELIVERED, OrderStatus.PARTIALLY_RETURNED, OrderStatus.RETURNED)
# Steps recorded with the next record rather than each by its own (`Orders._drive` says when).
BATCHED = frozenset(
    {
        Step.RESERVE_CODE,
        Step.HOLD_POINTS,
        Step.HOLD_MONEY,
        Step.CAPTURE_MONEY,
        Step.CAPTURE_POINTS,
        Step.CONFIRM_CODE,
        Step.ACCRUE,
    }
)
# A change to an order recorded in a transaction, and one that is plain assignments to the row.
Change = Callable[[UnitOfWork, OrderRow], None]
RowChange = Callable[[OrderRow], None]


@dataclass(frozen=True)
class SagaConfig:
    lease: timedelta
    stuck_for: timedelta
    give_up_after: timedelta
    return_window: timedelta
    batch: int = 100


@dataclass(frozen=True)
class Recovery:
    examined: int
    completed: int
    compensated: int


class Lost(Exception):
    """This driver no longer holds the lease: another one has taken the saga over."""


def order_failed(order: OrderRow) -> DomainError:
    """The error a FAILED order answers with: its reason, with the order id."""
    error = FailedPrecondition(
        order.failure_reason or "ORDER_FAILED",
        order.failure_message or f"order {order.order_id} failed",
        metadata={"order_id": order.order_id},
    )
    return error


def is_card_number(token: str) -> bool:
    digits = token.replace(" ", "").replace("-", "")
    return digits.isdigit() and 12 <= len(digits) <= 19


def _steps(row: OrderRow | ReturnRow) -> set[str]:
    return {step for step in row.steps_done.split(",") if step}


def _learn(create: Callable[[], str]) -> str:
    """The id of what an uncertain creating step made, learned by replaying it with its request
    id; empty when the peer refuses it (then nothing was made). A transport failure propagates:
    the step stays uncertain and is tried again later."""
    try:
        return create()
    except PeerUnavailable:
        raise
    except DomainError:
        return ""


def saga_state(order: OrderRow) -> SagaState:
    return SagaState(
        status=OrderStatus(order.status),
        has_code=bool(order.promo_code),
        has_points=order.points_applied > 0,
        done=frozenset(Step(step) for step in _steps(order)),
        compensating=order.compensating,
        refused=Step(order.refused_step) if order.refused_step else None,
        cancel_requested=order.cancel_requested,
    )


def explanation_json(evaluation: promotions_pb2.OrderEvaluation, extra: Sequence[earning_pb2.PointsAward] = ()) -> str:
    awards = [award for line in evaluation.lines for award in line.awards] + list(evaluation.order_awards)
    awards += list(extra)
    return json.dumps([MessageToDict(award, preserving_proto_field_name=True) for award in awards])


def explanation_of(order: OrderRow) -> list[earning_pb2.PointsAward]:
    return [ParseDict(item, earning_pb2.PointsAward()) for item in json.loads(order.explanation)]


@dataclass
class SagaRun:
    """One driver's saga of one order in memory: the order as last recorded with the steps
    performed since applied (`pending`, to be recorded), its lines, and its history when the
    driver knows all of it (it placed the order)."""

    order: OrderRow
    lines: list[OrderLineRow]
    events: list[OrderEventRow] | None = None
    pending: list[RowChange] = field(default_factory=list)
    # Lines' points to earn changed by the accrual, by position, to be recorded.
    line_points: dict[int, int] = field(default_factory=dict)
    closed: bool = False  # this driver closed the saga

    @property
    def answerable(self) -> bool:
        """The order as this driver left it is the order as it is: the driver closed the saga
        knowing the whole history, and its last status change is the order's status (no
        delivery or return, the only changes by others that add to the history, came in)."""
        return self.closed and self.events is not None and self.events[-1].status == self.order.status

    def snapshot(self) -> OrderSnapshot:
        return OrderSnapshot(self.order, list(self.lines), list(self.events or []))


class Orders:
    def __init__(
        self,
        *,
        database: Database,
        pricer: Pricer,
        peers: PeerServices,
        outbox: Outbox,
        idempotency: Idempotency,
        clock: Clock,
        config: SagaConfig,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or Metrics.noop()
        self._db = database
        self._pricer = pricer
        self._peers = peers
        self._outbox = outbox
        self._idempotency = idempotency
        self._clock = clock
        self.config = config

    # --- views ----------------------------------------------------------------------------

    def snapshot(self, order_id: str, customer_id: str = "") -> OrderSnapshot:
        with self._db.read() as session:
            repo = CheckoutRepository(session)
            order = repo.order(order_id)
            if order is None or (customer_id and order.customer_id != customer_id):
                raise NotFound("ORDER_NOT_FOUND", f"no order {order_id!r}", metadata={"order_id": order_id})
            return repo.snapshot(order)

    # --- placing --------------------------------------------------------------------------

    def place(self, request: checkout_pb2.PlaceOrderRequest) -> OrderSnapshot:
        validate_request_id(request.request_id)
        validate_customer_id(request.customer_id)
        method = METHODS.get(request.payment_method)
        if method is None:
            raise InvalidArgument.field("payment_method", "WALLET or CARD is required", "PAYMENT_METHOD_REQUIRED")
        if method == "CARD" and not request.card_token.strip():
            raise InvalidArgument.field("card_token", "is required to pay by card", "CARD_TOKEN_REQUIRED")
        if method == "CARD" and is_card_number(request.card_token):
            raise InvalidArgument.field(
                "card_token", "send the acquirer's token, never a card number", "CARD_NUMBER_NOT_ALLOWED"
            )
        if len(request.card_token) > 64:
            raise InvalidArgument.field("card_token", "at most 64 characters", "INVALID_CARD_TOKEN")
        fingerprint = request_fingerprint(request)
        # One read-only session for the replay check and the cart's products.
        with self._db.read() as session:
            repo = CheckoutRepository(session)
            replay = self._replay_in(repo, request.request_id, fingerprint)
            if replay is not None:
                return replay
            self._pricer.check_points_to_use(request.points_to_use)
            products = self._pricer.products_in(repo, [(line.sku, line.quantity) for line in request.lines])
        order_id = new_id()
        try:
            cart = self._pricer.price_request(request, order_id, products)
        except DomainError:
            # A copy of this request placed meanwhile may have held the points or money this
            # pricing found missing: then the answer is that order, not a refusal.
            replay = self._replay(request.request_id, fingerprint)
            if replay is not None:
                return replay
            raise
        owner = str(uuid.uuid4())
        now = self._clock.now()
        order = OrderRow(
            order_id=order_id,
            request_id=request.request_id,
            fingerprint=fingerprint,
            customer_id=request.customer_id,
            status=OrderStatus.PENDING.value,
            payment_method=method,
            card_token=request.card_token if method == "CARD" else "",
            promo_code=request.promo_code.strip().upper(),
            total_minor=cart.total_minor,
            points_applied=cart.points_applied,
            money_paid_minor=cart.money_due_minor,
            points_to_earn=cart.evaluation.total_points,
            order_level_points=sum(award.points for award in cart.evaluation.order_awards),
            explanation=explanation_json(cart.evaluation),
            wallet_balance_minor=cart.wallet_balance_minor,
            saga_at=now,
            lease_owner=owner,
            lease_until=now + self.config.lease,
            created_at=now,
            updated_at=now,
        )
        earned = {line.line_id: line.points for line in cart.evaluation.lines}
        lines = [
            OrderLineRow(
                order_id=order_id,
                position=position,
                sku=line.product.sku,
                title=line.product.title,
                category=line.product.category,
                quantity=line.quantity,
                unit_price_minor=line.product.price_minor,
                points_applied=cart.line_points(position),
                unit_points=",".join(str(points) for points in cart.unit_points[position]),
                points_to_earn=earned.get(line.product.sku, 0),
                points_excluded=line.excluded,
            )
            for position, line in enumerate(cart.lines)
        ]
        # The first status change, at the time the order was made (the row has it already).
        events = [OrderEventRow(order_id=order_id, status=OrderStatus.PENDING.value, time=now, reason="")]
        try:
            # One statement on PostgreSQL (CheckoutRepository.add_placed). The unique index on
            # the request id refuses the same request placed concurrently: answer as a replay.
            with self._db.one_statement() as uow:
                CheckoutRepository(uow.session).add_placed(order, lines, events)
                uow.commit()
        except IntegrityError:
            replay = self._replay(request.request_id, fingerprint)
            if replay is None:
                raise
            return replay
        run = self._drive(order_id, owner, SagaRun(order, lines, events))
        if run is not None and run.answerable:
            return self._answer_with(run.snapshot())
        return self._answer_with(self.snapshot(order_id))

    def _replay_in(self, repo: CheckoutRepository, request_id: str, fingerprint: str) -> OrderSnapshot | None:
        """The answer to a PlaceOrder already placed with this request id (None when it was not)."""
        order = repo.order_by_request(request_id)
        if order is None:
            return None
        if order.fingerprint != fingerprint:
            raise AlreadyExists(
                "IDEMPOTENCY_KEY_REUSED",
                f"request_id {request_id!r} was already used for a different order",
                metadata={"request_id": request_id, "order_id": order.order_id},
            )
        return self._answer_with(repo.snapshot(order))

    def _replay(self, request_id: str, fingerprint: str) -> OrderSnapshot | None:
        with self._db.read() as session:
            return self._replay_in(CheckoutRepository(session), request_id, fingerprint)

    @staticmethod
    def _answer_with(snapshot: OrderSnapshot) -> OrderSnapshot:
        if snapshot.order.status == OrderStatus.FAILED.value:
            raise order_failed(snapshot.order)
        return snapshot

    # --- the saga driver ------------------------------------------------------------------

    def _event(self, uow: UnitOfWork, order: OrderRow, status: OrderStatus, reason: str = "") -> OrderEventRow:
        now = self._clock.now()
        order.status = status.value
        order.updated_at = now
        uow.session.add(order)
        event = OrderEventRow(order_id=order.order_id, status=status.value, time=now, reason=reason)
        uow.session.add(event)
        return event

    def _take_lease(self, load: Callable[[CheckoutRepository], OrderRow | ReturnRow | None]) -> str | None:
        """Take the lease of a saga's row (an order or a return) if nobody holds it: the new
        owner's id, or None when the row is missing, finished or held."""
        owner = str(uuid.uuid4())
        now = self._clock.now()
        with self._db.unit_of_work() as uow:
            row = load(CheckoutRepository(uow.session))
            if row is None or (row.lease_owner and row.lease_until is not None and row.lease_until > now):
                return None
            row.lease_owner, row.lease_until = owner, now + self.config.lease
            uow.session.add(row)
            uow.commit()
        return owner

    def claim(self, order_id: str) -> str | None:
        """Take the order's lease if its saga is open and nobody holds it."""

        def load(repo: CheckoutRepository) -> OrderRow | None:
            order = repo.order(order_id, lock=True)
            return order if order is not None and order.saga_open else None

        return self._take_lease(load)

    def _record(
        self,
        order_id: str,
        owner: str,
        change: Change | None,
        run: SagaRun | None = None,
        *,
        only_the_order: bool = False,
    ) -> OrderRow:
        """Apply the steps `run` performed and has not recorded yet, then `change`, to the order
        if this driver still holds the lease; the order as committed (detached), from which the
        driver decides its next step.

        With `run`, the order it holds is the order as this driver last recorded it, and the
        record is first written by that order's version, without reading the row again
        (`_record_by_version`). Only when someone else changed the order since is it read under
        its row lock and the record applied to it as it is now."""
        if run is not None and self._record_by_version(run, change, only_the_order=only_the_order):
            return run.order
        with self._db.unit_of_work() as uow:
            repo = CheckoutRepository(uow.session)
            order = repo.order(order_id, lock=True)
            if order is None or order.lease_owner != owner:
                raise Lost(order_id)
            if run is not None:
                for pending in run.pending:
                    pending(order)
                if run.line_points:
                    repo.set_line_points(order_id, run.line_points)
            if change is not None:
                change(uow, order)
            self._renew(order)
            uow.session.add(order)
            uow.commit()
            uow.session.expunge_all()
        if run is not None:
            run.order, run.pending, run.line_points = order, [], {}
        return order

    def _record_by_version(self, run: SagaRun, change: Change | None, *, only_the_order: bool) -> bool:
        """Record on the order this driver holds, by its version: the UPDATE is written only if
        the row's version is still the one this driver recorded, so nobody changed the order
        since (a cancellation, a delivery, a takeover all change it) and what was decided from
        the order in memory was decided from the order as it is. False when the row changed:
        nothing was written, and the caller records under the row lock instead.

        A record that writes the order row alone (`only_the_order`: no status change with its
        event, no line's points) is one statement, so it runs by itself, without BEGIN and COMMIT."""
        order = run.order
        closed, events = run.closed, len(run.events) if run.events is not None else 0
        alone = only_the_order and not run.line_points
        try:
            with self._db.one_statement() if alone else self._db.unit_of_work() as uow:
                uow.session.add(order)  # as it was recorded: only what changes now is written
                for pending in run.pending:
                    pending(order)
                if run.line_points:
                    CheckoutRepository(uow.session).set_line_points(order.order_id, run.line_points)
                if change is not None:
                    change(uow, order)
                self._renew(order)
                flag_modified(order, "saga_at")  # written even when the clock stood still: checked
                uow.commit()
                uow.session.expunge_all()
        except StaleDataError:
            run.closed = closed  # what the change did to the run was not recorded
            if run.events is not None:
                del run.events[events:]
            return False
        run.pending, run.line_points = [], {}
        return True

    def _renew(self, order: OrderRow) -> None:
        """The saga moved now; the lease is renewed while this driver goes on (closing or
        pausing let it go)."""
        now = self._clock.now()
        order.saga_at = now
        if order.lease_owner:
            order.lease_until = now + self.config.lease

    def _load_run(self, order_id: str) -> SagaRun | None:
        with self._db.read() as session:
            repo = CheckoutRepository(session)
            order = repo.order(order_id)
            if order is None:
                return None
            run = SagaRun(order, repo.lines(order_id))
            session.expunge_all()
        return run

    def _drive(self, order_id: str, owner: str, run: SagaRun | None = None) -> SagaRun | None:
        """Move the saga as far as it goes now; leaves it to recovery on a transport failure.
        The saga as this driver left it, or None when another driver has taken it over.

        The order is read once (not at all when `run` is the order just placed by this driver);
        after that it is kept in memory, and each record (taken under the row lock, so it also
        sees a cancellation that arrived meanwhile) is what the next step is decided from.

        Not every step is recorded before the next one: the forward steps and those after
        payment (`BATCHED`) are kept in `run.pending` and recorded with the next record, which
        comes before any step that creates something in a peer (a code reservation, a hold),
        before a local step (MARK_PAID, closing), and on a refusal or a pause. So a crash leaves
        at most one creating step unrecorded, and it is the first forward step not done: the
        one `SagaState.uncertain` names, which compensation learns by replaying its call; the
        captures after it need no record of their own (undoing money or points looks at the
        hold as the peer has it, captured or not), and recovery that drives forward replays
        them with their request ids and gets the same outcome. Payment is recorded before
        anything after it runs (the accrual and the code's confirmation are never undone by a
        compensation), and they are recorded with the closing of the saga."""
        if run is None:
            run = self._load_run(order_id)
            if run is None:
                return None
        try:
            while True:
                order = run.order
                if order.lease_owner != owner:
                    return run
                step = next_step(saga_state(order))
                if step is None:
                    self._record(order_id, owner, self._close(run), run, only_the_order=True)
                    continue  # closed (the lease is let go), or under the lock there was more to do
                if step in LOCAL:  # recorded at once, with what is pending
                    failpoints.hit(f"checkout.saga.before.{step.value}")
                    change = self._local(step, run)
                    failpoints.hit(f"checkout.saga.after.{step.value}")
                    self._record(order_id, owner, change, run)
                    continue
                if run.pending and (step in CREATES or step not in BATCHED):
                    # A creating step starts after a record.
                    self._record(order_id, owner, None, run, only_the_order=True)
                    continue
                failpoints.hit(f"checkout.saga.before.{step.value}")
                try:
                    made = self._perform(step, run)
                except PeerUnavailable as error:
                    self._record(order_id, owner, self._paused(step, error), run, only_the_order=True)
                    return run
                except DomainError as error:
                    self._record(order_id, owner, self._refused(step, error), run, only_the_order=True)
                    continue
                failpoints.hit(f"checkout.saga.after.{step.value}")
                done = self._done(step, made)
                run.pending.append(done)
                if step in BATCHED:
                    done(order)  # the order in memory moves on; the record comes later
                else:
                    self._record(order_id, owner, None, run, only_the_order=True)
        except Lost:
            log.info("saga of order %s taken over by another driver", order_id)
            return None

    @staticmethod
    def _close(run: SagaRun) -> Change:
        def close(uow: UnitOfWork, order: OrderRow) -> None:
            if next_step(saga_state(order)) is not None:
                return  # a cancellation came in since the driver decided: drive it instead
            order.saga_open = False
            order.lease_owner, order.lease_until = "", None
            order.last_error = ""
            run.closed = True

        return close

    def _local(self, step: Step, run: SagaRun) -> Change:
        """A step of the order's own (marking it PAID, FAILED or CANCELLED), taken only if, under
        the row lock and with what is pending applied, it is still the next step."""
        marks: dict[Step, tuple[OrderStatus, Callable[[OrderRow], str]]] = {
            Step.MARK_PAID: (OrderStatus.PAID, lambda row: ""),
            Step.MARK_FAILED: (OrderStatus.FAILED, lambda row: row.failure_reason),
            Step.MARK_CANCELLED: (OrderStatus.CANCELLED, lambda row: row.cancel_reason or "cancelled"),
        }
        status, reason = marks[step]

        def mark(uow: UnitOfWork, row: OrderRow) -> None:
            if next_step(saga_state(row)) != step:
                return
            event = self._event(uow, row, status, reason(row))
            if run.events is not None:
                run.events.append(event)
            row.steps_done = ",".join(sorted(_steps(row) | {step.value}))

        return mark

    @staticmethod
    def _paused(step: Step, error: DomainError) -> Change:
        def change(uow: UnitOfWork, order: OrderRow) -> None:
            order.last_error = f"{step.value}: {error.reason}: {error.message}"[:500]
            order.saga_attempts += 1
            order.lease_owner, order.lease_until = "", None

        return change

    def _refused(self, step: Step, error: DomainError) -> Change:
        def change(uow: UnitOfWork, order: OrderRow) -> None:
            state = saga_state(order)
            if state.status == OrderStatus.PENDING and not state.compensating and step in state.forward():
                uow.on_commit(lambda: self._metrics.saga_failed(METRIC_STEPS.get(step, "other")))
                order.compensating = True
                order.refused_step = step.value
                order.failure_reason = error.reason
                order.failure_message = error.message[:500]
                log.info("order %s: %s refused with %s; compensating", order.order_id, step.value, error.reason)
                return
            # After payment, or while compensating: a refusal that retrying will not change. The
            # step is marked done with the error kept, so the saga moves on and it stays visible.
            log.warning("order %s: %s refused with %s", order.order_id, step.value, error.reason)
            order.last_error = f"{step.value}: {error.reason}: {error.message}"[:500]
            order.steps_done = ",".join(sorted(_steps(order) | {step.value}))

        return change

    @staticmethod
    def _done(step: Step, change: RowChange | None) -> RowChange:
        def record(order: OrderRow) -> None:
            if change is not None:
                change(order)
            order.steps_done = ",".join(sorted(_steps(order) | {step.value}))

        return record

    def _perform(self, step: Step, run: SagaRun) -> RowChange | None:
        """Carry out one remote step; returns what to record with it (plain assignments, the
        same whichever copy of the order they are applied to)."""
        order = run.order
        oid = order.order_id
        method = METHOD_VALUES[order.payment_method]
        if step == Step.RESERVE_CODE:
            reservation = self._reserve_code(run)

            def reserved(row: OrderRow) -> None:
                row.promo_reservation_id = reservation.reservation_id

            return reserved
        if step == Step.HOLD_POINTS:
            points_hold = self._hold_points(order)

            def points_held(row: OrderRow) -> None:
                row.points_hold_id = points_hold

            return points_held
        if step == Step.HOLD_MONEY:
            hold = self._hold_money(order)

            def money_held(row: OrderRow) -> None:
                row.wallet_hold_id = hold.hold_id
                row.card_brand, row.card_last4 = hold.card.brand, hold.card.last4

            return money_held
        if step == Step.CAPTURE_MONEY:
            self._peers.capture_money(f"{oid}:capture-money", order.wallet_hold_id, order.money_paid_minor)
            return None
        if step == Step.CAPTURE_POINTS:
            self._peers.capture_points(f"{oid}:capture-points", order.points_hold_id, order.points_applied)
            return None
        if step == Step.CONFIRM_CODE:
            self._peers.confirm_code(f"{oid}:confirm-code", order.promo_reservation_id)
            return None
        if step == Step.ACCRUE:
            return self._accrue(run, method)
        if step == Step.UNDO_MONEY:
            refunded = self._undo_money(order)

            def money_back(row: OrderRow) -> None:
                row.money_refunded_minor += refunded

            return money_back
        if step == Step.UNDO_POINTS:
            self._undo_points(order)
            return None
        if step == Step.UNDO_CODE:
            self._undo_code(run)
            return None
        if step == Step.CANCEL_PENDING:
            self._peers.cancel_pending(
                f"{oid}:cancel-pending", customer_id=order.customer_id, reference=oid, reason="order cancelled"
            )
            return None
        raise AssertionError(f"unknown step {step}")

    def _reserve_code(self, run: SagaRun) -> promotions_pb2.PromoCodeReservation:
        order = run.order
        return self._peers.reserve_code(
            f"{order.order_id}:reserve-code",
            customer_id=order.customer_id,
            code=order.promo_code,
            order_id=order.order_id,
            lines=self._promotion_lines(run),
        )

    def _hold_points(self, order: OrderRow) -> str:
        hold = self._peers.hold_points(
            f"{order.order_id}:hold-points",
            customer_id=order.customer_id,
            points=order.points_applied,
            reference=order.order_id,
        )
        return hold.hold_id

    def _hold_money(self, order: OrderRow) -> wallet_pb2.Hold:
        hold = self._peers.hold_money(
            f"{order.order_id}:hold-money",
            customer_id=order.customer_id,
            amount_minor=order.money_paid_minor,
            reference=order.order_id,
            payment_method=METHOD_VALUES[order.payment_method],
            card_token=order.card_token,
        )
        if hold.status == wallet_pb2.HOLD_STATUS_PENDING:  # the acquirer did not answer yet
            raise PeerUnavailable("ACQUIRER_TIMEOUT", "the card authorisation is not settled yet")
        return hold

    @staticmethod
    def _promotion_lines(run: SagaRun) -> list[promotions_pb2.OrderLine]:
        """The order's lines as Promotions sees them."""
        return [
            promotion_line(line.sku, line.category, line.quantity, line.unit_price_minor, line.points_applied)
            for line in run.lines
        ]

    def _accrue(self, run: SagaRun, method: payment_pb2.PaymentMethod.ValueType) -> RowChange:
        order = run.order
        evaluation = self._peers.accrue(
            f"{order.order_id}:accrue",
            customer_id=order.customer_id,
            order_id=order.order_id,
            lines=self._promotion_lines(run),
            payment_method=method,
            wallet_balance_minor=order.wallet_balance_minor,
        )
        # What the accrual paid replaces the quote's estimate; the promo code's reward (paid on
        # confirmation, not by the accrual) is kept from the quote.
        code = [a for a in explanation_of(order) if a.kind == earning_pb2.AWARD_KIND_PROMO_CODE]
        earned = {line.line_id: line.points for line in evaluation.lines}
        for award in code:
            if award.line_id:
                earned[award.line_id] = earned.get(award.line_id, 0) + award.points
        for line in run.lines:
            points = earned.get(line.sku, 0)
            if line.points_to_earn != points:
                line.points_to_earn = points
                run.line_points[line.position] = points
        points_to_earn = evaluation.total_points + sum(award.points for award in code)
        order_level_points = sum(award.points for award in evaluation.order_awards) + sum(
            award.points for award in code if not award.line_id
        )
        explanation = explanation_json(evaluation, extra=code)

        def accrued(row: OrderRow) -> None:
            row.points_to_earn = points_to_earn
            row.order_level_points = order_level_points
            row.explanation = explanation

        return accrued

    def _undo_money(self, order: OrderRow) -> int:
        """Release the money hold, or refund what it captured; the kopecks refunded."""
        hold_id = order.wallet_hold_id or _learn(lambda: self._hold_money(order).hold_id)
        if not hold_id:
            return 0
        hold = self._peers.money_hold(hold_id)
        if hold.status in (wallet_pb2.HOLD_STATUS_ACTIVE, wallet_pb2.HOLD_STATUS_PENDING):
            self._peers.release_money(f"{order.order_id}:release-money", hold_id, "order not completed")
            return 0
        if hold.status == wallet_pb2.HOLD_STATUS_CAPTURED:
            left = hold.captured.amount_minor - hold.refunded.amount_minor
            if left > 0:
                self._peers.refund_money(
                    f"{order.order_id}:refund-all",
                    hold_id=hold_id,
                    amount_minor=left,
                    reference=order.order_id,
                    reason=order.cancel_reason or "order not completed",
                )
            return left
        return 0

    def _undo_points(self, order: OrderRow) -> None:
        hold_id = order.points_hold_id or _learn(lambda: self._hold_points(order))
        if not hold_id:
            return
        hold = self._peers.points_hold(hold_id)
        if hold.status == points_pb2.HOLD_STATUS_ACTIVE:
            self._peers.release_points(f"{order.order_id}:release-points", hold_id, "order not completed")
        elif hold.status == points_pb2.HOLD_STATUS_CAPTURED and hold.captured > hold.returned:
            self._peers.return_points(
                f"{order.order_id}:return-all",
                hold_id=hold_id,
                points=hold.captured - hold.returned,
                reference=order.order_id,
                reason=order.cancel_reason or "order not completed",
            )

    def _undo_code(self, run: SagaRun) -> None:
        order = run.order
        reservation_id = order.promo_reservation_id or _learn(lambda: self._reserve_code(run).reservation_id)
        if not reservation_id:
            return
        try:
            self._peers.release_code(
                f"{order.order_id}:release-code", reservation_id, f"order {order.failure_reason or 'cancelled'}"
            )
        except FailedPrecondition as error:
            if error.reason != "RESERVATION_CONFIRMED":
                raise

    # --- delivery, cancellation -----------------------------------------------------------

    def deliver(self, request: checkout_pb2.DeliverOrderRequest, deliver_time: datetime | None) -> OrderSnapshot:
        now = self._clock.now()
        when = deliver_time or now
        if when > now:
            raise InvalidArgument.field("deliver_time", "must not be in the future", "DELIVER_TIME_IN_FUTURE")

        def effect(uow: UnitOfWork) -> checkout_pb2.DeliverOrderResponse:
            repo = CheckoutRepository(uow.session)
            order = self._locked(repo, request.order_id, "")
            status = OrderStatus(order.status)
            if status in AFTER_DELIVERY:
                raise FailedPrecondition("ORDER_ALREADY_DELIVERED", f"order {order.order_id} was delivered already")
            if status == OrderStatus.CANCELLED or order.cancel_requested:
                raise FailedPrecondition("ORDER_ALREADY_CANCELLED", f"order {order.order_id} was cancelled")
            if status != OrderStatus.PAID:
                raise FailedPrecondition("ORDER_NOT_PAID", f"order {order.order_id} is {status.value}, not PAID")
            if when < order.created_at:
                raise InvalidArgument.field(
                    "deliver_time", "must not be before the order was placed", "DELIVER_TIME_BEFORE_ORDER"
                )
            order.deliver_time = when
            order.return_window_end = when + self.config.return_window
            self._event(uow, order, OrderStatus.DELIVERED)
            enqueue_activation(
                self._outbox,
                uow,
                order_id=order.order_id,
                customer_id=order.customer_id,
                available_at=order.return_window_end,
            )
            return checkout_pb2.DeliverOrderResponse()

        self._idempotency.run("CheckoutService/DeliverOrder", request, checkout_pb2.DeliverOrderResponse, effect)
        return self.snapshot(request.order_id)

    def _locked(self, repo: CheckoutRepository, order_id: str, customer_id: str) -> OrderRow:
        order = repo.order(order_id, lock=True) if order_id else None
        if order is None or (customer_id and order.customer_id != customer_id):
            raise NotFound("ORDER_NOT_FOUND", f"no order {order_id!r}", metadata={"order_id": order_id})
        return order

    def cancel(self, request: checkout_pb2.CancelOrderRequest) -> OrderSnapshot:
        """Cancel a paid order (refund, give the points back, cancel the earned ones), or
        compensate one still PENDING. A replay answers with the order as it is now."""
        if len(request.reason) > 500:
            raise InvalidArgument.field("reason", "at most 500 characters", "REASON_TOO_LONG")

        def effect(uow: UnitOfWork) -> checkout_pb2.CancelOrderResponse:
            repo = CheckoutRepository(uow.session)
            order = self._locked(repo, request.order_id, request.customer_id)
            status = OrderStatus(order.status)
            if status in AFTER_DELIVERY:
                raise FailedPrecondition("ORDER_ALREADY_DELIVERED", f"order {order.order_id} was delivered")
            if status == OrderStatus.CANCELLED or order.cancel_requested:
                raise FailedPrecondition("ORDER_ALREADY_CANCELLED", f"order {order.order_id} is cancelled already")
            if status == OrderStatus.FAILED:
                raise FailedPrecondition("ORDER_FAILED", f"order {order.order_id} failed; nothing to cancel")
            order.cancel_reason = request.reason or "cancelled by the customer"
            if status == OrderStatus.PENDING:
                order.compensating = True
                order.failure_reason = "ORDER_CANCELLED"
                order.failure_message = order.cancel_reason
            else:
                order.cancel_requested = True
            order.saga_open = True
            uow.session.add(order)
            return checkout_pb2.CancelOrderResponse()

        self._idempotency.run("CheckoutService/CancelOrder", request, checkout_pb2.CancelOrderResponse, effect)
        owner = self.claim(request.order_id)
        if owner is not None:
            self._drive(request.order_id, owner)
        return self.snapshot(request.order_id)

    # --- returns --------------------------------------------------------------------------

    def return_items(self, request: checkout_pb2.ReturnOrderItemsRequest) -> tuple[str, OrderSnapshot]:
        if len(request.reason) > 500:
            raise InvalidArgument.field("reason", "at most 500 characters", "REASON_TOO_LONG")
        asked = merge_lines([(line.sku, line.quantity) for line in request.lines])

        def effect(uow: UnitOfWork) -> checkout_pb2.ReturnOrderItemsResponse:
            repo = CheckoutRepository(uow.session)
            order = self._locked(repo, request.order_id, request.customer_id)
            now = self._clock.now()
            status = OrderStatus(order.status)
            if status not in (OrderStatus.DELIVERED, OrderStatus.PARTIALLY_RETURNED):
                if status == OrderStatus.RETURNED:
                    raise FailedPrecondition("RETURN_QUANTITY_EXCEEDED", "every unit was returned already")
                raise FailedPrecondition("ORDER_NOT_DELIVERED", f"order {order.order_id} is {status.value}")
            assert order.return_window_end is not None
            if now >= order.return_window_end:
                raise FailedPrecondition(
                    "RETURN_WINDOW_CLOSED", f"the return window closed at {order.return_window_end.isoformat()}"
                )
            if Step.ACCRUE.value not in _steps(order):
                raise FailedPrecondition(
                    "ORDER_NOT_SETTLED", "the order's earned points are still being accrued; try again shortly"
                )
            lines = {line.sku: line for line in repo.lines(order.order_id)}
            return_id = new_id()
            totals = [0, 0, 0]
            rows = []
            for sku, quantity in asked:
                line = lines.get(sku)
                if line is None:
                    raise FailedPrecondition("SKU_NOT_IN_ORDER", f"{sku!r} is not in the order", metadata={"sku": sku})
                units = return_units(
                    quantity=line.quantity,
                    returned_before=line.returned_quantity,
                    unit_price_minor=line.unit_price_minor,
                    unit_points=[int(p) for p in line.unit_points.split(",")],
                    points_earned=line.points_to_earn,
                    to_return=quantity,
                )
                line.returned_quantity += quantity
                uow.session.add(line)
                rows.append(
                    ReturnLineRow(
                        return_id=return_id,
                        sku=sku,
                        quantity=quantity,
                        money_refunded_minor=units.money_refunded_minor,
                        points_returned=units.points_returned,
                        points_reversed=units.points_reversed,
                    )
                )
                totals[0] += units.money_refunded_minor
                totals[1] += units.points_returned
                totals[2] += units.points_reversed
            everything = all(line.returned_quantity == line.quantity for line in lines.values())
            if everything:
                totals[2] += order.order_level_points
            uow.session.add(
                ReturnRow(
                    return_id=return_id,
                    order_id=order.order_id,
                    status="PENDING",
                    money_refunded_minor=totals[0],
                    points_returned=totals[1],
                    points_reversed=totals[2],
                    reason=request.reason,
                    saga_at=now,
                    created_at=now,
                )
            )
            uow.session.flush()
            for row in rows:
                uow.session.add(row)
            self._event(uow, order, OrderStatus.RETURNED if everything else OrderStatus.PARTIALLY_RETURNED)
            return checkout_pb2.ReturnOrderItemsResponse(
                order_return=checkout_pb2.OrderReturn(return_id=return_id, order_id=order.order_id)
            )

        first = self._idempotency.run(
            "CheckoutService/ReturnOrderItems", request, checkout_pb2.ReturnOrderItemsResponse, effect
        )
        return_id = first.order_return.return_id
        owner = self.claim_return(return_id)
        if owner is not None:
            try:
                self.drive_return(return_id, owner)
            except Lost:
                log.info("return %s taken over by another driver", return_id)
        return return_id, self.snapshot(request.order_id)

    def claim_return(self, return_id: str) -> str | None:
        """Take the return's lease if it is still PENDING and nobody holds it."""

        def load(repo: CheckoutRepository) -> ReturnRow | None:
            row = repo.return_row(return_id, lock=True)
            return row if row is not None and row.status == "PENDING" else None

        return self._take_lease(load)

    def drive_return(self, return_id: str, owner: str) -> bool:
        """Refund, give points back, reverse the earned ones, then COMPLETED. True when done."""
        with self._db.unit_of_work() as uow:
            repo = CheckoutRepository(uow.session)
            row = repo.return_row(return_id)
            assert row is not None
            order = repo.order(row.order_id)
            assert order is not None
            uow.session.expunge_all()
        rid = return_id
        for step in RETURN_STEPS:
            if step in _steps(row):
                continue
            try:
                if step == "REFUND" and row.money_refunded_minor > 0:
                    self._peers.refund_money(
                        f"{rid}:refund",
                        hold_id=order.wallet_hold_id,
                        amount_minor=row.money_refunded_minor,
                        reference=rid,
                        reason=row.reason or "units returned",
                    )
                elif step == "RETURN_POINTS" and row.points_returned > 0:
                    self._peers.return_points(
                        f"{rid}:return-points",
                        hold_id=order.points_hold_id,
                        points=row.points_returned,
                        reference=rid,
                        reason=row.reason or "units returned",
                    )
                elif step == "REVERSE" and row.points_reversed > 0:
                    self._peers.reverse_points(
                        f"{rid}:reverse",
                        customer_id=order.customer_id,
                        reference=order.order_id,
                        points=row.points_reversed,
                        reason=f"units returned ({rid})",
                    )
            except DomainError as error:
                # Nothing of a return can be undone (the goods came back): keep it PENDING with
                # the error and let recovery try again (the earned points may still be in flight
                # from Promotions, or a peer may be down).
                self._record_return(rid, owner, last_error=f"{step}: {error.reason}: {error.message}"[:500])
                return False
            self._record_return(rid, owner, step=step)
        self._record_return(rid, owner, complete=True)
        return True

    def _record_return(
        self, return_id: str, owner: str, *, step: str = "", last_error: str = "", complete: bool = False
    ) -> None:
        with self._db.unit_of_work() as uow:
            repo = CheckoutRepository(uow.session)
            row = repo.return_row(return_id, lock=True)
            if row is None or row.lease_owner != owner:
                raise Lost(return_id)
            now = self._clock.now()
            row.saga_at = now
            if step:
                row.steps_done = ",".join(sorted(_steps(row) | {step}))
            row.last_error = last_error
            if last_error or complete:
                row.lease_owner, row.lease_until = "", None
            if complete:
                row.status = "COMPLETED"
                order = repo.order(row.order_id, lock=True)
                assert order is not None
                order.money_refunded_minor += row.money_refunded_minor
                order.updated_at = now
                uow.session.add(order)
            uow.session.add(row)
            uow.commit()

    # --- recovery -------------------------------------------------------------------------

    def recover(self, stuck_for: timedelta | None = None) -> Recovery:
        """Complete or compensate every saga that has not moved for `stuck_for`."""
        now = self._clock.now()
        moved_before = now - (stuck_for if stuck_for is not None else self.config.stuck_for)
        examined = completed = compensated = 0
        with self._db.unit_of_work() as uow:
            repo = CheckoutRepository(uow.session)
            order_ids = repo.open_sagas(moved_before, now, self.config.batch)
            return_ids = repo.open_returns(moved_before, now, self.config.batch)
        for order_id in order_ids:
            owner = self.claim(order_id)
            if owner is None:
                continue
            examined += 1
            self._give_up_if_too_old(order_id, owner)
            run = self._drive(order_id, owner)
            if run is None:  # taken over: see how it stands
                with self._db.unit_of_work() as uow:
                    order = CheckoutRepository(uow.session).order(order_id)
                    assert order is not None
            else:
                order = run.order
            if order.status == OrderStatus.FAILED.value:
                compensated += 1
            elif not order.saga_open:
                completed += 1
        for return_id in return_ids:
            owner = self.claim_return(return_id)
            if owner is None:
                continue
            examined += 1
            try:
                completed += self.drive_return(return_id, owner)
            except Lost:
                continue
        return Recovery(examined, completed, compensated)

    def _give_up_if_too_old(self, order_id: str, owner: str) -> None:
        """A PENDING order older than the saga timeout is compensated, not driven forward: its
        holds are about to lapse, and the customer has long been told something went wrong."""
        now = self._clock.now()

        def change(uow: UnitOfWork, order: OrderRow) -> None:
            too_old = order.created_at <= now - self.config.give_up_after
            if order.status == OrderStatus.PENDING.value and not order.compensating and too_old:
                uow.on_commit(lambda: self._metrics.saga_failed("compensate"))
                order.compensating = True
                order.failure_reason = "SAGA_TIMEOUT"
                order.failure_message = f"the order could not be completed in time ({order.last_error})"[:500]

        self._record(order_id, owner, change)
