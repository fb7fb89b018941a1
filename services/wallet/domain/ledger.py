"""The double-entry money ledger: accounts, transfers and their legs.

Every movement of money is one transfer made of legs; each leg takes an amount out of one account
and puts it into another, so the signed postings of a transfer sum to zero. Transfers are never
changed or deleted: a correction is a new transfer.

Accounts:
- `wallet:<wallet_id>`: the customer's available money; never negative.
- `holds:<wallet_id>`: the customer's money reserved by active holds; never negative.
  The wallet balance is the sum of the two.
- `card-clearing`: money to and from bank cards through the acquirer. It goes negative as cards
  pay in: it mirrors what the acquirer owes us.
- `merchant`: money captured for orders, owed to the marketplace; refunds come out of it.
The two system accounts keep no running balance row (they would be a hot row every transfer
locks); their balance is the sum of their postings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

CARD_CLEARING = "card-clearing"
MERCHANT = "merchant"
SYSTEM_ACCOUNTS = (CARD_CLEARING, MERCHANT)


class AccountKind(StrEnum):
    CUSTOMER_WALLET = "CUSTOMER_WALLET"
    CUSTOMER_HOLDS = "CUSTOMER_HOLDS"
    CARD_CLEARING = "CARD_CLEARING"
    MERCHANT = "MERCHANT"


def wallet_account(wallet_id: str) -> str:
    return f"wallet:{wallet_id}"


def holds_account(wallet_id: str) -> str:
    return f"holds:{wallet_id}"


class TransferKind(StrEnum):
    TOP_UP = "TOP_UP"  # card -> wallet
    HOLD = "HOLD"  # wallet -> holds
    RELEASE = "RELEASE"  # holds -> wallet (release, expiry, the uncaptured rest)
    CAPTURE = "CAPTURE"  # holds -> merchant (and the rest holds -> wallet)
    CARD_CAPTURE = "CARD_CAPTURE"  # card -> merchant
    REFUND = "REFUND"  # merchant -> wallet or card
    CORRECTION = "CORRECTION"  # an operator's offsetting transfer


class StatementEntryType(StrEnum):
    """What moved the customer's balance (the sum of the wallet and holds accounts)."""

    TOP_UP = "TOP_UP"
    PAYMENT = "PAYMENT"
    REFUND = "REFUND"
    CORRECTION = "CORRECTION"


@dataclass(frozen=True)
class Leg:
    """`amount_minor` leaves `source` and arrives in `destination`."""

    source: str
    destination: str
    amount_minor: int

    def __post_init__(self) -> None:
        if self.amount_minor <= 0:
            raise ValueError("a leg moves a positive amount")
        if self.source == self.destination:
            raise ValueError("a leg moves money between two different accounts")


def postings_of(legs: Sequence[Leg]) -> list[tuple[str, int]]:
    """The signed postings of a transfer, in leg order: minus out of the source, plus into the
    destination. They always sum to zero."""
    if not legs:
        raise ValueError("a transfer has at least one leg")
    postings: list[tuple[str, int]] = []
    for leg in legs:
        postings += [(leg.source, -leg.amount_minor), (leg.destination, leg.amount_minor)]
    return postings


def customer_delta(postings: Sequence[tuple[str, int]], wallet_id: str) -> int:
    """How much a transfer changes the customer's balance (wallet plus holds accounts)."""
    mine = {wallet_account(wallet_id), holds_account(wallet_id)}
    return sum(amount for account, amount in postings if account in mine)
