"""Composition root of the Checkout service."""

from __future__ import annotations

from pathlib import Path

import grpc
from loyalty.checkout.v1 import checkout_pb2_grpc

from services.checkout.adapters.tables import runtime_tables
from services.checkout.entrypoints.grpc_api import SERVICE_NAME, CheckoutServicer
from shared.app import Runtime, ServiceApp
from shared.clock import Clock
from shared.settings import ServiceSettings
from shared.telemetry import Telemetry

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def build(settings: ServiceSettings, *, clock: Clock | None = None, telemetry: Telemetry | None = None) -> ServiceApp:
    runtime = Runtime.create(settings, runtime_tables, clock=clock, telemetry=telemetry)
    servicer = CheckoutServicer()  # type: ignore[abstract]  # RPCs of later issues answer UNIMPLEMENTED

    def register(server: grpc.Server) -> None:
        checkout_pb2_grpc.add_CheckoutServiceServicer_to_server(servicer, server)

    return ServiceApp(runtime, register=register, service_names=[SERVICE_NAME], migrations=MIGRATIONS)
