"""The statement of a wallet and the statistics experiments read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, func, select

from services.wallet.adapters.tables import Hold, Refund, StatementEntry, Wallet
from services.wallet.domain.balances import end_of_day_balances
from services.wallet.domain.holds import HoldStatus, PaymentMethod
from services.wallet.domain.ledger import StatementEntryType
from services.wallet.service_layer.interest import balances_between
from shared.calendar import ProgrammeCalendar
from shared.db import Database, UnitOfWork
from shared.errors import InvalidArgument
from shared.pagination import decode_token, encode_token

MAX_CUSTOMERS = 1000
_wallets: Table = Wallet.__table__  # type: ignore[attr-defined]
_entries: Table = StatementEntry.__table__  # type: ignore[attr-defined]
_holds: Table = Hold.__table__  # type: ignore[attr-defined]
_refunds: Table = Refund.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Statistics:
    customer_id: str
    wallet_open_time: datetime | None
    adopted: bool = False
    top_ups_minor: int = 0
    net_deposits_minor: int = 0
    average_balance_minor: int = 0
    end_balance_minor: int = 0
    wallet_payments_minor: int = 0


class Statements:
    def __init__(self, database: Database, calendar: ProgrammeCalendar) -> None:
        self._db = database
        self._calendar = calendar

    def entries(
        self, wallet_id: str, size: int, token: str, start: datetime | None, end: datetime | None
    ) -> tuple[list[StatementEntry], str]:
        """Newest first; the token is the id of the last entry given."""
        position = decode_token("statement", token, [int])
        e = StatementEntry
        query = select(e).where(e.wallet_id == wallet_id)  # type: ignore[arg-type]
        if position is not None:
            query = query.where(e.id < position[0])
        if start is not None:
            query = query.where(e.created_at >= start)  # type: ignore[arg-type]
        if end is not None:
            query = query.where(e.created_at < end)  # type: ignore[arg-type]
        with self._db.unit_of_work() as uow:
            rows = list(uow.session.scalars(query.order_by(e.id.desc()).limit(size + 1)))  # type: ignore[union-attr]
            uow.session.expunge_all()
        next_token = encode_token("statement", [rows[size - 1].id or 0]) if len(rows) > size else ""
        return rows[:size], next_token

    def statistics(
        self, start: datetime, end: datetime, customer_ids: Sequence[str], size: int, token: str
    ) -> tuple[list[Statistics], str]:
        if end <= start:
            raise InvalidArgument.field("end_time", "must be after start_time", "INVALID_PERIOD")
        if len(customer_ids) > MAX_CUSTOMERS:
            raise InvalidArgument.field(
                "customer_ids", f"at most {MAX_CUSTOMERS} customers per call", "TOO_MANY_CUSTOMERS"
            )
        with self._db.unit_of_work() as uow:
            w = _wallets.c
            if customer_ids:
                position = decode_token("wallet-statistics-of", token, [int])
                offset = position[0] if position is not None else 0
                page = list(dict.fromkeys(customer_ids))[offset : offset + size + 1]
                next_token = encode_token("wallet-statistics-of", [offset + size]) if len(page) > size else ""
                page = page[:size]
                rows = uow.session.execute(
                    select(w.wallet_id, w.customer_id, w.created_at).where(w.customer_id.in_(page))
                ).all()
            else:
                position = decode_token("wallet-statistics", token, [str])
                query = select(w.wallet_id, w.customer_id, w.created_at).order_by(w.customer_id).limit(size + 1)
                if position is not None:
                    query = query.where(w.customer_id > position[0])
                rows = list(uow.session.execute(query).all())
                next_token = encode_token("wallet-statistics", [rows[size - 1][1]]) if len(rows) > size else ""
                rows = rows[:size]
                page = [row[1] for row in rows]
            wallets = {row[1]: (row[0], row[2]) for row in rows}
            wallet_ids = [wallet_id for wallet_id, _ in wallets.values()]
            opening, changes = balances_between(uow, wallet_ids, start, end) if wallet_ids else ({}, {})
            top_ups = self._sums(uow, wallet_ids, start, end, StatementEntryType.TOP_UP)
            payments = self._wallet_payments(uow, wallet_ids, start, end)
        day_ends = [min(self._calendar.end_of_day(day), end) for day in self._calendar.days_between(start, end)]
        result: list[Statistics] = []
        for customer_id in page:
            if customer_id not in wallets:
                result.append(Statistics(customer_id=customer_id, wallet_open_time=None))
                continue
            wallet_id, opened = wallets[customer_id]
            before = opening.get(wallet_id, 0)
            moves = changes.get(wallet_id, [])
            daily = end_of_day_balances(before, moves, day_ends)
            end_balance = moves[-1][1] if moves else before
            result.append(
                Statistics(
                    customer_id=customer_id,
                    wallet_open_time=opened,
                    adopted=before > 0 or any(balance > 0 for _, balance in moves),
                    top_ups_minor=top_ups.get(wallet_id, 0),
                    net_deposits_minor=end_balance - before,
                    average_balance_minor=sum(daily) // len(daily),
                    end_balance_minor=end_balance,
                    wallet_payments_minor=payments.get(wallet_id, 0),
                )
            )
        return result, next_token

    @staticmethod
    def _sums(
        uow: UnitOfWork, wallet_ids: Sequence[str], start: datetime, end: datetime, kind: StatementEntryType
    ) -> dict[str, int]:
        if not wallet_ids:
            return {}
        e = _entries.c
        rows = uow.session.execute(
            select(e.wallet_id, func.sum(e.amount_minor))
            .where(e.wallet_id.in_(wallet_ids), e.type == kind.value, e.created_at >= start, e.created_at < end)
            .group_by(e.wallet_id)
        ).all()
        return {row[0]: int(row[1]) for row in rows}

    @staticmethod
    def _wallet_payments(uow: UnitOfWork, wallet_ids: Sequence[str], start: datetime, end: datetime) -> dict[str, int]:
        """Captured wallet holds in the period minus refunds of wallet holds in the period."""
        if not wallet_ids:
            return {}
        h, r = _holds.c, _refunds.c
        session = uow.session
        captured = session.execute(
            select(h.wallet_id, func.sum(h.captured_minor))
            .where(
                h.wallet_id.in_(wallet_ids),
                h.payment_method == PaymentMethod.WALLET.value,
                h.status == HoldStatus.CAPTURED.value,
                h.captured_at >= start,
                h.captured_at < end,
            )
            .group_by(h.wallet_id)
        ).all()
        refunded = session.execute(
            select(h.wallet_id, func.sum(r.amount_minor))
            .join(_holds, r.hold_id == h.hold_id)
            .where(
                h.wallet_id.in_(wallet_ids),
                h.payment_method == PaymentMethod.WALLET.value,
                r.created_at >= start,
                r.created_at < end,
            )
            .group_by(h.wallet_id)
        ).all()
        totals = {row[0]: int(row[1]) for row in captured}
        for wallet_id, amount in refunded:
            totals[wallet_id] = totals.get(wallet_id, 0) - int(amount)
        return totals
