"""Batches a peer may accept in part: which items of a delivered outbox message it refused.

`PointsService/BatchCreditPoints` answers OK for the batch and a result per item; an item can be
refused (its `error_code` set: a bad credit, a request id reused for another request) while the
others are credited. The relay must not count such a message as delivered in full: it asks the
inspector registered for the method, and keeps the refused items as a DEAD message of their own
(see `OutboxRelay`), visible in the dead-letter gauge and re-queued by hand once the cause is
fixed; the items keep their request ids, so a second delivery is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message
from loyalty.points.v1 import points_pb2

from shared.protoconv import method_path

BATCH_CREDIT_POINTS = method_path(points_pb2.DESCRIPTOR, "PointsService", "BatchCreditPoints")
MAX_ERRORS_SHOWN = 20


@dataclass(frozen=True)
class Refused:
    """The part of a request the peer refused, as a request of its own, and why."""

    request: Message
    description: str
    items: int


Inspector = Callable[[bytes, bytes], Refused | None]


def refused_request_id(request_id: str) -> str:
    return f"{request_id[:110]}:refused"


def batch_credit_refusals(payload: bytes, response: bytes) -> Refused | None:
    request = points_pb2.BatchCreditPointsRequest.FromString(payload)
    answer = points_pb2.BatchCreditPointsResponse.FromString(response)
    refused = [
        (item, result) for item, result in zip(request.requests, answer.results, strict=False) if result.error_code
    ]
    if not refused:
        return None
    reasons = "; ".join(
        f"{item.request_id}: {_code_name(result.error_code)} {result.error_reason}: {result.error_message}"
        for item, result in refused[:MAX_ERRORS_SHOWN]
    )
    more = f" (and {len(refused) - MAX_ERRORS_SHOWN} more)" if len(refused) > MAX_ERRORS_SHOWN else ""
    part = points_pb2.BatchCreditPointsRequest(
        request_id=refused_request_id(request.request_id), requests=[item for item, _ in refused]
    )
    return Refused(part, f"{len(refused)} of {len(request.requests)} items refused: {reasons}{more}", len(refused))


def _code_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return str(code)


INSPECTORS: Mapping[str, Inspector] = {BATCH_CREDIT_POINTS: batch_credit_refusals}
