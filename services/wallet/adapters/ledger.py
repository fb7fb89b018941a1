"""Writing the double-entry ledger.

A transfer is written in the caller's transaction: the transfer row, its postings, the new
running balances of the customer's accounts and, when the customer's balance moved, the statement
entry. The running balances change through one conditional UPDATE of the wallet row, so an
overdraft is refused by the database itself (the row is re-checked after any concurrent writer
commits), and the CHECK constraints of the table stand behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table, bindparam, insert, update
from sqlmodel import Session

from services.wallet.adapters.tables import LedgerAccount, LedgerPosting, LedgerTransfer, StatementEntry, Wallet
from services.wallet.domain.ledger import (
    AccountKind,
    Leg,
    StatementEntryType,
    TransferKind,
    holds_account,
    postings_of,
    wallet_account,
)
from shared import bulk
from shared.errors import FailedPrecondition
from shared.ids import new_id

_wallets: Table = Wallet.__table__  # type: ignore[attr-defined]
_transfers: Table = LedgerTransfer.__table__  # type: ignore[attr-defined]
_postings: Table = LedgerPosting.__table__  # type: ignore[attr-defined]
_entries: Table = StatementEntry.__table__  # type: ignore[attr-defined]

# The statements are built once, with bind parameters (building a construct costs more CPU than
# executing its cached compiled form).
_w = _wallets.c
_MOVE_BALANCES = (
    update(_wallets)
    .where(
        _w.wallet_id == bindparam("b_wallet_id", type_=_w.wallet_id.type),
        _w.balance_minor + bindparam("b_delta", type_=_w.balance_minor.type) >= 0,
        _w.held_minor + bindparam("b_delta_held", type_=_w.held_minor.type) >= 0,
        _w.balance_minor + bindparam("b_delta") >= _w.held_minor + bindparam("b_delta_held"),
    )
    .values(
        balance_minor=_w.balance_minor + bindparam("b_delta"),
        held_minor=_w.held_minor + bindparam("b_delta_held"),
        updated_at=bindparam("b_now", type_=_w.updated_at.type),
    )
    .returning(_w.balance_minor)
)
_INSERT_TRANSFER = insert(_transfers)
_INSERT_ENTRY = insert(_entries)


def _insert_postings(count: int) -> bulk.ValuesInsert:
    """One INSERT of `count` postings (multi-row VALUES), whatever the driver does with executemany."""
    return bulk.values_insert(_postings, count, "p", ("transfer_id", "account_id", "amount_minor", "created_at"))


def insufficient_funds(wallet_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        "INSUFFICIENT_FUNDS", "the wallet's available balance is too low", metadata={"wallet_id": wallet_id}
    )


class LedgerRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def open_accounts(self, wallet_id: str, currency: str, now: datetime) -> None:
        self._session.add_all(
            [
                LedgerAccount(
                    account_id=wallet_account(wallet_id),
                    kind=AccountKind.CUSTOMER_WALLET.value,
                    wallet_id=wallet_id,
                    currency=currency,
                    created_at=now,
                ),
                LedgerAccount(
                    account_id=holds_account(wallet_id),
                    kind=AccountKind.CUSTOMER_HOLDS.value,
                    wallet_id=wallet_id,
                    currency=currency,
                    created_at=now,
                ),
            ]
        )
        self._session.flush()

    def transfer(
        self,
        *,
        kind: TransferKind,
        legs: Sequence[Leg],
        reference: str,
        now: datetime,
        wallet_id: str | None = None,
        entry: tuple[StatementEntryType, str] | None = None,
    ) -> str:
        """Book a transfer; INSUFFICIENT_FUNDS (nothing written) if it would overdraw the wallet."""
        postings = postings_of(legs)
        customer = {a for a, _ in postings if a.startswith(("wallet:", "holds:"))}
        if wallet_id is None:
            if customer:
                raise ValueError("a transfer touching a wallet names it")
        elif not customer <= {wallet_account(wallet_id), holds_account(wallet_id)}:
            raise ValueError("a transfer touches the accounts of one wallet at most")
        balance_after: int | None = None
        delta = 0
        if wallet_id is not None and customer:
            delta_available = sum(amount for a, amount in postings if a == wallet_account(wallet_id))
            delta_held = sum(amount for a, amount in postings if a == holds_account(wallet_id))
            delta = delta_available + delta_held
            row = self._session.execute(
                _MOVE_BALANCES,
                {"b_wallet_id": wallet_id, "b_delta": delta, "b_delta_held": delta_held, "b_now": now},
            ).first()
            if row is None:
                raise insufficient_funds(wallet_id)
            balance_after = int(row[0])
        transfer_id = new_id()
        self._session.execute(
            _INSERT_TRANSFER,
            {"transfer_id": transfer_id, "kind": kind.value, "reference": reference, "created_at": now},
        )
        if postings:
            postings_insert = _insert_postings(len(postings))
            rows: dict[str, object] = {}
            for i, (account, amount) in enumerate(postings):
                posting = {"transfer_id": transfer_id, "account_id": account, "amount_minor": amount, "created_at": now}
                rows.update(postings_insert.params(i, posting))
            self._session.execute(postings_insert.statement, rows)
        if delta != 0 and wallet_id is not None and balance_after is not None:
            if entry is None:
                raise ValueError("a transfer that moves the customer's balance needs a statement entry")
            entry_type, description = entry
            self._session.execute(
                _INSERT_ENTRY,
                {
                    "wallet_id": wallet_id,
                    "transfer_id": transfer_id,
                    "type": entry_type.value,
                    "amount_minor": delta,
                    "balance_after_minor": balance_after,
                    "reference": reference,
                    "description": description[:200],
                    "created_at": now,
                },
            )
        return transfer_id
