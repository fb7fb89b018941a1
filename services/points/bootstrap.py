"""Composition root of the Points service."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
from loyalty.points.v1 import points_pb2_grpc

from services.points.adapters.tables import runtime_tables
from services.points.domain.lots import Lifetimes
from services.points.entrypoints.grpc_api import SERVICE_NAME, PointsServicer
from services.points.service_layer.ledger import Ledger, PointsConfig
from shared.app import Runtime, ServiceApp
from shared.calendar import ProgrammeCalendar
from shared.clock import Clock
from shared.settings import ServiceSettings, SettingsError
from shared.telemetry import Telemetry

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def config_from(settings: ServiceSettings) -> PointsConfig:
    env = settings.env
    try:
        lifetimes = Lifetimes.parse(
            env.integer("POINTS_DEFAULT_EXPIRY_DAYS", minimum=1), env.text("POINTS_EXPIRY_DAYS_BY_SOURCE")
        )
    except ValueError as error:
        raise SettingsError(f"POINTS_EXPIRY_DAYS_BY_SOURCE: {error}") from None
    zone = ProgrammeCalendar(env.text("POINTS_TIME_ZONE"), setting="POINTS_TIME_ZONE").zone
    return PointsConfig(
        lifetimes=lifetimes,
        zone=zone,
        hold_ttl=timedelta(seconds=env.integer("POINTS_HOLD_TTL_SECONDS", minimum=1)),
        job_batch=env.integer("POINTS_JOB_BATCH_SIZE", minimum=1),
        expiry_chunk=env.integer("POINTS_EXPIRY_CHUNK_SIZE", minimum=1),
        expiry_workers=env.integer("POINTS_EXPIRY_WORKERS", minimum=1),
    )


def build(settings: ServiceSettings, *, clock: Clock | None = None, telemetry: Telemetry | None = None) -> ServiceApp:
    config = config_from(settings)
    runtime = Runtime.create(settings, runtime_tables, clock=clock, telemetry=telemetry)
    servicer = PointsServicer(
        Ledger(runtime.db, runtime.clock, config, runtime.telemetry.metrics),
        runtime.idempotency,
        runtime.telemetry.metrics,
    )

    def register(server: grpc.Server) -> None:
        points_pb2_grpc.add_PointsServiceServicer_to_server(servicer, server)

    return ServiceApp(runtime, register=register, service_names=[SERVICE_NAME], migrations=MIGRATIONS)
