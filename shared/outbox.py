"""Transactional outbox and its relay.

A service that must cause an effect in a peer after its own commit writes the peer request into
`outbox_messages` in the same transaction as its local change (`Outbox.enqueue`). The relay
delivers due messages at least once: it claims a batch by pushing their next attempt past a
lease (so a relay that dies mid-delivery only delays a message, and two relays never work on
the same one), calls the peer, and records the outcome. The request carries its own request id,
so the receiver applies it once however often it arrives.

A pass delivers its claimed messages on up to `OUTBOX_CONCURRENCY` threads at once (the peer
works on several batches in parallel instead of one after another). Nothing relies on the order
of delivery: every message is keyed by its own request id, and the receiver copes with messages
arriving in any order (Points remembers an activation or cancellation that arrives before its
pending credit). A message whose lease ran out before its turn came is left alone, for the next
pass of whichever relay claims it; and the outcome is recorded only while the message is still
PENDING, so a late relay (its lease lapsed, another relay delivered meanwhile) changes nothing.

Transport failures and transient statuses are retried with exponential backoff and jitter up to
`OUTBOX_MAX_BACKOFF_MS`; a peer's definite refusal (INVALID_ARGUMENT, FAILED_PRECONDITION, ...)
marks the message DEAD. Every message keeps its attempts and last error, so failures are visible.

A batch the peer accepts in part (`BatchCreditPoints` answers per item) is DELIVERED for what was
accepted, and the refused items become a DEAD message of their own in the same transaction, with
the reasons as its last error (`shared/outbox_batches.py`): never silently counted as delivered.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import grpc
from google.protobuf.message import Message
from opentelemetry import propagate, trace
from sqlalchemy import Executable, Table, bindparam, func, insert, select, update

from shared.clock import Clock
from shared.db import Database, UnitOfWork
from shared.errors import DomainError
from shared.metrics import Metrics
from shared.outbox_batches import INSPECTORS, Inspector
from shared.peers import Peers
from shared.telemetry import untraced

log = logging.getLogger(__name__)

# Statuses worth another attempt: the peer did not decide, or may not have.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)


class OutboxStatus(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    DEAD = "DEAD"


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    delivered: int
    dead: int
    oldest_pending_at: datetime | None


class Outbox:
    """Writes peer requests into the caller's transaction."""

    def __init__(self, table: Table, clock: Clock) -> None:
        self.table = table
        self._clock = clock
        self._insert = insert(table)

    def enqueue(self, uow: UnitOfWork, *, peer: str, method: str, request: Message) -> None:
        """Queue `request` for `peer`'s `method`; its request id is the delivery key."""
        key: str = request.request_id  # type: ignore[attr-defined]
        if not key:
            raise ValueError("an outbox request needs a request_id: it is how the peer deduplicates")
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        now = self._clock.now()
        uow.session.execute(
            self._insert,  # built once: building the construct per message cost more than running it
            {
                "message_key": f"{method}:{key}",
                "peer": peer,
                "method": method,
                "payload": request.SerializeToString(deterministic=True),
                "status": OutboxStatus.PENDING.value,
                "attempts": 0,
                "last_error": None,
                "trace_context": json.dumps(carrier) if carrier else None,
                "created_at": now,
                "next_attempt_at": now,
                "delivered_at": None,
            },
        )

    def backlog(self, database: Database) -> tuple[int, int, timedelta | None]:
        """(pending, dead, age of the oldest pending message): what the outbox gauges report.
        Reads the (status, next_attempt_at) index only, however many delivered rows there are."""
        t = self.table
        with untraced(), database.read() as session:
            pending, oldest = session.execute(
                select(func.count(), func.min(t.c.created_at)).where(t.c.status == OutboxStatus.PENDING.value)
            ).one()
            dead = session.execute(select(func.count()).where(t.c.status == OutboxStatus.DEAD.value)).scalar_one()
        return int(pending), int(dead), None if oldest is None else max(self._clock.now() - oldest, timedelta(0))

    def stats(self, database: Database) -> OutboxStats:
        t = self.table
        with database.unit_of_work() as uow:
            rows = uow.session.execute(select(t.c.status, func.count()).group_by(t.c.status)).all()
            counts: dict[str, int] = {status: count for status, count in rows}
            oldest = uow.session.execute(
                select(func.min(t.c.created_at)).where(t.c.status == OutboxStatus.PENDING.value)
            ).scalar()
        return OutboxStats(
            pending=counts.get(OutboxStatus.PENDING.value, 0),
            delivered=counts.get(OutboxStatus.DELIVERED.value, 0),
            dead=counts.get(OutboxStatus.DEAD.value, 0),
            oldest_pending_at=oldest,
        )


