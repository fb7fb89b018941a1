"""Bank cards: only the acquirer's token, the brand and the last four digits are ever kept.

A full card number must never enter the system: a token that looks like one (13 to 19 digits,
with or without spaces or dashes, whether or not it passes the Luhn check) is refused, and the
refusal never repeats the value.
"""

from __future__ import annotations

import re

from shared.errors import InvalidArgument

MAX_TOKEN_LENGTH = 64
# 13 or more digits in a row, allowing the separators people type between groups.
_CARD_NUMBER = re.compile(r"(?:\d[ \-]?){12,}\d")


def looks_like_card_number(value: str) -> bool:
    return _CARD_NUMBER.search(value) is not None


def validate_card_token(token: str, field: str = "card_token") -> str:
    """The token to send to the acquirer; never echoes a card number back."""
    if looks_like_card_number(token):
        raise InvalidArgument.field(
            field, "looks like a card number; send the acquirer's card token instead", "CARD_NUMBER_NOT_ALLOWED"
        )
    token = token.strip()
    if not token:
        raise InvalidArgument.field(field, "is required", "CARD_TOKEN_REQUIRED")
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidArgument.field(field, f"must be at most {MAX_TOKEN_LENGTH} characters", "INVALID_CARD_TOKEN")
    return token
