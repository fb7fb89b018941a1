"""Keyset pagination (AIP-158) with opaque page tokens.

A token carries the sort key of the last row served and the name of the list it belongs to, as
base64url JSON. Lists read `WHERE key < token_key ORDER BY key DESC LIMIT size + 1`, so a page
never skips or repeats a row when rows are added meanwhile. A token from another list, or one
that was tampered with, is INVALID_ARGUMENT / INVALID_PAGE_TOKEN.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from shared.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE) -> int:
    """0 means the default; more than the maximum is capped; negative is an error."""
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative", "INVALID_PAGE_SIZE")
    return min(requested or default, MAX_PAGE_SIZE)


def encode_token(listing: str, key: Sequence[str | int]) -> str:
    raw = json.dumps({"l": listing, "k": list(key)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(listing: str, token: str, types: Sequence[type]) -> list[Any] | None:
    """The key a token carries, checked against the expected types; None for the first page."""
    if not token:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        key = payload["k"]
        ok = payload["l"] == listing and isinstance(key, list) and len(key) == len(types)
        ok = ok and all(type(value) is kind for value, kind in zip(key, types, strict=True))
    except (ValueError, TypeError, KeyError, binascii.Error):
        ok = False
    if not ok:
        raise InvalidArgument.field("page_token", "is not a page token of this list", "INVALID_PAGE_TOKEN")
    return list(key)
