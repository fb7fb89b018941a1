"""Monthly interest posting, the accruals list and the yield calculator.

`post()` works through the wallets opened before the month's end that have no accrual for the
month yet, in chunks of `chunk_size` wallets (ordered by id), one transaction per chunk:

1. the chunk's mechanics come from Promotions (outside any transaction; the next chunk's are
   fetched in the background while this one is posted);
2. its end-of-day balances are loaded in two range queries (the balance before the month, the
   month's changes), its carries in one, and each interest wallet's month is computed in Python by
   the domain functions (`end_of_day_balances`, `monthly_interest`): they stay the one rule;
3. the accruals are written set-based (COPY on PostgreSQL) with the outbox messages, each a
   BatchCreditPoints of up to `BATCH` positive credits keyed `interest:<wallet_id>:<month>`, and
   the chunk commits, or nothing of it does.

A re-run (or a run resumed after a crash between chunks) skips the wallets that have their
accrual, which is unique per wallet and month: nothing is posted or queued twice.
"""

from __future__ import annotations

import contextvars
import logging
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, Table, and_, exists, func, select
from sqlalchemy.exc import IntegrityError

from services.wallet.adapters import points_peer
from services.wallet.adapters.promotions_peer import MechanicLookup
from services.wallet.adapters.tables import InterestAccrual, StatementEntry, Wallet
from services.wallet.domain.balances import end_of_day_balances
from services.wallet.domain.interest import YieldMonth, monthly_interest, project_yield
from services.wallet.domain.mechanics import InterestMechanic, Mechanic
from shared import bulk
from shared.calendar import Month, ProgrammeCalendar
from shared.clock import Clock
from shared.db import Database, UnitOfWork
from shared.errors import FailedPrecondition, InvalidArgument
from shared.ids import new_id
from shared.outbox import Outbox
from shared.pagination import decode_token, encode_token

log = logging.getLogger(__name__)

BATCH = points_peer.MAX_BATCH  # credits per outbox message (BatchCreditPoints takes at most 1,000)
CHUNK = 10_000  # wallets per transaction unless configured (WALLET_INTEREST_CHUNK_SIZE)
MAX_MONTHS = 120
_wallets: Table = Wallet.__table__  # type: ignore[attr-defined]
_entries: Table = StatementEntry.__table__  # type: ignore[attr-defined]
_accruals: Table = InterestAccrual.__table__  # type: ignore[attr-defined]
_ACCRUAL_COLUMNS = (  # the order of the accrual rows `_post_chunk_in` makes
    "wallet_id",
    "customer_id",
    "month",
    "mechanic_code",
    "mechanic_name",
    "apr_bps",
    "basis",
    "basis_minor",
    "carry_in_micro",
    "accrued_micro",
    "points",
    "carry_out_micro",
    "posted_at",
)


@dataclass(frozen=True)
class PostSummary:
    posted: int = 0
    already_posted: int = 0
    not_on_interest: int = 0
    points: int = 0

    def __add__(self, other: PostSummary) -> PostSummary:
        return PostSummary(
            self.posted + other.posted,
            self.already_posted + other.already_posted,
            self.not_on_interest + other.not_on_interest,
            self.points + other.points,
        )


class _WalletRow(NamedTuple):  # one per wallet of a chunk: a named tuple is cheap to make
    wallet_id: str
    customer_id: str


