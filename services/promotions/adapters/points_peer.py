"""What Promotions asks of the Points service, as outbox messages."""

from __future__ import annotations

from datetime import datetime

from loyalty.points.v1 import points_pb2

from shared.protoconv import method_path, to_timestamp

PEER = "points"
CREDIT_POINTS = method_path(points_pb2.DESCRIPTOR, "PointsService", "CreditPoints")

SOURCES = {
    "PURCHASE": points_pb2.POINTS_SOURCE_PURCHASE,
    "CAMPAIGN": points_pb2.POINTS_SOURCE_CAMPAIGN,
    "CASHBACK": points_pb2.POINTS_SOURCE_CASHBACK,
    "PROMO_CODE": points_pb2.POINTS_SOURCE_PROMO_CODE,
    "PROFILE_ACTION": points_pb2.POINTS_SOURCE_PROFILE_ACTION,
    "SURVEY": points_pb2.POINTS_SOURCE_SURVEY,
}
# Everything an order earns (purchase, campaign, promo-code and cashback points) is credited pending
# with the order id as reference: it becomes spendable when the order is received, and a cancelled
# order cancels it by reference.
PENDING = frozenset({"PURCHASE", "CAMPAIGN", "CASHBACK", "PROMO_CODE"})


def credit_request(
    *, request_id: str, customer_id: str, points: int, survey: bool, reference: str
) -> points_pb2.CreditPointsRequest:
    source = points_pb2.POINTS_SOURCE_SURVEY if survey else points_pb2.POINTS_SOURCE_PROFILE_ACTION
    return points_pb2.CreditPointsRequest(
        request_id=request_id, customer_id=customer_id, points=points, source=source, reference=reference
    )


def order_credit(
    *,
    request_id: str,
    customer_id: str,
    points: int,
    source: str,
    order_id: str,
    expires_at: datetime | None = None,
) -> points_pb2.CreditPointsRequest:
    """A credit earned by an order: reference = the order id."""
    request = points_pb2.CreditPointsRequest(
        request_id=request_id,
        customer_id=customer_id,
        points=points,
        source=SOURCES[source],
        reference=order_id,
        pending=source in PENDING,
    )
    if expires_at is not None:
        request.expires_at.CopyFrom(to_timestamp(expires_at))
    return request