@dataclass(frozen=True)
class _Claimed:
    id: int
    peer: str
    method: str
    payload: bytes
    attempts: int
    trace_context: str | None


class OutboxRelay:
    """Delivers due outbox messages; `deliver_due()` is one pass, `start()` runs passes in a thread."""

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        peers: Peers,
        clock: Clock,
        *,
        batch_size: int = 100,
        poll_interval_ms: int = 200,
        max_backoff_ms: int = 60_000,
        lease_ms: int = 30_000,
        concurrency: int = 1,
        base_backoff_ms: int = 100,
        jitter: Callable[[], float] = random.random,
        tracer: trace.Tracer | None = None,
        metrics: Metrics | None = None,
        inspectors: Mapping[str, Inspector] = INSPECTORS,
    ) -> None:
        self._inspectors = dict(inspectors)
        self._db = database
        self._table = outbox.table
        self._peers = peers
        self._clock = clock
        self._batch_size = batch_size
        self._poll_interval_ms = poll_interval_ms
        self._max_backoff_ms = max_backoff_ms
        self._lease = timedelta(milliseconds=lease_ms)
        if concurrency < 1:
            raise ValueError("the relay needs at least one delivery thread")
        self._concurrency = concurrency
        self._base_backoff_ms = base_backoff_ms
        self._jitter = jitter
        self._tracer = tracer or trace.get_tracer(__name__)
        self._metrics = metrics or Metrics.noop()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._claim_statement = self._claiming(outbox.table, database.supports_skip_locked)
        t = outbox.table.c
        # An outcome is recorded only while the message is still PENDING: a relay whose lease
        # lapsed (another relay recorded it meanwhile) changes nothing.
        self._still_pending = (t.id == bindparam("message_id"), t.status == OutboxStatus.PENDING.value)
        self._record_delivered = (
            update(outbox.table)
            .where(*self._still_pending)
            .values(
                status=OutboxStatus.DELIVERED.value,
                attempts=bindparam("attempts"),
                delivered_at=bindparam("delivered_at", type_=t.delivered_at.type),
                last_error=bindparam("last_error"),
            )
            .returning(t.id)
        )

    @staticmethod
    def _claiming(t: Table, skip_locked: bool) -> Executable:
        """One statement, built once, that claims a batch of due messages: their next attempt
        pushed past the lease, their content returned. On PostgreSQL rows another relay is
        claiming are skipped, not waited for; SQLite's writers take turns on the database lock."""
        due = (
            select(t.c.id)
            .where(t.c.status == OutboxStatus.PENDING.value, t.c.next_attempt_at <= bindparam("now"))
            .order_by(t.c.id)
            .limit(bindparam("batch"))
        )
        if skip_locked:
            due = due.with_for_update(skip_locked=True)
        return (
            update(t)
            .where(t.c.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=bindparam("leased_until"))
            .returning(t.c.id, t.c.peer, t.c.method, t.c.payload, t.c.attempts, t.c.trace_context)
        )

    def backoff(self, attempts: int) -> timedelta:
        """Exponential backoff with jitter: half the ceiling plus up to half again."""
        ceiling = min(self._max_backoff_ms, self._base_backoff_ms * 2 ** min(attempts - 1, 30))
        return timedelta(milliseconds=ceiling / 2 + self._jitter() * ceiling / 2)

    def deliver_due(self) -> int:
        """Claim and deliver one batch of due messages (up to `concurrency` at once); returns how
        many were delivered."""
        messages, leased_until = self._claim()
        if not messages:
            return 0
        if self._concurrency == 1 or len(messages) == 1:
            return sum(self._deliver_leased(message, leased_until) for message in messages)
        workers = min(self._concurrency, len(messages))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="outbox-deliver") as pool:
            return sum(pool.map(lambda message: self._deliver_leased(message, leased_until), messages))

    def _deliver_leased(self, message: _Claimed, leased_until: datetime) -> bool:
        """Deliver `message` if this relay still holds its lease; one message's failure to be
        recorded (the database went away) does not stop the others: it waits for its lease."""
        if self._clock.now() >= leased_until:
            return False  # another relay may have claimed it since: the next pass claims it again
        try:
            return self._deliver(message)
        except Exception:
            log.exception("outbox delivery could not be recorded", extra={"outbox_id": message.id})
            return False

    def _claim(self) -> tuple[list[_Claimed], datetime]:
        """The claimed messages (in id order) and the end of their lease."""
        now = self._clock.now()
        leased_until = now + self._lease
        # The poll is not traced: an idle relay would start a trace of its own every pass.
        with untraced():
            rows = self._db.execute_alone(
                self._claim_statement, {"now": now, "leased_until": leased_until, "batch": self._batch_size}
            )
        return sorted((_Claimed(**row._mapping) for row in rows), key=lambda claimed: claimed.id), leased_until

    def _deliver(self, message: _Claimed) -> bool:
        # A delivery is its own trace, linked to the request that wrote the message.
        cause = trace.get_current_span(propagate.extract(json.loads(message.trace_context or "{}")))
        links = [trace.Link(cause.get_span_context())] if cause.get_span_context().is_valid else []
        with self._tracer.start_as_current_span(
            "outbox deliver",
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            kind=trace.SpanKind.PRODUCER,
            links=links,
            attributes={
                "outbox.id": message.id,
                "outbox.method": message.method,
                "outbox.attempt": message.attempts + 1,
            },
        ):
            return self._deliver_traced(message)

    def _deliver_traced(self, message: _Claimed) -> bool:
        t = self._table
        try:
            response = self._peers.call_raw(message.peer, message.method, message.payload)
        except DomainError as error:
            attempts = message.attempts + 1
            retryable = error.code in RETRYABLE
            now = self._clock.now()
            values: dict[str, object] = {
                "attempts": attempts,
                "last_error": f"{error.code.name} {error.reason}: {error.message}"[:2000],
            }
            if retryable:
                values["next_attempt_at"] = now + self.backoff(attempts)
            else:
                values["status"] = OutboxStatus.DEAD.value
            with self._db.unit_of_work() as uow:
                uow.session.execute(update(t).where(*self._still_pending).values(**values), {"message_id": message.id})
                uow.commit()
            self._metrics.outbox_delivery(message.method, "retry" if retryable else "dead")
            log.warning(
                "outbox delivery failed",
                extra={
                    "outbox_id": message.id,
                    "method": message.method,
                    "attempts": attempts,
                    "reason": error.reason,
                    "will_retry": retryable,
                },
            )
            return False
        inspector = self._inspectors.get(message.method)
        refused = inspector(message.payload, response) if inspector is not None else None
        now = self._clock.now()
        outcome = {
            "message_id": message.id,
            "attempts": message.attempts + 1,
            "delivered_at": now,
            "last_error": None if refused is None else f"refused in part: {refused.description}"[:2000],
        }
        if refused is None:  # the common case: one statement
            if not self._db.execute_alone(self._record_delivered, outcome):
                return False  # a relay that claimed it after our lease ran out recorded it first: its outcome stands
        else:
            with self._db.unit_of_work() as uow:
                if not uow.session.execute(self._record_delivered, outcome).all():
                    return False
                # The refused items wait as a dead letter of their own: visible, and re-queued by hand.
                uow.session.execute(
                    insert(t).values(
                        message_key=f"{message.method}:{refused.request.request_id}",  # type: ignore[attr-defined]
                        peer=message.peer,
                        method=message.method,
                        payload=refused.request.SerializeToString(deterministic=True),
                        status=OutboxStatus.DEAD.value,
                        attempts=1,
                        last_error=refused.description[:2000],
                        trace_context=message.trace_context,
                        created_at=now,
                        next_attempt_at=now,
                        delivered_at=None,
                    )
                )
                uow.commit()
        self._metrics.outbox_delivery(message.method, "delivered")
        if refused is not None:
            self._metrics.outbox_delivery(message.method, "refused")
            log.warning(
                "outbox delivery refused in part",
                extra={"outbox_id": message.id, "method": message.method, "refused_items": refused.items},
            )
        return True

    def notify(self) -> None:
        """Ask the relay thread for a pass now (after a commit that enqueued something)."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.deliver_due() > 0
            except Exception:
                log.exception("outbox relay pass failed")
                busy = False
            if not busy:
                self._wake.wait(self._poll_interval_ms / 1000)
                self._wake.clear()
