"""The PointsService servicer: turns requests into use cases and results into responses."""

from __future__ import annotations

import grpc
from loyalty.points.v1 import points_pb2, points_pb2_grpc

from services.points.adapters.tables import Lot
from services.points.domain.lots import CreditRequest, LotStatus, PointsSource
from services.points.service_layer.ledger import Ledger
from shared.db import UnitOfWork
from shared.idempotency import Idempotency
from shared.protoconv import enum_from_proto, enum_to_proto, optional_timestamp, to_timestamp

SERVICE_NAME = points_pb2.DESCRIPTOR.services_by_name["PointsService"].full_name


def lot_to_proto(lot: Lot) -> points_pb2.Lot:
    return points_pb2.Lot(
        lot_id=lot.lot_id,
        customer_id=lot.customer_id,
        amount=lot.amount,
        remaining=lot.remaining,
        source=enum_to_proto(points_pb2.PointsSource, PointsSource(lot.source)),
        reference=lot.reference,
        available_at=to_timestamp(lot.available_at),
        expires_at=to_timestamp(lot.expires_at),
        create_time=to_timestamp(lot.created_at),
        status=enum_to_proto(points_pb2.LotStatus, LotStatus(lot.status)),
    )


class PointsServicer(points_pb2_grpc.PointsServiceServicer):
    def __init__(self, ledger: Ledger, idempotency: Idempotency) -> None:
        self._ledger = ledger
        self._idempotency = idempotency

    def CreditPoints(
        self, request: points_pb2.CreditPointsRequest, context: grpc.ServicerContext
    ) -> points_pb2.CreditPointsResponse:
        credit = CreditRequest(
            customer_id=request.customer_id,
            points=request.points,
            source=enum_from_proto(points_pb2.PointsSource, request.source, PointsSource, "source"),
            reference=request.reference,
            pending=request.pending,
            expires_at=optional_timestamp(request, "expires_at"),
            reason=request.reason,
            operator_id=request.operator_id,
        )

        def effect(uow: UnitOfWork) -> points_pb2.CreditPointsResponse:
            return points_pb2.CreditPointsResponse(lot=lot_to_proto(self._ledger.credit(uow, credit)))

        return self._idempotency.run("PointsService/CreditPoints", request, points_pb2.CreditPointsResponse, effect)

    def GetBalance(
        self, request: points_pb2.GetBalanceRequest, context: grpc.ServicerContext
    ) -> points_pb2.GetBalanceResponse:
        balance = self._ledger.balance(request.customer_id, request.expiring_within_days)
        return points_pb2.GetBalanceResponse(
            customer_id=request.customer_id,
            available=balance.available,
            pending=balance.pending,
            held=balance.held,
            expiring=[
                points_pb2.ExpiringPoints(points=points, expires_at=to_timestamp(at)) for at, points in balance.expiring
            ],
        )
