"""Thin test clients over the real gRPC stubs: fresh request ids, short calls, readable errors."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from loyalty.points.v1 import points_pb2, points_pb2_grpc

from shared.errors import DomainError, from_rpc_error
from shared.protoconv import to_timestamp

T = TypeVar("T")


def rid() -> str:
    return f"req-{uuid.uuid4().hex}"


def eventually(condition: Callable[[], bool], seconds: float = 15) -> bool:
    """Poll `condition` until it holds or `seconds` have passed; its last answer."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def refused(call: Callable[[], Any]) -> DomainError:
    """The domain error a call is refused with (fails the test if it succeeds)."""
    try:
        call()
    except grpc.RpcError as error:
        return from_rpc_error(error)
    raise AssertionError("the call succeeded but was expected to be refused")


SOURCE = {name.removeprefix("POINTS_SOURCE_"): value for name, value in points_pb2.PointsSource.items()}


class PointsClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = points_pb2_grpc.PointsServiceStub(channel)

    def credit(
        self,
        customer: str,
        points: int,
        source: str = "CAMPAIGN",
        *,
        reference: str = "",
        pending: bool = False,
        expires_at: datetime | None = None,
        reason: str = "",
        operator_id: str = "",
        request_id: str | None = None,
    ) -> points_pb2.Lot:
        request = points_pb2.CreditPointsRequest(
            request_id=request_id or rid(),
            customer_id=customer,
            points=points,
            source=SOURCE[source],
            reference=reference,
            pending=pending,
            reason=reason,
            operator_id=operator_id,
        )
        if expires_at is not None:
            request.expires_at.CopyFrom(to_timestamp(expires_at))
        return self.stub.CreditPoints(request, timeout=10).lot

    def balance(self, customer: str, days: int = 0) -> points_pb2.GetBalanceResponse:
        return self.stub.GetBalance(
            points_pb2.GetBalanceRequest(customer_id=customer, expiring_within_days=days), timeout=10
        )

    def hold(
        self,
        customer: str,
        points: int,
        reference: str = "order-1",
        *,
        ttl: timedelta | None = None,
        request_id: str | None = None,
    ) -> points_pb2.Hold:
        request = points_pb2.HoldPointsRequest(
            request_id=request_id or rid(), customer_id=customer, points=points, reference=reference
        )
        if ttl is not None:
            request.ttl.CopyFrom(Duration(seconds=int(ttl.total_seconds())))
        return self.stub.HoldPoints(request, timeout=10).hold

    def capture(self, hold_id: str, points: int = 0, *, request_id: str | None = None) -> points_pb2.Hold:
        request = points_pb2.CaptureHoldRequest(request_id=request_id or rid(), hold_id=hold_id, points=points)
        return self.stub.CaptureHold(request, timeout=10).hold

    def release(
        self, hold_id: str, reason: str = "", *, request_id: str | None = None
    ) -> points_pb2.ReleaseHoldResponse:
        request = points_pb2.ReleaseHoldRequest(request_id=request_id or rid(), hold_id=hold_id, reason=reason)
        return self.stub.ReleaseHold(request, timeout=10)

    def give_back(
        self, hold_id: str, points: int = 0, *, reference: str = "", reason: str = "", request_id: str | None = None
    ) -> points_pb2.ReturnPointsResponse:
        request = points_pb2.ReturnPointsRequest(
            request_id=request_id or rid(), hold_id=hold_id, points=points, reference=reference, reason=reason
        )
        return self.stub.ReturnPoints(request, timeout=10)

    def reverse(
        self, customer: str, reference: str, points: int = 0, *, reason: str = "", request_id: str | None = None
    ) -> points_pb2.ReversePointsResponse:
        request = points_pb2.ReversePointsRequest(
            request_id=request_id or rid(), customer_id=customer, reference=reference, points=points, reason=reason
        )
        return self.stub.ReversePoints(request, timeout=10)

    def activate(
        self, customer: str, reference: str, at: datetime | None = None, *, request_id: str | None = None
    ) -> points_pb2.ActivatePendingPointsResponse:
        request = points_pb2.ActivatePendingPointsRequest(
            request_id=request_id or rid(), customer_id=customer, reference=reference
        )
        if at is not None:
            request.available_at.CopyFrom(to_timestamp(at))
        return self.stub.ActivatePendingPoints(request, timeout=10)

    def cancel(
        self, customer: str, reference: str, reason: str = "", *, request_id: str | None = None
    ) -> points_pb2.CancelPendingPointsResponse:
        request = points_pb2.CancelPendingPointsRequest(
            request_id=request_id or rid(), customer_id=customer, reference=reference, reason=reason
        )
        return self.stub.CancelPendingPoints(request, timeout=10)

    def expire(self, *, request_id: str | None = None) -> points_pb2.ExpirePointsResponse:
        return self.stub.ExpirePoints(points_pb2.ExpirePointsRequest(request_id=request_id or rid()), timeout=60)

    def release_expired(self, *, request_id: str | None = None) -> points_pb2.ReleaseExpiredHoldsResponse:
        request = points_pb2.ReleaseExpiredHoldsRequest(request_id=request_id or rid())
        return self.stub.ReleaseExpiredHolds(request, timeout=60)

    def activate_due(self, *, request_id: str | None = None) -> points_pb2.ActivateDuePointsResponse:
        request = points_pb2.ActivateDuePointsRequest(request_id=request_id or rid())
        return self.stub.ActivateDuePoints(request, timeout=60)

    def get_hold(self, hold_id: str) -> points_pb2.Hold:
        return self.stub.GetHold(points_pb2.GetHoldRequest(hold_id=hold_id), timeout=10).hold

    def lots(self, customer: str, *statuses: points_pb2.LotStatus.ValueType) -> list[points_pb2.Lot]:
        return list(
            self._all(
                lambda token: self.stub.ListLots(
                    points_pb2.ListLotsRequest(customer_id=customer, statuses=statuses, page_token=token, page_size=7),
                    timeout=10,
                ),
                "lots",
            )
        )

    def history(self, customer: str) -> list[points_pb2.HistoryEntry]:
        return list(
            self._all(
                lambda token: self.stub.ListHistory(
                    points_pb2.ListHistoryRequest(customer_id=customer, page_token=token, page_size=7), timeout=10
                ),
                "entries",
            )
        )

    @staticmethod
    def _all(page: Callable[[str], Any], field: str) -> list[Any]:
        items: list[Any] = []
        token = ""
        while True:
            response = page(token)
            items.extend(getattr(response, field))
            token = response.next_page_token
            if not token:
                return items
