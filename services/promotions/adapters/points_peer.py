"""What Promotions asks of the Points service, as outbox messages."""

from __future__ import annotations

from loyalty.points.v1 import points_pb2

from shared.protoconv import method_path

PEER = "points"
CREDIT_POINTS = method_path(points_pb2.DESCRIPTOR, "PointsService", "CreditPoints")


def credit_request(
    *, request_id: str, customer_id: str, points: int, survey: bool, reference: str
) -> points_pb2.CreditPointsRequest:
    source = points_pb2.POINTS_SOURCE_SURVEY if survey else points_pb2.POINTS_SOURCE_PROFILE_ACTION
    return points_pb2.CreditPointsRequest(
        request_id=request_id, customer_id=customer_id, points=points, source=source, reference=reference
    )
