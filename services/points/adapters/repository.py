"""Queries of the Points database, through one session (the unit of work's)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from services.points.adapters.tables import Account, HistoryLine, Hold, HoldAllocation, Lot, ReferenceDecision
from services.points.domain.lots import LotStatus
from services.points.domain.spending import HoldStatus
from shared import bulk

_LIVE = (LotStatus.PENDING.value, LotStatus.AVAILABLE.value)


class PointsRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- accounts -------------------------------------------------------------------------

    def lock_account(self, customer_id: str, now: datetime) -> Account:
        """The customer's account row, created if missing, locked until the transaction ends."""
        dialect = self.session.get_bind().dialect.name
        values: dict[str, Any] = {"customer_id": customer_id, "updated_at": now}
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Account).values(**values)
        self.session.execute(insert.on_conflict_do_nothing(index_elements=["customer_id"]))
        account = self.session.exec(
            select(Account)
            .where(Account.customer_id == customer_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        return account

    def lock_accounts(self, customer_ids: Sequence[str], now: datetime) -> list[Account]:
        """Several accounts in one order (sorted), so concurrent jobs cannot deadlock."""
        return [self.lock_account(customer_id, now) for customer_id in sorted(set(customer_ids))]

    def lock_many(self, customer_ids: Sequence[str], now: datetime, *, create: bool = True) -> None:
        """Lock many customers' accounts (created if missing, unless `create` is False) in customer
        order, in two statements, without loading them: the set-based credits and expiry move them
        with `bulk.add_to_columns`."""
        ordered = sorted(set(customer_ids))
        if not ordered:
            return
        table: Any = Account.__table__  # type: ignore[attr-defined]
        if create and self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(
                text(
                    "INSERT INTO accounts (customer_id, available, pending, held, updated_at)"
                    " SELECT unnest(CAST(:ids AS text[])), 0, 0, 0, :now ON CONFLICT (customer_id) DO NOTHING"
                ).bindparams(bindparam("now", type_=table.c.updated_at.type)),
                {"ids": ordered, "now": now},
            )
        elif create:
            self.session.execute(
                sqlite.insert(table).on_conflict_do_nothing(index_elements=["customer_id"]),
                [{"customer_id": c, "available": 0, "pending": 0, "held": 0, "updated_at": now} for c in ordered],
            )
        self.session.execute(
            select(table.c.customer_id)
            .where(bulk.any_of(self.session, table.c.customer_id, ordered))
            .order_by(table.c.customer_id)
            .with_for_update()
        ).all()

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
        return list(
            self.session.exec(
                select(Lot).where(
                    Lot.customer_id == customer_id,
                    Lot.status == LotStatus.AVAILABLE.value,
                    col(Lot.expires_at) > now,
                    col(Lot.remaining) > col(Lot.held),
                )
            ).all()
        )

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
        lots = select(Lot.lot_id).where(
            Lot.customer_id == customer_id,
            or_(
                and_(
                    col(Lot.status) == LotStatus.AVAILABLE.value,
                    col(Lot.expires_at) <= now,
                    col(Lot.remaining) > col(Lot.held),
                ),
                and_(col(Lot.status) == LotStatus.PENDING.value, col(Lot.available_at) <= now),
            ),
        )
        holds = select(Hold.hold_id).where(
            Hold.customer_id == customer_id, Hold.status == HoldStatus.ACTIVE.value, col(Hold.expire_time) <= now
        )
        return (
            self.session.exec(lots.limit(1)).first() is not None
            or self.session.exec(holds.limit(1)).first() is not None
        )

    def customers_with_expired_lots(self, now: datetime, limit: int) -> list[str]:
        return list(
            self.session.exec(
                select(Lot.customer_id)
                .where(
                    Lot.status == LotStatus.AVAILABLE.value,
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
                .where(Lot.status == LotStatus.PENDING.value, col(Lot.available_at) <= now)
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
