"""List pagination (AIP-158): page sizes and opaque page tokens.

A page token is the URL-safe base64 of a small JSON object the service chooses (usually the key
of the last row returned), so clients cannot read meaning into it; anything that does not decode
is INVALID_ARGUMENT / INVALID_PAGE_TOKEN.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from shared.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """0 means the default; larger values are capped; negative ones are refused."""
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative", "INVALID_PAGE_SIZE")
    return min(requested or default, maximum)


def encode_token(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, *keys: str) -> dict[str, Any] | None:
    """The position in `token`, which must carry exactly `keys`; None for the first page."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        position = None
    if not isinstance(position, dict) or set(position) != set(keys):
        raise InvalidArgument.field("page_token", "is not a token this list gave out", "INVALID_PAGE_TOKEN")
    return position
