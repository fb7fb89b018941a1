"""Queries of the Points database, through one session (the unit of work's)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy
from sqlalchemy import ColumnElement, and_, bindparam, func, literal_column, or_, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from services.points.adapters.tables import Account, HistoryLine, Hold, HoldAllocation, Lot, ReferenceDecision
from services.points.domain.lots import LotStatus
from services.points.domain.spending import HoldStatus
from shared import bulk

_LIVE = (LotStatus.PENDING.value, LotStatus.AVAILABLE.value)
# Statuses written into the statement's text instead of bound: a partial index on lots
# (`tables.AVAILABLE_ONLY`, `tables.PENDING_ONLY`) serves a query only when the planner can prove
# its predicate from the query's condition, which a bound parameter does not allow in a generic
# (prepared) plan. For the scans across all customers: expiry and activation.
AVAILABLE: ColumnElement[str] = literal_column(f"'{LotStatus.AVAILABLE.value}'")
PENDING: ColumnElement[str] = literal_column(f"'{LotStatus.PENDING.value}'")


# The statements of the request path, built once with bind parameters (`customer_id`, `now`, ...):
# building a construct such as `lots_to_spend`'s cost 300-400 µs of CPU per call, several times
# what running its cached compiled form costs. The statuses stay bound values, as they were.
_CUSTOMER: Any = bindparam("customer_id")
_NOW: Any = bindparam("now")


def _due_column() -> Any:
    """Whether anything is due for the customer at `now` (expired holds or lots, due
    activations), as a column for a statement that reads something else of the customer too."""
    lots = select(Lot.lot_id).where(
        Lot.customer_id == _CUSTOMER,
        or_(
            and_(
                col(Lot.status) == LotStatus.AVAILABLE.value,
                col(Lot.expires_at) <= _NOW,
                col(Lot.remaining) > col(Lot.held),
            ),
            and_(col(Lot.status) == LotStatus.PENDING.value, col(Lot.available_at) <= _NOW),
        ),
    )
    holds = select(Hold.hold_id).where(
        Hold.customer_id == _CUSTOMER, Hold.status == HoldStatus.ACTIVE.value, col(Hold.expire_time) <= _NOW
    )
    return or_(lots.exists(), holds.exists()).label("due")


def _spendable() -> tuple[Any, ...]:
    return (
        Lot.customer_id == _CUSTOMER,
        Lot.status == LotStatus.AVAILABLE.value,
        col(Lot.expires_at) > _NOW,
        col(Lot.remaining) > col(Lot.held),
    )


def _lots_to_spend() -> Any:
    free = col(Lot.remaining) - col(Lot.held)
    order = (col(Lot.expires_at), col(Lot.created_at))
    # Free points strictly before the lot's (expiry, creation) tie: up to its tie, minus its tie.
    before = func.sum(free).over(order_by=order) - func.sum(free).over(partition_by=order)
    ranked = select(col(Lot.lot_id).label("lot_id"), before.label("before")).where(*_spendable()).subquery()
    return (
        select(Lot, _DUE).join(ranked, ranked.c.lot_id == col(Lot.lot_id)).where(ranked.c.before < bindparam("points"))
    )


def _due_and_decision() -> Any:
    decision: Any = ReferenceDecision.__table__  # type: ignore[attr-defined]
    of_reference = (decision.c.customer_id == _CUSTOMER, decision.c.reference == bindparam("reference"))
    return sqlalchemy.select(
        _DUE,
        select(decision.c.action).where(*of_reference).scalar_subquery(),
        select(decision.c.available_at).where(*of_reference).scalar_subquery(),
        select(decision.c.reason).where(*of_reference).scalar_subquery(),
    )


def _balance_and_expiring() -> Any:
    accounts: Any = Account.__table__  # type: ignore[attr-defined]
    lots: Any = Lot.__table__  # type: ignore[attr-defined]
    return (
        sqlalchemy.select(
            accounts.c.available, accounts.c.pending, accounts.c.held, _DUE, lots.c.expires_at, lots.c.remaining
        )
        .select_from(accounts)
        .outerjoin(
            lots,
            and_(
                lots.c.customer_id == accounts.c.customer_id,
                lots.c.status == LotStatus.AVAILABLE.value,
                lots.c.expires_at > _NOW,
                lots.c.expires_at <= bindparam("until"),
                lots.c.remaining > 0,
            ),
        )
        .where(accounts.c.customer_id == _CUSTOMER)
    )


_DUE = _due_column()
_HAS_DUE = select(_DUE)
_LOCK_ACCOUNT = (
    select(Account).where(Account.customer_id == _CUSTOMER).with_for_update().execution_options(populate_existing=True)
)
_LOCK_ACCOUNT_OF_HOLD = (
    select(Account)
    .join(Hold, col(Hold.customer_id) == col(Account.customer_id))
    .where(Hold.hold_id == bindparam("hold_id"))
    .with_for_update(of=Account)
    .execution_options(populate_existing=True)
)
_LOTS_TO_SPEND = _lots_to_spend()
_SPENDABLE_LOTS = select(Lot).where(*_spendable())
_HOLD_WITH_PARTS = (
    select(Hold, HoldAllocation, Lot, _DUE)
    .join(HoldAllocation, col(HoldAllocation.hold_id) == col(Hold.hold_id))
    .join(Lot, col(Lot.lot_id) == col(HoldAllocation.lot_id))
    .where(Hold.hold_id == bindparam("hold_id"))
    .order_by(col(HoldAllocation.position))
    .execution_options(populate_existing=True)
)
_DUE_AND_DECISION = _due_and_decision()
_BALANCE_AND_EXPIRING = _balance_and_expiring()
# PostgreSQL's `add_available`: the arrays zipped by unnest, in their (customer) order.
_ADD_AVAILABLE = text(
    "INSERT INTO accounts (customer_id, available, pending, held, updated_at)"
    " SELECT unnest(CAST(:ids AS text[])), unnest(CAST(:points AS bigint[])), 0, 0, :now"
    " ON CONFLICT (customer_id) DO UPDATE"
    " SET available = accounts.available + excluded.available, updated_at = excluded.updated_at"
).bindparams(bindparam("now", type_=Account.__table__.c.updated_at.type))  # type: ignore[attr-defined]


class PointsRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- accounts -------------------------------------------------------------------------

    def lock_account(self, customer_id: str, now: datetime) -> Account:
        """The customer's account row, created if missing, locked until the transaction ends: one
        statement when it exists (the common case), three the first time."""
        account = self._locked(_LOCK_ACCOUNT, {"customer_id": customer_id})
        if account is not None:
            return account
        dialect = self.session.get_bind().dialect.name
        values: dict[str, Any] = {"customer_id": customer_id, "updated_at": now}
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Account).values(**values)
        self.session.execute(insert.on_conflict_do_nothing(index_elements=["customer_id"]))
        account = self._locked(_LOCK_ACCOUNT, {"customer_id": customer_id})
        assert account is not None
        return account

    def lock_account_of_hold(self, hold_id: str) -> Account | None:
        """The account of the hold's customer, locked (None if there is no such hold): a hold is
        only ever made through its customer's locked account, so the account exists."""
        return self._locked(_LOCK_ACCOUNT_OF_HOLD, {"hold_id": hold_id})

    def _locked(self, query: Any, params: dict[str, Any]) -> Account | None:
        account: Account | None = self.session.exec(query, params=params).first()
        return account

    def lock_accounts(self, customer_ids: Sequence[str], now: datetime) -> list[Account]:
        """Several accounts in one order (sorted), so concurrent jobs cannot deadlock."""
        return [self.lock_account(customer_id, now) for customer_id in sorted(set(customer_ids))]

    def lock_many(self, customer_ids: Sequence[str], now: datetime, *, create: Iterable[str] = ()) -> None:
        """Lock many customers' accounts in customer order, in two statements, without loading
        them (the set-based credits and expiry move them set-based); those in `create` are created
        first if missing. A missing account not in `create` is not locked: the set-based credits
        create theirs with the credited points (`add_available`), in one write instead of two."""
        ordered = sorted(set(customer_ids))
        if not ordered:
            return
        table: Any = Account.__table__  # type: ignore[attr-defined]
        missing = sorted(set(create))
        if missing and self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(
                text(
                    "INSERT INTO accounts (customer_id, available, pending, held, updated_at)"
                    " SELECT unnest(CAST(:ids AS text[])), 0, 0, 0, :now ON CONFLICT (customer_id) DO NOTHING"
                ).bindparams(bindparam("now", type_=table.c.updated_at.type)),
                {"ids": bulk.array(missing), "now": now},
            )
        elif missing:
            self.session.execute(
                sqlite.insert(table).on_conflict_do_nothing(index_elements=["customer_id"]),
                [{"customer_id": c, "available": 0, "pending": 0, "held": 0, "updated_at": now} for c in missing],
            )
        # Counted, not fetched: the rows are locked in order as they are read, and nothing comes
        # back to build (1,000 rows to fetch were 6 % of a 1,000-credit batch's Python).
        locked = (
            select(table.c.customer_id)
            .where(bulk.any_of(self.session, table.c.customer_id, ordered))
            .order_by(table.c.customer_id)
            .with_for_update()
            .subquery()
        )
        self.session.execute(select(func.count()).select_from(locked)).scalar_one()

    def add_available(self, customer_ids: Sequence[str], points: Sequence[int], now: datetime) -> None:
        """Add `points[i]` to the available balance of `customer_ids[i]` (distinct, sorted), creating
        an account that is missing with them: one INSERT ... ON CONFLICT DO UPDATE, so a new
        customer's account is written once (not created empty, then updated: two row versions).
        The existing accounts must be locked first (`lock_many`)."""
        if not customer_ids:
            return
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(
                _ADD_AVAILABLE, {"ids": bulk.array(customer_ids), "points": bulk.array(points), "now": now}
            )
            return
        table: Any = Account.__table__  # type: ignore[attr-defined]
        insert = sqlite.insert(table)
        self.session.execute(
            insert.on_conflict_do_update(
                index_elements=["customer_id"],
                set_={
                    "available": table.c.available + insert.excluded.available,
                    "updated_at": insert.excluded.updated_at,
                },
            ),
            [
                {"customer_id": c, "available": p, "pending": 0, "held": 0, "updated_at": now}
                for c, p in zip(customer_ids, points, strict=True)
            ],
        )

    def customers_with_anything_due(
        self, customer_ids: Sequence[str], now: datetime, *, expired_lots: bool = True
    ) -> set[str]:
        """Those of the customers that `has_due` would answer True for, in two queries; with
        `expired_lots=False`, only for an expired hold or a due activation."""
        if not customer_ids:
            return set()
        lots: Any = Lot.__table__  # type: ignore[attr-defined]
        holds: Any = Hold.__table__  # type: ignore[attr-defined]
        activation = and_(lots.c.status == LotStatus.PENDING.value, lots.c.available_at <= now)
        expiry = and_(
            lots.c.status == LotStatus.AVAILABLE.value, lots.c.expires_at <= now, lots.c.remaining > lots.c.held
        )
        due_lots = select(lots.c.customer_id).where(
            bulk.any_of(self.session, lots.c.customer_id, customer_ids),
            or_(expiry, activation) if expired_lots else activation,
        )
        due_holds = select(holds.c.customer_id).where(
            bulk.any_of(self.session, holds.c.customer_id, customer_ids),
            holds.c.status == HoldStatus.ACTIVE.value,
            holds.c.expire_time <= now,
        )
        found = set(self.session.execute(due_lots.distinct()).scalars())
        return found | set(self.session.execute(due_holds.distinct()).scalars())

    def account(self, customer_id: str) -> Account | None:
        return self.session.get(Account, customer_id)

    # --- lots -----------------------------------------------------------------------------

    def add(self, row: Any) -> None:
        self.session.add(row)

    def lots_of_reference(self, customer_id: str, reference: str) -> list[Lot]:
        return list(
            self.session.exec(
                select(Lot)
                .where(Lot.customer_id == customer_id, Lot.reference == reference)
                .order_by(col(Lot.created_at), col(Lot.lot_id))
            ).all()
        )

    def decision(self, customer_id: str, reference: str) -> ReferenceDecision | None:
        return self.session.get(ReferenceDecision, (customer_id, reference))

    def spendable_lots(self, customer_id: str, now: datetime) -> list[Lot]:
        return list(self.session.exec(_SPENDABLE_LOTS, params={"customer_id": customer_id, "now": now}).all())

    def lots_to_spend(self, customer_id: str, now: datetime, points: int) -> tuple[list[Lot], bool | None]:
        """The spendable lots a hold of `points` can take from, and whether anything is due (None
        when there is no spendable lot). Lots are taken nearest expiry first, then oldest: this
        loads only the lots with less than `points` free before them in that order (each tie of
        expiry and creation time whole), all of them when they do not cover `points`; so the
        spending rule, given these, takes what it would take from all of them."""
        rows = self.session.exec(
            _LOTS_TO_SPEND, params={"customer_id": customer_id, "now": now, "points": points}
        ).all()
        return [row[0] for row in rows], (bool(rows[0][1]) if rows else None)

    def lots(self, lot_ids: Sequence[str]) -> dict[str, Lot]:
        rows = self.session.exec(select(Lot).where(col(Lot.lot_id).in_(list(lot_ids)))).all()
        return {row.lot_id: row for row in rows}

    def expired_lots(self, customer_id: str, now: datetime) -> list[Lot]:
        return list(
            self.session.exec(
                select(Lot)
                .where(
                    Lot.customer_id == customer_id,
                    Lot.status == LotStatus.AVAILABLE.value,
                    col(Lot.expires_at) <= now,
                    col(Lot.remaining) > col(Lot.held),
                )
                .order_by(col(Lot.expires_at), col(Lot.lot_id))
            ).all()
        )

    def due_pending_lots(self, customer_id: str, now: datetime) -> list[Lot]:
        return list(
            self.session.exec(
                select(Lot)
                .where(
                    Lot.customer_id == customer_id,
                    Lot.status == LotStatus.PENDING.value,
                    col(Lot.available_at) <= now,
                )
                .order_by(col(Lot.created_at), col(Lot.lot_id))
            ).all()
        )

    # --- holds ----------------------------------------------------------------------------

    def hold_owner(self, hold_id: str) -> str | None:
        return self.session.exec(select(Hold.customer_id).where(Hold.hold_id == hold_id)).first()

    def hold(self, hold_id: str) -> Hold | None:
        return self.session.exec(
            select(Hold).where(Hold.hold_id == hold_id).execution_options(populate_existing=True)
        ).first()

    def allocations(self, hold_id: str) -> list[HoldAllocation]:
        return list(
            self.session.exec(
                select(HoldAllocation)
                .where(HoldAllocation.hold_id == hold_id)
                .order_by(col(HoldAllocation.position))
                .execution_options(populate_existing=True)
            ).all()
        )

    def allocations_with_lots(self, hold_id: str) -> list[tuple[HoldAllocation, Lot]]:
        """The hold's allocations in hold order, each with its lot, in one statement."""
        rows = self.session.exec(
            select(HoldAllocation, Lot)
            .join(Lot, col(Lot.lot_id) == col(HoldAllocation.lot_id))
            .where(HoldAllocation.hold_id == hold_id)
            .order_by(col(HoldAllocation.position))
            .execution_options(populate_existing=True)
        ).all()
        return [(allocation, lot) for allocation, lot in rows]

    def hold_with_parts(
        self, hold_id: str, customer_id: str, now: datetime
    ) -> tuple[Hold, list[tuple[HoldAllocation, Lot]], bool] | None:
        """The hold, its allocations (in hold order) with their lots, and whether anything is due
        for its customer, in one statement; None if the hold has no allocation."""
        rows = self.session.exec(
            _HOLD_WITH_PARTS, params={"hold_id": hold_id, "customer_id": customer_id, "now": now}
        ).all()
        if not rows:
            return None
        return rows[0][0], [(row[1], row[2]) for row in rows], bool(rows[0][3])

    def expired_holds(self, customer_id: str, now: datetime) -> list[Hold]:
        return list(
            self.session.exec(
                select(Hold)
                .where(
                    Hold.customer_id == customer_id,
                    Hold.status == HoldStatus.ACTIVE.value,
                    col(Hold.expire_time) <= now,
                )
                .order_by(col(Hold.expire_time), col(Hold.hold_id))
            ).all()
        )

    # --- what is due ----------------------------------------------------------------------

    def has_due(self, customer_id: str, now: datetime) -> bool:
        """Anything that time has made due for the customer: expired holds or lots, due activations."""
        return bool(self.session.execute(_HAS_DUE, {"customer_id": customer_id, "now": now}).scalar_one())

    def due_and_decision(
        self, customer_id: str, reference: str, now: datetime
    ) -> tuple[bool, tuple[str, datetime | None, str] | None]:
        """Whether anything is due for the customer, and what was decided for the reference
        (action, available_at, reason), in one statement."""
        params = {"customer_id": customer_id, "reference": reference, "now": now}
        row = self.session.execute(_DUE_AND_DECISION, params).one()
        return bool(row[0]), (None if row[1] is None else (row[1], row[2], row[3] or ""))

    def balance_and_expiring(
        self, customer_id: str, now: datetime, until: datetime
    ) -> tuple[tuple[int, int, int], bool, list[tuple[datetime, int]]] | None:
        """The account's (available, pending, held), whether anything is due, and the remaining
        (free and held) of available lots expiring in (now, until], in one statement; None
        without an account (then the customer has no lots or holds either)."""
        params = {"customer_id": customer_id, "now": now, "until": until}
        rows = self.session.execute(_BALANCE_AND_EXPIRING, params).all()
        if not rows:
            return None
        first = rows[0]
        expiring = [(row[4], row[5]) for row in rows if row[4] is not None]
        return (first[0], first[1], first[2]), bool(first[3]), expiring

    def customers_with_expired_lots(self, now: datetime, limit: int) -> list[str]:
        return list(
            self.session.exec(
                select(Lot.customer_id)
                .where(
                    col(Lot.status) == AVAILABLE,
                    col(Lot.expires_at) <= now,
                    col(Lot.remaining) > col(Lot.held),
                )
                .distinct()
                .order_by(col(Lot.customer_id))
                .limit(limit)
            ).all()
        )

    def customers_with_expired_holds(self, now: datetime, limit: int) -> list[str]:
        return list(
            self.session.exec(
                select(Hold.customer_id)
                .where(Hold.status == HoldStatus.ACTIVE.value, col(Hold.expire_time) <= now)
                .distinct()
                .order_by(col(Hold.customer_id))
                .limit(limit)
            ).all()
        )

    def customers_with_due_activations(self, now: datetime, limit: int) -> list[str]:
        return list(
            self.session.exec(
                select(Lot.customer_id)
                .where(col(Lot.status) == PENDING, col(Lot.available_at) <= now)
                .distinct()
                .order_by(col(Lot.customer_id))
                .limit(limit)
            ).all()
        )

    # --- views ----------------------------------------------------------------------------

    def lots_page(
        self, customer_id: str, statuses: Sequence[str], after: tuple[datetime, str] | None, limit: int
    ) -> list[Lot]:
        query = select(Lot).where(Lot.customer_id == customer_id)
        if statuses:
            query = query.where(col(Lot.status).in_(list(statuses)))
        if after is not None:
            at, lot_id = after
            query = query.where(
                or_(col(Lot.created_at) < at, and_(col(Lot.created_at) == at, col(Lot.lot_id) < lot_id))
            )
        return list(
            self.session.exec(query.order_by(col(Lot.created_at).desc(), col(Lot.lot_id).desc()).limit(limit)).all()
        )

    def expiring(self, customer_id: str, now: datetime, until: datetime) -> list[tuple[datetime, int]]:
        """Remaining (free and held) of available lots that expire in (now, until]."""
        rows = self.session.exec(
            select(Lot.expires_at, Lot.remaining).where(
                Lot.customer_id == customer_id,
                Lot.status == LotStatus.AVAILABLE.value,
                col(Lot.expires_at) > now,
                col(Lot.expires_at) <= until,
                col(Lot.remaining) > 0,
            )
        ).all()
        return [(at, remaining) for at, remaining in rows if at is not None]

    def history_page(
        self,
        customer_id: str,
        before_id: int | None,
        start: datetime | None,
        end: datetime | None,
        limit: int,
    ) -> list[HistoryLine]:
        query = select(HistoryLine).where(HistoryLine.customer_id == customer_id)
        if before_id is not None:
            query = query.where(col(HistoryLine.id) < before_id)
        if start is not None:
            query = query.where(col(HistoryLine.created_at) >= start)
        if end is not None:
            query = query.where(col(HistoryLine.created_at) < end)
        return list(self.session.exec(query.order_by(col(HistoryLine.id).desc()).limit(limit)).all())

    def history_totals(self, customer_id: str) -> tuple[int, int, int]:
        row = self.session.exec(
            select(
                func.coalesce(func.sum(HistoryLine.available_delta), 0),
                func.coalesce(func.sum(HistoryLine.pending_delta), 0),
                func.coalesce(func.sum(HistoryLine.held_delta), 0),
            ).where(HistoryLine.customer_id == customer_id)
        ).one()
        return int(row[0]), int(row[1]), int(row[2])

    def active_customers(self, start: datetime, end: datetime, after: str | None, limit: int) -> list[str]:
        """Customers with any history in [start, end), in order, after the given one."""
        query = select(HistoryLine.customer_id).where(
            col(HistoryLine.created_at) >= start, col(HistoryLine.created_at) < end
        )
        if after is not None:
            query = query.where(col(HistoryLine.customer_id) > after)
        return list(self.session.exec(query.distinct().order_by(col(HistoryLine.customer_id)).limit(limit)).all())

    def statistics(
        self, start: datetime, end: datetime, customer_ids: Sequence[str]
    ) -> list[tuple[str, str, str, int]]:
        """(customer, entry type, source, points moved) of the customers' history in [start, end)."""
        moved = HistoryLine.available_delta + HistoryLine.pending_delta + HistoryLine.held_delta
        rows = self.session.exec(
            select(HistoryLine.customer_id, HistoryLine.type, HistoryLine.source, func.sum(moved))
            .where(
                col(HistoryLine.created_at) >= start,
                col(HistoryLine.created_at) < end,
                col(HistoryLine.customer_id).in_(list(customer_ids)),
            )
            .group_by(col(HistoryLine.customer_id), col(HistoryLine.type), col(HistoryLine.source))
        ).all()
        return [(customer, kind, source, int(points)) for customer, kind, source, points in rows]