class Interest:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        calendar: ProgrammeCalendar,
        mechanics: MechanicLookup,
        outbox: Outbox,
        chunk_size: int = CHUNK,
    ) -> None:
        self._db = database
        self._clock = clock
        self._calendar = calendar
        self._mechanics = mechanics
        self._outbox = outbox
        self._chunk_size = chunk_size

    # -- posting -----------------------------------------------------------------------------------

    def ended_month(self, text: str) -> Month:
        month = Month.parse(text)
        end = self._calendar.month_end(month)
        if self._clock.now() < end:
            raise FailedPrecondition(
                "MONTH_NOT_ENDED",
                f"{month} is not over yet (it ends at {end.isoformat()})",
                metadata={"month": str(month)},
            )
        return month

    def post(self, month: Month) -> PostSummary:
        with self._db.unit_of_work() as uow:
            already = uow.session.execute(
                select(func.count()).select_from(_accruals).where(_accruals.c.month == str(month))
            ).scalar_one()
        summary = PostSummary(already_posted=int(already))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="interest-mechanics") as prefetch:
            chunk = self._unposted(month, after="")
            mechanics = self._fetch(prefetch, chunk, month)
            while chunk:
                following = self._unposted(month, after=chunk[-1].wallet_id)
                following_mechanics = self._fetch(prefetch, following, month)  # while this chunk posts
                summary += self._post_chunk(chunk, mechanics.result(), month)
                chunk, mechanics = following, following_mechanics
        return summary

    def _fetch(
        self, pool: ThreadPoolExecutor, chunk: Sequence[_WalletRow], month: Month
    ) -> Future[dict[str, Mechanic]]:
        # In the caller's context, so the look-up is traced under the posting's span.
        context = contextvars.copy_context()
        return pool.submit(context.run, self._mechanics.for_month, [row.customer_id for row in chunk], month)

    def _unposted(self, month: Month, after: str) -> list[_WalletRow]:
        """The next chunk of wallets opened before the month's end without an accrual for it."""
        w, a = _wallets.c, _accruals.c
        with self._db.unit_of_work() as uow:
            rows = bulk.plain_rows(
                uow.session,
                select(w.wallet_id, w.customer_id)
                .where(
                    w.created_at < self._calendar.month_end(month),
                    w.wallet_id > after,
                    ~exists().where(and_(a.wallet_id == w.wallet_id, a.month == str(month))),
                )
                .order_by(w.wallet_id)
                .limit(self._chunk_size),
            )
        return [_WalletRow(r[0], r[1]) for r in rows]

    def _post_chunk(self, chunk: Sequence[_WalletRow], mechanics: dict[str, Mechanic], month: Month) -> PostSummary:
        for _ in range(3):
            try:
                with self._db.unit_of_work() as uow:
                    summary = self._post_chunk_in(uow, chunk, mechanics, month)
                    uow.commit()
                    return summary
            except IntegrityError:
                log.info("a concurrent run posted part of the chunk; reading it again", extra={"month": str(month)})
        raise FailedPrecondition("INTEREST_POSTING_RACE", "another run keeps posting the same wallets; run again")

    def _post_chunk_in(
        self, uow: UnitOfWork, chunk: Sequence[_WalletRow], mechanics: dict[str, Mechanic], month: Month
    ) -> PostSummary:
        first, last = chunk[0].wallet_id, chunk[-1].wallet_id
        a = _accruals.c
        already = {
            row[0]
            for row in bulk.plain_rows(
                uow.session, select(a.wallet_id).where(a.month == str(month), a.wallet_id >= first, a.wallet_id <= last)
            )
        }
        todo: list[tuple[_WalletRow, InterestMechanic]] = []
        not_on_interest = 0
        for row in chunk:
            mechanic = mechanics[row.customer_id]
            if not isinstance(mechanic, InterestMechanic):
                not_on_interest += 1
            elif row.wallet_id not in already:
                todo.append((row, mechanic))
        if not todo:
            return PostSummary(0, 0, not_on_interest, 0)
        start, end = self._calendar.month_start(month), self._calendar.month_end(month)
        day_ends = [self._calendar.end_of_day(day) for day in month.days()]
        opening, changes = balances_in_range(uow, first, last, start, end)
        carries = self._carries(uow, first, last, month)
        now = self._clock.now()
        month_text = str(month)
        rows: list[tuple[object, ...]] = []
        credits: list[points_peer.InterestCredit] = []
        points_total = 0
        for row, mechanic in todo:
            balances = end_of_day_balances(opening.get(row.wallet_id, 0), changes.get(row.wallet_id, ()), day_ends)
            result = monthly_interest(balances, mechanic, carries.get(row.wallet_id, 0))
            rows.append(
                (
                    row.wallet_id,
                    row.customer_id,
                    month_text,
                    mechanic.code[:64],
                    mechanic.name[:200],
                    mechanic.apr_bps,
                    mechanic.basis.value,
                    result.basis_minor,
                    result.carry_in_micro,
                    result.accrued_micro,
                    result.points,
                    result.carry_out_micro,
                    now,
                )
            )
            if result.points > 0:
                credits.append(points_peer.InterestCredit(row.wallet_id, row.customer_id, month_text, result.points))
                points_total += result.points
        # The unique (wallet, month) key speaks here if a concurrent run won: the chunk is read again.
        bulk.copy_rows(uow.session, _accruals, _ACCRUAL_COLUMNS, rows)
        for offset in range(0, len(credits), BATCH):
            self._outbox.enqueue(
                uow,
                peer=points_peer.PEER,
                method=points_peer.BATCH_CREDIT_POINTS,
                request=points_peer.batch_credit_request(
                    f"interest-batch:{month}:{new_id()}", credits[offset : offset + BATCH]
                ),
            )
        return PostSummary(len(todo), 0, not_on_interest, points_total)

    @staticmethod
    def _carries(uow: UnitOfWork, first: str, last: str, month: Month) -> dict[str, int]:
        """Carry-out of each wallet's latest accrual before `month` (months are posted in order)."""
        a = _accruals.c
        latest = (
            select(a.wallet_id, func.max(a.month).label("month"))
            .where(a.wallet_id >= first, a.wallet_id <= last, a.month < str(month))
            .group_by(a.wallet_id)
            .subquery()
        )
        rows = bulk.plain_rows(
            uow.session,
            select(a.wallet_id, a.carry_out_micro).join(
                latest, (a.wallet_id == latest.c.wallet_id) & (a.month == latest.c.month)
            ),
        )
        return {row[0]: int(row[1]) for row in rows}

    # -- reading -----------------------------------------------------------------------------------

    def accruals(self, wallet_id: str, size: int, token: str) -> tuple[list[InterestAccrual], str]:
        position = decode_token("interest-accruals", token, [str])
        with self._db.unit_of_work() as uow:
            query = select(InterestAccrual).where(InterestAccrual.wallet_id == wallet_id)  # type: ignore[arg-type]
            if position is not None:
                query = query.where(InterestAccrual.month < position[0])
            rows = list(uow.session.scalars(query.order_by(InterestAccrual.month.desc()).limit(size + 1)))  # type: ignore[attr-defined]
            uow.session.expunge_all()
        next_token = encode_token("interest-accruals", [rows[size - 1].month]) if len(rows) > size else ""
        return rows[:size], next_token

    # -- calculator --------------------------------------------------------------------------------

    def project(
        self, amount_minor: int, months: int, mechanic: Mechanic, monthly_spend_minor: int, start_month: str
    ) -> list[YieldMonth]:
        if not 1 <= months <= MAX_MONTHS:
            raise InvalidArgument.field("months", f"must be between 1 and {MAX_MONTHS}", "MONTHS_OUT_OF_RANGE")
        if monthly_spend_minor < 0:
            raise InvalidArgument.field("monthly_spend.amount_minor", "must not be negative", "INVALID_AMOUNT")
        first = (
            Month.parse(start_month, field="start_month")
            if start_month
            else self._calendar.month_of(self._clock.now()).next()
        )
        return project_yield(amount_minor, first, months, mechanic, monthly_spend_minor)


