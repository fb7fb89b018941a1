"""Composition root of the Points service."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
from loyalty.points.v1 import points_pb2_grpc

from services.points.adapters.tables import runtime_tables
from services.points.entrypoints.grpc_api import SERVICE_NAME, PointsServicer
from services.points.service_layer.ledger import Ledger
from shared.app import Runtime, ServiceApp
from shared.clock import Clock
from shared.settings import ServiceSettings
from shared.telemetry import Telemetry

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def build(settings: ServiceSettings, *, clock: Clock | None = None, telemetry: Telemetry | None = None) -> ServiceApp:
    runtime = Runtime.create(settings, runtime_tables, clock=clock, telemetry=telemetry)
    lifetime = timedelta(days=settings.env.integer("POINTS_DEFAULT_EXPIRY_DAYS", minimum=1))
    servicer = PointsServicer(Ledger(runtime.db, runtime.clock, lifetime), runtime.idempotency)  # type: ignore[abstract]  # RPCs of later issues answer UNIMPLEMENTED

    def register(server: grpc.Server) -> None:
        points_pb2_grpc.add_PointsServiceServicer_to_server(servicer, server)

    return ServiceApp(runtime, register=register, service_names=[SERVICE_NAME], migrations=MIGRATIONS)
