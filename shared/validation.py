"""Request checks every service applies the same way."""

from __future__ import annotations

from shared.errors import InvalidArgument

MAX_CUSTOMER_ID = 64


def validate_customer_id(customer_id: str) -> None:
    """Customer ids come from the identity provider: non-blank and at most 64 characters."""
    if not customer_id.strip():
        raise InvalidArgument.field("customer_id", "is required", "CUSTOMER_ID_REQUIRED")
    if len(customer_id) > MAX_CUSTOMER_ID:
        raise InvalidArgument.field(
            "customer_id", f"must be at most {MAX_CUSTOMER_ID} characters", "INVALID_CUSTOMER_ID"
        )