def balances_in_range(
    uow: UnitOfWork, first: str, last: str, start: datetime, end: datetime
) -> tuple[dict[str, int], dict[str, list[tuple[datetime, int]]]]:
    """`balances_between` for the wallets with ids in [first, last] (a chunk of the posting),
    by range instead of a list of ids."""
    e = _entries.c
    return _balances(uow, (e.wallet_id >= first, e.wallet_id <= last), start, end)


def balances_between(
    uow: UnitOfWork, wallet_ids: Sequence[str], start: datetime, end: datetime
) -> tuple[dict[str, int], dict[str, list[tuple[datetime, int]]]]:
    """(balance of each wallet just before `start`, its (time, balance after) changes in
    [start, end) in booking order)."""
    return _balances(uow, (_entries.c.wallet_id.in_(wallet_ids),), start, end)


def _balances(
    uow: UnitOfWork, which: Sequence[ColumnElement[bool]], start: datetime, end: datetime
) -> tuple[dict[str, int], dict[str, list[tuple[datetime, int]]]]:
    e = _entries.c
    # The balance after each wallet's last entry before `start` (the last booked: the highest id),
    # in one pass over those entries. Joining each wallet's max(id) back to the table let
    # PostgreSQL pick a merge join over the whole primary key (55-140 ms a chunk of 10,000 at
    # 100,000 wallets, against about 9 ms this way).
    last_first = (
        select(
            e.wallet_id,
            e.balance_after_minor,
            func.row_number().over(partition_by=e.wallet_id, order_by=e.id.desc()).label("newest"),
        )
        .where(*which, e.created_at < start)
        .subquery()
    )
    opening = {
        row[0]: int(row[1])
        for row in bulk.plain_rows(
            uow.session,
            select(last_first.c.wallet_id, last_first.c.balance_after_minor).where(last_first.c.newest == 1),
        )
    }
    # Only compared with the day ends: PostgreSQL's aware timestamps need no conversion to UTC
    # (a third of reading the month's changes went to it), so the driver's rows are taken as
    # they come (`plain_rows`); SQLite's naive ones are converted.
    created_at = bulk.as_stored(uow.session, e.created_at)
    changes: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    for wallet_id, at, balance in bulk.plain_rows(
        uow.session,
        select(e.wallet_id, created_at, e.balance_after_minor)
        .where(*which, e.created_at >= start, e.created_at < end)
        .order_by(e.wallet_id, e.id),
    ):
        changes[wallet_id].append((at, int(balance)))
    return opening, changes
