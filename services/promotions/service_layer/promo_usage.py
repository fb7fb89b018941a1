"""Using promo codes: validate, reserve at order time, confirm or release with the order's outcome.

A reservation holds one use and its points against the code's limits and budget while the order
is placed. Reserving locks the code's row (`SELECT ... FOR UPDATE`), so concurrent orders at the
limit are decided one after another and never over-use it; CHECK constraints back the counters
up. Confirming counts the use and credits the points to Points through the outbox; releasing (or
the expiry job) gives the use and the points back, so a failed order does not use up a code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func
from sqlmodel import col, select

from services.promotions.adapters import points_peer
from services.promotions.adapters.tables import PromoCodeRow, PromoReservationRow
from services.promotions.domain.catalogue import normalise_code
from services.promotions.domain.earning import Award, AwardKind, Line, evaluate
from services.promotions.domain.promo_codes import REFUSAL_TEXT, CodeState, Refusal, refusal
from services.promotions.service_layer.catalogue import split
from shared.clock import Clock
from shared.db import Database, UnitOfWork
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from shared.ids import new_id
from shared.outbox import Outbox
from shared.validation import validate_customer_id

MAX_TTL = timedelta(days=7)
JOB_BATCH = 200


class ReservationStatus(StrEnum):
    RESERVED = "RESERVED"
    CONFIRMED = "CONFIRMED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class Validation:
    refusal: Refusal | None
    points: int
    row: PromoCodeRow | None


def code_state(row: PromoCodeRow) -> CodeState:
    return CodeState(
        code=row.code,
        fixed_points=row.fixed_points,
        percent_bps=row.percent_bps,
        max_points_per_use=row.max_points_per_use,
        start_at=row.start_at,
        end_at=row.end_at,
        per_customer_limit=row.per_customer_limit,
        usage_limit=row.usage_limit,
        used_count=row.used_count,
        reserved_count=row.reserved_count,
        budget_points=row.budget_points,
        budget_used_points=row.budget_used_points,
        min_order_minor=row.min_order_minor,
        categories=frozenset(split(row.categories)),
    )


def code_awards(state: CodeState, lines: Sequence[Line]) -> list[Award]:
    """The awards the code gives on these lines (the same function EvaluateOrder uses)."""
    return evaluate(lines, (), (), state.reward(), None).awards


def refusal_error(reason: Refusal, code: str, *, not_found_is_not_found: bool) -> FailedPrecondition | NotFound:
    kind = NotFound if reason is Refusal.NOT_FOUND and not_found_is_not_found else FailedPrecondition
    return kind(reason.value, f"{code}: {REFUSAL_TEXT[reason]}", metadata={"code": code})


def awards_to_json(awards: Sequence[Award]) -> str:
    return json.dumps([{**asdict(a), "kind": a.kind.value} for a in awards], sort_keys=True)


def awards_from_json(text: str) -> list[Award]:
    return [Award(**{**item, "kind": AwardKind(item["kind"])}) for item in json.loads(text or "[]")]


class PromoUsage:
    def __init__(self, outbox: Outbox, clock: Clock, default_ttl: timedelta) -> None:
        self._outbox = outbox
        self._clock = clock
        self._default_ttl = default_ttl

    @staticmethod
    def customer_uses(uow: UnitOfWork, code: str, customer_id: str) -> int:
        count = uow.session.exec(
            select(func.count()).where(
                col(PromoReservationRow.code) == code,
                col(PromoReservationRow.customer_id) == customer_id,
                col(PromoReservationRow.status).in_(
                    [ReservationStatus.RESERVED.value, ReservationStatus.CONFIRMED.value]
                ),
            )
        ).one()
        return int(count)

    def check(
        self, uow: UnitOfWork, customer_id: str, code: str, lines: Sequence[Line] | None, *, lock: bool = False
    ) -> Validation:
        validate_customer_id(customer_id)
        code = normalise_code(code)
        if not code:
            raise InvalidArgument.field("code", "is required", "PROMO_CODE_REQUIRED")
        query = select(PromoCodeRow).where(PromoCodeRow.code == code)
        row = uow.session.exec(query.with_for_update() if lock else query).first()
        if row is None:
            return Validation(Refusal.NOT_FOUND, 0, None)
        state = code_state(row)
        reason = refusal(state, self.customer_uses(uow, code, customer_id), self._clock.now(), lines)
        if reason is not None:
            return Validation(reason, 0, row)
        points = sum(a.points for a in code_awards(state, lines)) if lines is not None else 0
        return Validation(None, points, row)

    def reserve(
        self,
        uow: UnitOfWork,
        customer_id: str,
        code: str,
        order_id: str,
        lines: Sequence[Line],
        ttl: timedelta | None,
    ) -> PromoReservationRow:
        if not order_id.strip() or len(order_id) > 128:
            raise InvalidArgument.field("order_id", "is required, at most 128 characters", "ORDER_ID_REQUIRED")
        if not lines:
            raise InvalidArgument.field("lines", "an order needs at least one line", "LINES_REQUIRED")
        if ttl is not None and not timedelta(0) < ttl <= MAX_TTL:
            raise InvalidArgument.field("ttl", f"must be positive and at most {MAX_TTL.days} days", "INVALID_TTL")
        checked = self.check(uow, customer_id, code, lines, lock=True)
        if checked.refusal is not None:
            raise refusal_error(checked.refusal, normalise_code(code), not_found_is_not_found=True)
        row = checked.row
        assert row is not None
        awards = code_awards(code_state(row), lines)
        points = sum(a.points for a in awards)
        now = self._clock.now()
        row.reserved_count += 1
        row.budget_used_points += points
        row.updated_at = now
        uow.session.add(row)
        reservation = PromoReservationRow(
            reservation_id=new_id(),
            code=row.code,
            customer_id=customer_id,
            order_id=order_id,
            points=points,
            status=ReservationStatus.RESERVED.value,
            awards=awards_to_json(awards),
            lifetime_seconds=row.lifetime_seconds,
            expire_at=now + (ttl or self._default_ttl),
            created_at=now,
            updated_at=now,
        )
        uow.session.add(reservation)
        uow.flush()
        return reservation

    @staticmethod
    def reservation(uow: UnitOfWork, reservation_id: str) -> PromoReservationRow:
        row = uow.session.exec(
            select(PromoReservationRow).where(PromoReservationRow.reservation_id == reservation_id).with_for_update()
        ).first()
        if row is None:
            raise NotFound(
                "RESERVATION_NOT_FOUND",
                f"no promo code reservation {reservation_id!r}",
                metadata={"reservation_id": reservation_id},
            )
        return row

    @staticmethod
    def _code_locked(uow: UnitOfWork, code: str) -> PromoCodeRow:
        return uow.session.exec(
            select(PromoCodeRow)
            .where(PromoCodeRow.code == code)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()

    def confirm(self, uow: UnitOfWork, reservation_id: str) -> PromoReservationRow:
        # Lock order everywhere: the code, then its reservation (reserve and the job do the same).
        peek = uow.session.exec(
            select(PromoReservationRow.code).where(PromoReservationRow.reservation_id == reservation_id)
        ).first()
        if peek is not None:
            self._code_locked(uow, peek)
        row = self.reservation(uow, reservation_id)
        now = self._clock.now()
        if row.status == ReservationStatus.CONFIRMED.value:
            return row
        if row.status == ReservationStatus.RELEASED.value:
            raise FailedPrecondition("RESERVATION_RELEASED", f"reservation {reservation_id} was released")
        if row.status == ReservationStatus.EXPIRED.value or now >= row.expire_at:
            raise FailedPrecondition("RESERVATION_EXPIRED", f"reservation {reservation_id} has lapsed")
        code = self._code_locked(uow, row.code)
        code.reserved_count -= 1
        code.used_count += 1
        code.updated_at = now
        row.status, row.updated_at = ReservationStatus.CONFIRMED.value, now
        uow.session.add_all([code, row])
        if row.points > 0:
            expires = now + timedelta(seconds=row.lifetime_seconds) if row.lifetime_seconds else None
            self._outbox.enqueue(
                uow,
                peer=points_peer.PEER,
                method=points_peer.CREDIT_POINTS,
                request=points_peer.order_credit(
                    request_id=f"promo-code:{row.reservation_id}",
                    customer_id=row.customer_id,
                    points=row.points,
                    source="PROMO_CODE",
                    order_id=row.order_id,
                    expires_at=expires,
                ),
            )
        uow.flush()
        return row

    def release(self, uow: UnitOfWork, reservation_id: str) -> PromoReservationRow:
        peek = uow.session.exec(
            select(PromoReservationRow.code).where(PromoReservationRow.reservation_id == reservation_id)
        ).first()
        if peek is not None:
            self._code_locked(uow, peek)
        row = self.reservation(uow, reservation_id)
        if row.status == ReservationStatus.CONFIRMED.value:
            raise FailedPrecondition("RESERVATION_CONFIRMED", f"reservation {reservation_id} was confirmed")
        if row.status != ReservationStatus.RESERVED.value:
            return row  # released or lapsed already: as is
        self._give_back(uow, row, ReservationStatus.RELEASED)
        return row

    def _give_back(self, uow: UnitOfWork, row: PromoReservationRow, status: ReservationStatus) -> None:
        now = self._clock.now()
        code = self._code_locked(uow, row.code)
        code.reserved_count -= 1
        code.budget_used_points -= row.points
        code.updated_at = now
        row.status, row.updated_at = status.value, now
        uow.session.add_all([code, row])
        uow.flush()

    def release_expired(self, database: Database) -> int:
        """Release every reservation past its expire_time, a batch per transaction."""
        released = 0
        while True:
            with database.unit_of_work() as uow:
                now = self._clock.now()
                due = uow.session.exec(
                    select(PromoReservationRow.reservation_id, PromoReservationRow.code)
                    .where(
                        PromoReservationRow.status == ReservationStatus.RESERVED.value,
                        PromoReservationRow.expire_at <= now,
                    )
                    .order_by(col(PromoReservationRow.code), col(PromoReservationRow.reservation_id))
                    .limit(JOB_BATCH)
                ).all()
                if not due:
                    return released
                for reservation_id, code in due:
                    self._code_locked(uow, code)
                    row = self.reservation(uow, reservation_id)
                    if row.status == ReservationStatus.RESERVED.value and row.expire_at <= now:
                        self._give_back(uow, row, ReservationStatus.EXPIRED)
                        released += 1
                uow.commit()


def now_or(at: datetime | None, clock: Clock) -> datetime:
    return at or clock.now()
