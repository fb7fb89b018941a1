"""The Points use cases: credits, pending points, holds, returns, reversals, jobs and views.

Mutations run inside the caller's unit of work (which also holds the idempotency key) and open
the customer's `Book` first, which locks the account and settles what time has made due. Jobs
commit in batches of customers; views settle first if anything is due, then read.
"""

from __future__ import annotations

import contextvars
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import NamedTuple

from sqlalchemy import Table, case, select, update

from services.points.adapters.repository import AVAILABLE, PointsRepository
from services.points.adapters.tables import Account, HistoryLine, Hold, Lot, ReferenceDecision
from services.points.domain import history
from services.points.domain.history import EntryType
from services.points.domain.lots import (
    ACTIVITY_SOURCES,
    CreditRequest,
    Lifetimes,
    LotStatus,
    PointsSource,
    expiry_at_activation,
    group_expiring,
    validate_credit,
    validate_points,
    validate_reference,
    validate_text,
)
from services.points.domain.spending import HoldStatus, ReversalPlan
from services.points.service_layer.book import (
    Book,
    HoldView,
    Returned,
    Settlement,
    earned_outstanding,
    require_active,
)
from shared import bulk
from shared.clock import Clock
from shared.db import Database, UnitOfWork
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from shared.ids import new_ids
from shared.metrics import Metrics
from shared.pagination import decode_token, encode_token, page_size
from shared.validation import validate_customer_id

MAX_WINDOW_DAYS = 3650
DEFAULT_WINDOW_DAYS = 30
MAX_HOLD_TTL = timedelta(days=7)
MAX_STATISTICS_CUSTOMERS = 1000
# What a reference's pending points were told to do (reference_decisions.action).
ACTIVATE = "ACTIVATE"
CANCEL = "CANCEL"


_lots: Table = Lot.__table__  # type: ignore[attr-defined]
_history: Table = HistoryLine.__table__  # type: ignore[attr-defined]
_accounts: Table = Account.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PointsConfig:
    lifetimes: Lifetimes
    zone: tzinfo
    hold_ttl: timedelta
    job_batch: int
    expiry_chunk: int = 10_000
    expiry_workers: int = 2


class NewLot(NamedTuple):
    """An available lot a set-based credit is about to write (the `lots` row, as a value). A named
    tuple, immutable and made in a third of a frozen dataclass's time (a batch makes 1,000)."""

    lot_id: str
    customer_id: str
    amount: int
    source: str
    reference: str
    expires_at: datetime
    created_at: datetime
    reason: str
    operator_id: str
    remaining: int = 0
    held: int = 0
    withdrawn: int = 0
    status: str = LotStatus.AVAILABLE.value

    @property
    def available_at(self) -> datetime:
        return self.created_at

    def row(self) -> tuple[object, ...]:
        """Its `lots` row, in the order of `LOT_COLUMNS`."""
        return (
            self.lot_id,
            self.customer_id,
            self.amount,
            self.amount,
            0,
            0,
            self.source,
            self.reference,
            self.status,
            self.created_at,
            self.expires_at,
            self.created_at,
            self.reason,
            self.operator_id,
        )


LOT_COLUMNS = (
    "lot_id",
    "customer_id",
    "amount",
    "remaining",
    "held",
    "withdrawn",
    "source",
    "reference",
    "status",
    "available_at",
    "expires_at",
    "created_at",
    "reason",
    "operator_id",
)
_CREDITED_LINE_COLUMNS = (
    "customer_id",
    "type",
    "available_delta",
    "pending_delta",
    "held_delta",
    "unrecovered_points",
    "lot_id",
    "hold_id",
    "source",
    "reference",
    "description",
    "operator_id",
    "created_at",
)


@dataclass(frozen=True)
class BalanceView:
    available: int
    pending: int
    held: int
    expiring: list[tuple[str, datetime, int]]


@dataclass(frozen=True)
class CustomerStatistics:
    customer_id: str
    credited_by_source: dict[str, int]
    spent: int
    expired: int
    reversed: int
    activity_credits: int


