"""The acquirer port: what the wallet asks of a card acquirer.

Every operation carries an idempotency key derived from the wallet request that caused it, and an
acquirer answers a repeated key with the first outcome without doing anything again. That is what
makes a timeout safe: the wallet asks again with the same key and learns what happened, and a
card is never charged twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CardInfo:
    """All the wallet keeps of a card."""

    token: str
    brand: str
    last4: str


@dataclass(frozen=True)
class AcquirerResult:
    approved: bool
    card: CardInfo
    decline_reason: str = ""  # UPPER_SNAKE, for example CARD_DECLINED


class AcquirerTimeout(Exception):
    """The acquirer did not answer in time: the operation may or may not have happened."""


class Acquirer(Protocol):
    def charge(self, key: str, token: str, amount_minor: int, currency: str) -> AcquirerResult:
        """Charge the card at once (a top-up)."""
        ...

    def authorise(self, key: str, token: str, amount_minor: int, currency: str) -> AcquirerResult:
        """Reserve the amount on the card (a card hold)."""
        ...

    def capture(self, key: str, authorisation_key: str, amount_minor: int) -> AcquirerResult:
        """Take all or part of an authorisation; the rest is released."""
        ...

    def void(self, key: str, authorisation_key: str) -> AcquirerResult:
        """Release an authorisation in full. Voiding one that never happened is approved."""
        ...

    def refund(self, key: str, payment_key: str, amount_minor: int) -> AcquirerResult:
        """Return captured money to the card."""
        ...
