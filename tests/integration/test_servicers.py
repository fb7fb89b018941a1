"""Servicer-level tests with grpcio-testing: no network, the real servicer and database."""

from __future__ import annotations

from datetime import timedelta

import grpc
import grpc_testing
from loyalty.points.v1 import points_pb2

from services.points.adapters.tables import runtime_tables
from services.points.entrypoints.grpc_api import PointsServicer
from services.points.service_layer.ledger import Ledger
from shared.app import Runtime
from shared.clock import ManualClock
from shared.migrations import upgrade
from tests.harness import Databases, service_settings

SERVICE = points_pb2.DESCRIPTOR.services_by_name["PointsService"]


def test_credit_then_balance_through_the_servicer(databases: Databases, clock: ManualClock) -> None:
    from services.points.bootstrap import MIGRATIONS, config_from

    settings = service_settings("points", databases.new("points"), {})
    runtime = Runtime.create(settings, runtime_tables, clock=clock)
    upgrade(runtime.db, MIGRATIONS)
    servicer = PointsServicer(Ledger(runtime.db, clock, config_from(settings)), runtime.idempotency)
    server = grpc_testing.server_from_dictionary({SERVICE: servicer}, grpc_testing.strict_real_time())

    def invoke(method: str, request: object) -> tuple[object, grpc.StatusCode]:
        rpc = server.invoke_unary_unary(SERVICE.methods_by_name[method], (), request, None)
        response, _, code, _ = rpc.termination()
        return response, code

    response, code = invoke(
        "CreditPoints",
        points_pb2.CreditPointsRequest(
            request_id="r-1",
            customer_id="c-1",
            points=300,
            source=points_pb2.POINTS_SOURCE_SURVEY,
            reference="survey:1",
        ),
    )
    assert code is grpc.StatusCode.OK
    assert isinstance(response, points_pb2.CreditPointsResponse)
    assert response.lot.expires_at.ToDatetime() - response.lot.create_time.ToDatetime() == timedelta(days=365)
    balance, code = invoke("GetBalance", points_pb2.GetBalanceRequest(customer_id="c-1", expiring_within_days=400))
    assert code is grpc.StatusCode.OK
    assert isinstance(balance, points_pb2.GetBalanceResponse)
    assert (balance.available, balance.pending, [e.points for e in balance.expiring]) == (300, 0, [300])
    runtime.db.dispose()