def window_days(field: str, days: int) -> int:
    if not 0 <= days <= MAX_WINDOW_DAYS:
        raise InvalidArgument.field(field, f"must be between 0 and {MAX_WINDOW_DAYS}", "INVALID_WINDOW")
    return days or DEFAULT_WINDOW_DAYS


class Ledger:
    def __init__(self, database: Database, clock: Clock, config: PointsConfig, metrics: Metrics | None = None) -> None:
        self._db = database
        self._clock = clock
        self.config = config
        self._metrics = metrics or Metrics.noop()

    def now(self) -> datetime:
        return self._clock.now()

    def _expired(self, uow: UnitOfWork, points: int) -> None:
        """Count points written off once their transaction commits: lots expire lazily in any
        mutation of the customer's book, in every job, and on release or return into an expired lot."""
        if points:
            uow.on_commit(lambda: self._metrics.points_expired(points))

    def _open(self, uow: UnitOfWork, customer_id: str, now: datetime | None = None) -> Book:
        """The customer's book, locked, not yet settled."""
        return Book.open(uow.session, customer_id, now or self._clock.now(), self.config.lifetimes, self.config.zone)

    def _settle(self, uow: UnitOfWork, book: Book) -> None:
        self._expired(uow, book.settle().points_expired)

    def _book(self, uow: UnitOfWork, customer_id: str, now: datetime | None = None) -> Book:
        book = self._open(uow, customer_id, now)
        self._expired(uow, book.settle_if_due().points_expired)
        return book

    def _book_of_hold(self, uow: UnitOfWork, hold_id: str) -> tuple[Book, Hold]:
        """The book of the hold's customer (locked and settled) and the hold, read after the lock
        with its allocations and lots; three statements when nothing is due."""
        repo = PointsRepository(uow.session)
        account = repo.lock_account_of_hold(hold_id) if hold_id else None
        if account is None:
            raise NotFound("HOLD_NOT_FOUND", f"hold {hold_id!r} does not exist", metadata={"hold_id": hold_id})
        book = Book(repo, account, self._clock.now(), self.config.lifetimes, self.config.zone)
        found = repo.hold_with_parts(hold_id, book.customer_id, book.now)
        if found is not None and not found[2]:
            hold, parts, _ = found
            book.remember(hold, parts)
            return book, hold
        # Something is due (settle it first, as any touch of the customer does; the hold may be
        # among it), or the hold has no allocation, which cannot be: then read it alone.
        self._expired(uow, (book.settle() if found is not None else book.settle_if_due()).points_expired)
        settled = repo.hold(hold_id)
        assert settled is not None
        return book, settled

    # --- credits and pending points -------------------------------------------------------

    def credit(self, uow: UnitOfWork, request: CreditRequest) -> Lot:
        validate_credit(request, self._clock.now())
        if not (request.pending and request.reference):
            return self._book(uow, request.customer_id).credit(request)
        book = self._open(uow, request.customer_id)
        # Whether anything is due, and what was decided for the reference (it may have been
        # activated or cancelled before this credit arrived), in one statement after the lock.
        due, decision = book.repo.due_and_decision(request.customer_id, request.reference, book.now)
        if due:
            self._settle(uow, book)
        lot = book.credit(request)
        if decision is not None:
            action, available_at, reason = decision
            if action == CANCEL:
                book.cancel_pending(lot, reason or "the reference was cancelled")
            elif available_at is not None:
                book.activate(lot, available_at)
        return lot

    def _decide(
        self, book: Book, reference: str, action: str, *, available_at: datetime | None = None, reason: str = ""
    ) -> None:
        """Remember what was decided for a reference, for its pending lots credited later. A
        cancellation is final; a later activation moves the time."""
        decision = book.repo.decision(book.customer_id, reference)
        if decision is None:
            decision = ReferenceDecision(
                customer_id=book.customer_id, reference=reference, action=action, decided_at=book.now
            )
        elif decision.action == CANCEL:
            return
        decision.action = action
        decision.available_at = available_at
        decision.reason = reason
        decision.decided_at = book.now
        book.repo.add(decision)

    def activate(
        self, uow: UnitOfWork, customer_id: str, reference: str, at: datetime | None
    ) -> tuple[int, int, list[Lot]]:
        """(points activated now, points scheduled, lots)."""
        validate_customer_id(customer_id)
        validate_reference(reference, required=True)
        book = self._book(uow, customer_id)
        self._decide(book, reference, ACTIVATE, available_at=at or book.now)
        lots = [
            lot for lot in book.repo.lots_of_reference(customer_id, reference) if lot.status == LotStatus.PENDING.value
        ]
        activated = scheduled = 0
        for lot in lots:
            points = lot.remaining
            if book.activate(lot, at or book.now):
                activated += points
            else:
                scheduled += points
        return activated, scheduled, lots

    def cancel(self, uow: UnitOfWork, customer_id: str, reference: str, reason: str) -> tuple[int, list[Lot]]:
        validate_customer_id(customer_id)
        validate_reference(reference, required=True)
        validate_text("reason", reason)
        book = self._book(uow, customer_id)
        self._decide(book, reference, CANCEL, reason=reason)
        lots = [
            lot for lot in book.repo.lots_of_reference(customer_id, reference) if lot.status == LotStatus.PENDING.value
        ]
        return sum(book.cancel_pending(lot, reason) for lot in lots), lots

    # --- set-based credits (BatchCreditPoints) ---------------------------------------------

    def new_lots(self, credits: Sequence[CreditRequest]) -> list[NewLot]:
        """The lots these credits (validated, available at once) make, before anything is written:
        their answers are stored with the idempotency keys in the same statement."""
        now = self._clock.now()
        return [
            NewLot(
                lot_id=lot_id,
                customer_id=c.customer_id,
                amount=c.points,
                remaining=c.points,
                source=c.source.value,
                reference=c.reference,
                expires_at=expiry_at_activation(c.expires_at, now, self.config.lifetimes.of(c.source)),
                created_at=now,
                reason=c.reason,
                operator_id=c.operator_id,
            )
            for c, lot_id in zip(credits, new_ids(len(credits)), strict=True)
        ]

    def lock_customers(self, uow: UnitOfWork, customer_ids: Sequence[str], create: Iterable[str] = ()) -> set[str]:
        """Lock the customers' accounts (in customer order; those in `create` created first if
        missing); returns those with something due, which must go through their `Book` (settled
        first) rather than the set-based path. A customer without an account has nothing due: the
        set-based path creates the account with its credits (`write_credits`)."""
        repo = PointsRepository(uow.session)
        now = self._clock.now()
        repo.lock_many(customer_ids, now, create=create)
        return repo.customers_with_anything_due(customer_ids, now)

    def write_credits(self, uow: UnitOfWork, lots: Sequence[NewLot]) -> None:
        """Write available credits set-based: the lots, one CREDITED line each, and each account
        moved by the sum of its credits (created with it if missing). The existing accounts must
        be locked (`lock_customers`) and have nothing due, so this is what `Book.credit` would do
        for each, in fewer statements."""
        if not lots:
            return
        session = uow.session
        bulk.copy_rows(session, _lots, LOT_COLUMNS, [lot.row() for lot in lots])
        credited = EntryType.CREDITED.value
        bulk.copy_rows(
            session,
            _history,
            _CREDITED_LINE_COLUMNS,
            [
                (
                    lot.customer_id,
                    credited,
                    lot.amount,
                    0,
                    0,
                    0,
                    lot.lot_id,
                    "",
                    lot.source,
                    lot.reference,
                    (
                        history.credited(lot.amount, lot.source, lot.reference, False)
                        + (f": {lot.reason}" if lot.reason else "")
                    )[:500],
                    lot.operator_id,
                    lot.created_at,
                )
                for lot in lots
            ],
        )
        per_customer: dict[str, int] = defaultdict(int)
        per_source: dict[str, int] = defaultdict(int)
        for lot in lots:
            per_customer[lot.customer_id] += lot.amount
            per_source[lot.source] += lot.amount
        customers = sorted(per_customer)
        PointsRepository(session).add_available(customers, [per_customer[c] for c in customers], lots[0].created_at)

        def count() -> None:
            for source, points in per_source.items():
                self._metrics.points_credited(points, source=source, pending=False)

        uow.on_commit(count)

    # --- holds ----------------------------------------------------------------------------

    def hold(self, uow: UnitOfWork, customer_id: str, points: int, reference: str, ttl: timedelta | None) -> HoldView:
        validate_customer_id(customer_id)
        validate_points("points", points)
        validate_reference(reference)
        if ttl is not None and not timedelta(0) < ttl <= MAX_HOLD_TTL:
            raise InvalidArgument.field("ttl", f"must be positive and at most {MAX_HOLD_TTL}", "INVALID_TTL")
        book = self._open(uow, customer_id)
        # The lots to take from and whether anything is due, in one statement after the lock;
        # when something is due, settle first and read the lots again.
        lots, due = book.repo.lots_to_spend(customer_id, book.now, points)
        if due is None:
            due = book.repo.has_due(customer_id, book.now)
        if due:
            self._settle(uow, book)
            lots = book.repo.lots_to_spend(customer_id, book.now, points)[0]
        hold = book.hold(points, reference, ttl or self.config.hold_ttl, lots)
        return book.view(hold)

    def capture(self, uow: UnitOfWork, hold_id: str, points: int) -> HoldView:
        validate_points("points", points, zero_means_all=True)
        book, hold = self._book_of_hold(uow, hold_id)
        require_active(hold, book.now)
        if points > hold.points:
            raise FailedPrecondition(
                "CAPTURE_EXCEEDS_HOLD",
                f"cannot capture {points} points of a hold of {hold.points}",
                metadata={"hold_id": hold_id, "held": str(hold.points)},
            )
        book.capture(hold, points or hold.points)
        return book.view(hold)

    def release(self, uow: UnitOfWork, hold_id: str, reason: str) -> tuple[HoldView, int]:
        validate_text("reason", reason)
        book, hold = self._book_of_hold(uow, hold_id)
        if hold.status == HoldStatus.CAPTURED.value:
            raise FailedPrecondition("ALREADY_CAPTURED", f"hold {hold_id} was captured; return the points instead")
        if hold.status != HoldStatus.ACTIVE.value:
            return book.view(hold), 0
        expired = book.release(hold, HoldStatus.RELEASED, reason or "released by the caller")
        self._expired(uow, expired)
        return book.view(hold), expired

    def return_points(
        self, uow: UnitOfWork, hold_id: str, points: int, reference: str, reason: str
    ) -> tuple[Returned, HoldView]:
        validate_points("points", points, zero_means_all=True)
        validate_reference(reference)
        validate_text("reason", reason)
        book, hold = self._book_of_hold(uow, hold_id)
        if hold.status != HoldStatus.CAPTURED.value:
            raise FailedPrecondition("HOLD_NOT_CAPTURED", f"hold {hold_id} is {hold.status.lower()}, not captured")
        left = hold.captured - hold.returned
        if points > left or left == 0:
            raise FailedPrecondition(
                "RETURN_EXCEEDS_CAPTURED",
                f"{points or 'all'} points asked back, {left} of {hold.captured} captured are left to return",
                metadata={"hold_id": hold_id, "returnable": str(left)},
            )
        returned = book.return_points(hold, points or left, reference, reason)
        self._expired(uow, returned.expired)
        return returned, book.view(hold)

    def get_hold(self, hold_id: str) -> HoldView:
        with self._db.read() as session:
            repo = PointsRepository(session)
            owner = repo.hold_owner(hold_id) if hold_id else None
        if owner is None:
            raise NotFound("HOLD_NOT_FOUND", f"hold {hold_id!r} does not exist", metadata={"hold_id": hold_id})
        self.settle_if_due(owner)
        with self._db.read() as session:
            repo = PointsRepository(session)
            hold = repo.hold(hold_id)
            assert hold is not None
            view = self.hold_view(repo, hold)
            session.expunge_all()  # read-only: the rows outlive the session
            return view

    @staticmethod
    def hold_view(repo: PointsRepository, hold: Hold) -> HoldView:
        allocations = repo.allocations(hold.hold_id)
        lots = repo.lots([a.lot_id for a in allocations])
        pairs = []
        for a in allocations:
            expires_at = lots[a.lot_id].expires_at
            assert expires_at is not None
            pairs.append((a, expires_at))
        return HoldView(hold, pairs)

    # --- reversals ------------------------------------------------------------------------

    def reverse(self, uow: UnitOfWork, customer_id: str, reference: str, points: int, reason: str) -> ReversalPlan:
        validate_customer_id(customer_id)
        validate_reference(reference, required=True)
        validate_points("points", points, zero_means_all=True)
        validate_text("reason", reason)
        book = self._book(uow, customer_id)
        earned = book.repo.lots_of_reference(customer_id, reference)
        outstanding = earned_outstanding(earned)
        if not earned or (outstanding == 0 and points == 0):
            raise FailedPrecondition(
                "NOTHING_TO_REVERSE",
                f"customer {customer_id} has no points earned by {reference!r} left to take back",
                metadata={"customer_id": customer_id, "reference": reference},
            )
        if points > outstanding:
            raise FailedPrecondition(
                "REVERSAL_EXCEEDS_EARNED",
                f"{points} points asked back, {reference!r} earned {outstanding} not yet taken back",
                metadata={"reference": reference, "outstanding": str(outstanding)},
            )
        return book.reverse(earned, points or outstanding, reason, reference)

    # --- jobs -----------------------------------------------------------------------------

    def run_due(self, find: Callable[[PointsRepository, datetime, int], list[str]]) -> Settlement:
        """Settle, in batches of customers, everything `find` says is due at the job's start."""
        now = self._clock.now()
        total = Settlement()
        seen: set[str] = set()
        while True:
            with self._db.unit_of_work() as uow:
                repo = PointsRepository(uow.session)
                customers = [c for c in find(repo, now, self.config.job_batch) if c not in seen]
                if not customers:
                    return total
                batch = Settlement()
                for customer_id in sorted(customers):  # lock order: no deadlock between jobs
                    book = Book.open(uow.session, customer_id, now, self.config.lifetimes, self.config.zone)
                    batch.add(book.settle())
                self._expired(uow, batch.points_expired)
                total.add(batch)
                seen.update(customers)
                uow.commit()

    def expire_due(self) -> Settlement:
        """ExpirePoints, set-based: lots past their expiry with a free part are written off in
        chunks of `expiry_chunk` lots, one transaction each: the chunk's accounts are locked in
        customer order, the lots updated by one statement, one EXPIRED line each (as
        `Book.expire` writes it) and each account moved once. A customer who also has an expired
        hold or a due activation is settled through their `Book` instead, exactly as before.
        Idempotent by nature: a written-off lot is no longer a candidate.

        `expiry_workers` threads share the work, each the customers of one hash part
        (`bulk.hash_part`): no two of them lock the same account or lot, so they cannot wait
        on each other, and one's Python runs while another's statements run in the database.
        Every worker is waited for; the first failure is raised after all have stopped."""
        now = self._clock.now()
        parts = self.config.expiry_workers
        if parts == 1:
            return self._expire_part(now, 1, 0)
        with ThreadPoolExecutor(max_workers=parts, thread_name_prefix="expiry") as pool:
            running = [
                pool.submit(contextvars.copy_context().run, self._expire_part, now, parts, part)
                for part in range(parts)
            ]
        total = Settlement()
        for done in running:
            total.add(done.result())
        return total

    def _expire_part(self, now: datetime, parts: int, part: int) -> Settlement:
        """`expire_due` for the customers of one hash part, until none of their lots is due."""
        total = Settlement()
        c = _lots.c
        candidate = (c.status == AVAILABLE, c.expires_at <= now, c.remaining > c.held)
        mine = bulk.hash_part(c.customer_id, parts, part)
        while True:
            with self._db.unit_of_work() as uow:
                session = uow.session
                chunk = bulk.plain_rows(
                    session,
                    select(c.lot_id, c.customer_id)
                    .where(*candidate, mine)
                    .order_by(c.expires_at)
                    .limit(self.config.expiry_chunk),
                )
                if not chunk:
                    return total
                batch = Settlement()
                customers = sorted({row[1] for row in chunk})
                repo = PointsRepository(session)
                repo.lock_many(customers, now)  # a customer with lots has an account
                other_due = repo.customers_with_anything_due(customers, now, expired_lots=False)
                for customer_id in sorted(other_due):
                    batch.add(Book.open(session, customer_id, now, self.config.lifetimes, self.config.zone).settle())
                ids = [row[0] for row in chunk if row[1] not in other_due]
                created_at = bulk.as_stored(session, c.created_at)
                lots = (
                    bulk.plain_rows(
                        session,
                        select(c.lot_id, c.customer_id, c.remaining, c.held, c.source, c.reference, created_at).where(
                            bulk.any_of(session, c.lot_id, ids), *candidate
                        ),
                    )
                    if ids
                    else []
                )
                if lots:
                    session.execute(
                        update(_lots)
                        .where(bulk.any_of(session, c.lot_id, [row[0] for row in lots]))
                        .values(
                            remaining=c.held,
                            status=case((c.held == 0, LotStatus.EXPIRED.value), else_=c.status),
                        )
                    )
                    lines = []
                    per_customer: dict[str, int] = defaultdict(int)
                    for lot_id, customer_id, remaining, held, source, reference, created_at in lots:
                        points = remaining - held
                        per_customer[customer_id] += points
                        lines.append(
                            {
                                "customer_id": customer_id,
                                "type": EntryType.EXPIRED.value,
                                "available_delta": -points,
                                "pending_delta": 0,
                                "held_delta": 0,
                                "unrecovered_points": 0,
                                "lot_id": lot_id,
                                "hold_id": "",
                                "source": source,
                                "reference": reference,
                                "description": history.expired(points, created_at, self.config.zone)[:500],
                                "operator_id": "",
                                "created_at": now,
                            }
                        )
                    bulk.insert_rows(session, _history, lines)
                    moved = sorted(per_customer)
                    bulk.add_to_columns(
                        session,
                        _accounts,
                        "customer_id",
                        {"available": [-per_customer[c] for c in moved]},
                        moved,
                        also={"updated_at": now},
                    )
                    batch.lots_expired += len(lots)
                    batch.points_expired += sum(per_customer.values())
                self._expired(uow, batch.points_expired)
                total.add(batch)
                uow.commit()

    def settle_if_due(self, customer_id: str) -> None:
        now = self._clock.now()
        with self._db.unit_of_work() as uow:
            if PointsRepository(uow.session).has_due(customer_id, now):
                self._book(uow, customer_id, now)
                uow.commit()

    # --- views ----------------------------------------------------------------------------

    def balance(self, customer_id: str, expiring_within_days: int) -> BalanceView:
        """The balances and what expires within the window: one statement when nothing is due
        (the account, whether anything is due, and the expiring lots), else settle and read again."""
        validate_customer_id(customer_id)
        days = window_days("expiring_within_days", expiring_within_days)
        found = self._balance(customer_id, days)
        if found is not None and found[1]:
            self.settle_if_due(customer_id)
            found = self._balance(customer_id, days)
        if found is None:
            return BalanceView(0, 0, 0, [])
        (available, pending, held), _, expiring = found
        return BalanceView(available, pending, held, group_expiring(expiring, self.config.zone))

    def _balance(
        self, customer_id: str, days: int
    ) -> tuple[tuple[int, int, int], bool, list[tuple[datetime, int]]] | None:
        now = self._clock.now()
        with self._db.read() as session:
            return PointsRepository(session).balance_and_expiring(customer_id, now, now + timedelta(days=days))

    def expiring(
        self, customer_id: str, within_days: int, size: int, token: str
    ) -> tuple[list[tuple[str, datetime, int]], str]:
        validate_customer_id(customer_id)
        days = window_days("within_days", within_days)
        limit = page_size(size)
        after = decode_token("expiring", token, [str])
        self.settle_if_due(customer_id)
        now = self._clock.now()
        with self._db.read() as session:
            rows = PointsRepository(session).expiring(customer_id, now, now + timedelta(days=days))
        groups = [g for g in group_expiring(rows, self.config.zone) if after is None or g[0] > after[0]]
        page = groups[:limit]
        return page, encode_token("expiring", [page[-1][0]]) if len(groups) > limit else ""

    def lots(self, customer_id: str, statuses: Sequence[LotStatus], size: int, token: str) -> tuple[list[Lot], str]:
        validate_customer_id(customer_id)
        limit = page_size(size)
        key = decode_token("lots", token, [str, str])
        after = (datetime.fromisoformat(key[0]), key[1]) if key is not None else None
        self.settle_if_due(customer_id)
        with self._db.read() as session:
            rows = PointsRepository(session).lots_page(customer_id, [s.value for s in statuses], after, limit + 1)
            session.expunge_all()
        page = rows[:limit]
        more = len(rows) > limit
        return page, encode_token("lots", [page[-1].created_at.isoformat(), page[-1].lot_id]) if more else ""

    def history(
        self, customer_id: str, size: int, token: str, start: datetime | None, end: datetime | None
    ) -> tuple[list[HistoryLine], str]:
        validate_customer_id(customer_id)
        limit = page_size(size)
        key = decode_token("history", token, [int])
        self.settle_if_due(customer_id)
        with self._db.read() as session:
            rows = PointsRepository(session).history_page(customer_id, key[0] if key else None, start, end, limit + 1)
            session.expunge_all()
        page = rows[:limit]
        last = page[-1].id if page else None
        return page, encode_token("history", [last]) if len(rows) > limit and last is not None else ""

    def history_totals(self, customer_id: str) -> tuple[int, int, int]:
        with self._db.unit_of_work() as uow:
            return PointsRepository(uow.session).history_totals(customer_id)

    def statistics(
        self, start: datetime | None, end: datetime | None, customer_ids: Sequence[str], size: int, token: str
    ) -> tuple[list[CustomerStatistics], str]:
        if start is None or end is None:
            raise InvalidArgument.field("start_time" if start is None else "end_time", "is required", "PERIOD_REQUIRED")
        if end <= start:
            raise InvalidArgument.field("end_time", "must be after start_time", "INVALID_PERIOD")
        if len(customer_ids) > MAX_STATISTICS_CUSTOMERS:
            raise InvalidArgument.field(
                "customer_ids", f"at most {MAX_STATISTICS_CUSTOMERS} customers per call", "TOO_MANY_CUSTOMERS"
            )
        for customer_id in customer_ids:
            validate_customer_id(customer_id)
        limit = page_size(size, default=1000)
        key = decode_token("statistics", token, [str])
        after = key[0] if key else None
        with self._db.unit_of_work() as uow:
            repo = PointsRepository(uow.session)
            if customer_ids:
                wanted = sorted(set(customer_ids))
                candidates = [c for c in wanted if after is None or c > after][: limit + 1]
            else:
                candidates = repo.active_customers(start, end, after, limit + 1)
            page = candidates[:limit]
            rows = repo.statistics(start, end, page) if page else []
        stats = {c: CustomerStatistics(c, {}, 0, 0, 0, 0) for c in page}
        for customer_id, kind, source, moved in rows:
            stats[customer_id] = _accumulate(stats[customer_id], kind, source, moved)
        more = len(candidates) > limit
        return [stats[c] for c in page], encode_token("statistics", [page[-1]]) if more else ""


def _accumulate(stats: CustomerStatistics, kind: str, source: str, moved: int) -> CustomerStatistics:
    credited = dict(stats.credited_by_source)
    spent, expired, reversed_, activity = stats.spent, stats.expired, stats.reversed, stats.activity_credits
    if kind in (EntryType.CREDITED.value, EntryType.CREDITED_PENDING.value):
        credited[source] = credited.get(source, 0) + moved
        if PointsSource(source) in ACTIVITY_SOURCES:
            activity += moved
    elif kind == EntryType.SPENT.value or kind == EntryType.RETURNED.value:
        spent -= moved
    elif kind == EntryType.EXPIRED.value:
        expired -= moved
    elif kind == EntryType.REVERSED.value:
        reversed_ -= moved
    return CustomerStatistics(stats.customer_id, credited, spent, expired, reversed_, activity)
