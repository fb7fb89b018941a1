"""The wallet mechanic of each customer, and the default mechanic over time.

The default for customers in no experiment is the configured one (12 % a year on the average
daily balance unless PROMOTIONS_DEFAULT_APR_BPS / PROMOTIONS_DEFAULT_INTEREST_BASIS say
otherwise) until an operator sets another with SetDefaultMechanic. Each set is a row effective
from its time, so past months keep the mechanic then in force.

`mechanic_for` / `mechanics_for` are the one place that decides a customer's mechanic: the
variant's mechanic for a participant of an experiment in force at that instant (started, and not
yet ended or rolled out; control gets the default of that instant), the default for everyone else.
Experiments keep their assignments and their start and stop times, so a past month is answered
with the mechanic then in force.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Select, Table, bindparam, literal, true
from sqlalchemy import select as core_select
from sqlmodel import Session, col, or_, select

from services.promotions.adapters.experiment_records import variants_of
from services.promotions.adapters.tables import AssignmentRow, DefaultMechanicRow, ExperimentRow
from services.promotions.domain.mechanics import (
    Cashback,
    Interest,
    InterestBasis,
    Mechanic,
    validate_cashback,
    validate_interest,
)
from shared import bulk
from shared.calendar import Month, ProgrammeCalendar
from shared.clock import Clock
from shared.db import UnitOfWork
from shared.errors import InvalidArgument
from shared.ids import new_id
from shared.validation import validate_customer_id

MAX_BATCH = 1000
MAX_TEXT = 500

_defaults: Table = DefaultMechanicRow.__table__  # type: ignore[attr-defined]
_assignments: Table = AssignmentRow.__table__  # type: ignore[attr-defined]
_experiments: Table = ExperimentRow.__table__  # type: ignore[attr-defined]


def _mechanic_of_one() -> Select[Any]:
    """The default in force at :at and :customer_id's participation in force then (if any), each
    at most one row, left-joined to one row that always exists. Built once: only its parameters
    change from call to call."""
    d, a, e = _defaults.c, _assignments.c, _experiments.c
    at = bindparam("at", type_=d.effective_at.type)
    default = (
        core_select(d.code, d.name, d.kind, d.apr_bps, d.basis, d.tiers, d.monthly_cap_points)
        .where(d.effective_at <= at)
        .order_by(d.effective_at.desc(), d.created_at.desc())
        .limit(1)
        .subquery("default_in_force")
    )
    participation = (
        core_select(a.variant_id, e.experiment_id, e.variants)
        .join(_experiments, e.experiment_id == a.experiment_id)
        .where(
            a.customer_id == bindparam("customer_id", type_=a.customer_id.type),
            e.start_at <= at,
            or_(e.stopped_at.is_(None), e.stopped_at > at),
        )
        .order_by(e.start_at.desc())  # should two overlap, the later start wins
        .limit(1)
        .subquery("participation")
    )
    one = core_select(literal(1).label("one")).subquery("one")
    return (
        core_select(default, participation.c.variant_id, participation.c.experiment_id, participation.c.variants)
        .select_from(one)
        .outerjoin(default, true())
        .outerjoin(participation, true())
    )


_MECHANIC_OF_ONE = _mechanic_of_one()


class MechanicColumns(Protocol):
    """What a mechanic is made of: a default_mechanics row, or the columns of one."""

    code: str
    name: str
    kind: str
    apr_bps: int
    basis: str
    tiers: str
    monthly_cap_points: int


@dataclass(frozen=True)
class DefaultInForce:
    mechanic: Mechanic
    effective_at: datetime | None  # None: the configured default nobody changed
    experiment_id: str


@dataclass(frozen=True)
class CustomerMechanic:
    customer_id: str
    mechanic: Mechanic
    origin: str  # "DEFAULT" or "EXPERIMENT"
    experiment_id: str = ""
    variant_id: str = ""


class Mechanics:
    def __init__(self, configured: Mechanic, calendar: ProgrammeCalendar, clock: Clock) -> None:
        self.configured = configured
        self.calendar = calendar
        self._clock = clock

    def instant_of(self, at: datetime | None, month: str | None) -> datetime:
        """The instant a request asks about: a time, the start of a month, or now."""
        if month is not None:
            return self.calendar.month_start(Month.parse(month))
        return at or self._clock.now()

    def default_at(self, uow: UnitOfWork, at: datetime) -> DefaultInForce:
        row = uow.session.exec(
            select(DefaultMechanicRow)
            .where(DefaultMechanicRow.effective_at <= at)
            .order_by(col(DefaultMechanicRow.effective_at).desc(), col(DefaultMechanicRow.created_at).desc())
            .limit(1)
        ).first()
        if row is None:
            return DefaultInForce(self.configured, None, "")
        return DefaultInForce(mechanic_of(row), row.effective_at, row.experiment_id)

    def mechanic_for(self, session: Session, customer_id: str, at: datetime) -> CustomerMechanic:
        """One customer's mechanic in one statement (`_MECHANIC_OF_ONE`): the same answer as
        `mechanics_for([customer_id], at)[0]`; `session` may be a transaction's or a read's."""
        validate_customer_id(customer_id)
        row = session.execute(_MECHANIC_OF_ONE, {"customer_id": customer_id, "at": at}).one()
        default_mechanic = self.configured if row.code is None else mechanic_of(row)
        if row.experiment_id is None:
            return CustomerMechanic(customer_id, default_mechanic, "DEFAULT")
        variant = {v.variant_id: v.mechanic for v in variants_of(row.variants)}.get(row.variant_id)
        return CustomerMechanic(
            customer_id, variant or default_mechanic, "EXPERIMENT", row.experiment_id, row.variant_id
        )

    def mechanics_for(self, uow: UnitOfWork, customer_ids: Sequence[str], at: datetime) -> list[CustomerMechanic]:
        if not customer_ids:
            raise InvalidArgument.field("customer_ids", "give 1 to 1000 customers", "CUSTOMERS_REQUIRED")
        if len(customer_ids) > MAX_BATCH:
            raise InvalidArgument.field("customer_ids", f"at most {MAX_BATCH} customers", "TOO_MANY_CUSTOMERS")
        for customer_id in customer_ids:
            validate_customer_id(customer_id)
        default = self.default_at(uow, at).mechanic
        in_force = self._participations(uow, customer_ids, at)
        found: list[CustomerMechanic] = []
        for customer_id in customer_ids:
            participation = in_force.get(customer_id)
            if participation is None:
                found.append(CustomerMechanic(customer_id, default, "DEFAULT"))
                continue
            experiment_id, variant_id, mechanic = participation
            found.append(CustomerMechanic(customer_id, mechanic or default, "EXPERIMENT", experiment_id, variant_id))
        return found

    @staticmethod
    def _participations(
        uow: UnitOfWork, customer_ids: Sequence[str], at: datetime
    ) -> dict[str, tuple[str, str, Mechanic | None]]:
        """customer -> (experiment, variant, the variant's mechanic or None for control), for the
        experiments in force at `at`. A customer is in at most one experiment at a time (the draw
        skips customers of sampled and running experiments); should two overlap, the later start wins."""
        rows = uow.session.exec(
            select(
                AssignmentRow.customer_id, AssignmentRow.variant_id, ExperimentRow.experiment_id, ExperimentRow.variants
            )
            .join(ExperimentRow, col(ExperimentRow.experiment_id) == col(AssignmentRow.experiment_id))
            .where(
                bulk.any_of(uow.session, _assignments.c.customer_id, sorted(set(customer_ids))),
                col(ExperimentRow.start_at) <= at,
                or_(col(ExperimentRow.stopped_at).is_(None), col(ExperimentRow.stopped_at) > at),
            )
            .order_by(col(ExperimentRow.start_at))
        ).all()
        parsed: dict[str, dict[str, Mechanic | None]] = {}
        found: dict[str, tuple[str, str, Mechanic | None]] = {}
        for customer_id, variant_id, experiment_id, variants in rows:
            if experiment_id not in parsed:
                parsed[experiment_id] = {v.variant_id: v.mechanic for v in variants_of(variants)}
            found[customer_id] = (experiment_id, variant_id, parsed[experiment_id].get(variant_id))
        return found

    def set_default(
        self,
        uow: UnitOfWork,
        mechanic: Mechanic,
        effective_at: datetime | None,
        reason: str,
        operator_id: str,
        *,
        experiment_id: str = "",
    ) -> DefaultMechanicRow:
        now = self._clock.now()
        if not reason.strip():
            raise InvalidArgument.field("reason", "is required", "REASON_REQUIRED")
        if not operator_id.strip():
            raise InvalidArgument.field("operator_id", "is required", "OPERATOR_REQUIRED")
        if len(reason) > MAX_TEXT or len(operator_id) > 64:
            raise InvalidArgument.field("reason", f"must be at most {MAX_TEXT} characters", "TEXT_TOO_LONG")
        when = effective_at or now
        if when < now:
            raise InvalidArgument.field("effective_time", "must not be in the past", "EFFECTIVE_TIME_IN_PAST")
        if isinstance(mechanic.kind, Interest):
            validate_interest(mechanic.kind.apr_bps)
        else:
            validate_cashback(mechanic.kind.tiers, mechanic.kind.monthly_cap_points)
        row = DefaultMechanicRow(
            mechanic_id=new_id(),
            effective_at=when,
            code=mechanic.code,
            name=mechanic.name,
            kind="INTEREST" if isinstance(mechanic.kind, Interest) else "CASHBACK",
            apr_bps=mechanic.kind.apr_bps if isinstance(mechanic.kind, Interest) else 0,
            basis=mechanic.kind.basis.value if isinstance(mechanic.kind, Interest) else "",
            tiers=",".join(f"{m}:{r}" for m, r in mechanic.kind.tiers) if isinstance(mechanic.kind, Cashback) else "",
            monthly_cap_points=mechanic.kind.monthly_cap_points if isinstance(mechanic.kind, Cashback) else 0,
            reason=reason,
            operator_id=operator_id,
            experiment_id=experiment_id,
            created_at=now,
        )
        uow.session.add(row)
        uow.flush()
        return row


def mechanic_of(row: MechanicColumns) -> Mechanic:
    if row.kind == "INTEREST":
        return Mechanic(row.code, row.name, Interest(row.apr_bps, InterestBasis(row.basis)))
    tiers = tuple(
        (int(minimum), int(rate)) for minimum, rate in (item.split(":") for item in row.tiers.split(",") if item)
    )
    return Mechanic(row.code, row.name, Cashback(tiers, row.monthly_cap_points))
