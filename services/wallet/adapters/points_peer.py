"""What the Wallet asks of the Points service, as outbox messages: interest credited in batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from loyalty.points.v1 import points_pb2

from shared.protoconv import method_path

PEER = "points"
BATCH_CREDIT_POINTS = method_path(points_pb2.DESCRIPTOR, "PointsService", "BatchCreditPoints")
MAX_BATCH = 1000  # BatchCreditPoints takes at most 1000 items


def interest_key(wallet_id: str, month: str) -> str:
    """Request id and reference of one wallet's interest for one month."""
    return f"interest:{wallet_id}:{month}"


class InterestCredit(NamedTuple):  # one per wallet posted: a named tuple is cheap to make
    wallet_id: str
    customer_id: str
    month: str
    points: int


def batch_credit_request(batch_id: str, credits: Sequence[InterestCredit]) -> points_pb2.BatchCreditPointsRequest:
    if not 0 < len(credits) <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} credits")
    return points_pb2.BatchCreditPointsRequest(
        request_id=batch_id,
        requests=[
            points_pb2.CreditPointsRequest(
                request_id=interest_key(c.wallet_id, c.month),
                customer_id=c.customer_id,
                points=c.points,
                source=points_pb2.POINTS_SOURCE_WALLET_INTEREST,
                reference=interest_key(c.wallet_id, c.month),
            )
            for c in credits
        ],
    )
