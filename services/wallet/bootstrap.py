"""Composition root of the Wallet service."""

from __future__ import annotations

from pathlib import Path

import grpc
from loyalty.wallet.v1 import wallet_pb2_grpc

from services.wallet.adapters.tables import runtime_tables
from services.wallet.domain.mechanics import InterestBasis, default_interest
from services.wallet.entrypoints.grpc_api import SERVICE_NAME, WalletServicer
from services.wallet.service_layer.accounts import Accounts
from shared.app import Runtime, ServiceApp
from shared.clock import Clock
from shared.settings import ServiceSettings, SettingsError
from shared.telemetry import Telemetry

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def build(settings: ServiceSettings, *, clock: Clock | None = None, telemetry: Telemetry | None = None) -> ServiceApp:
    basis_name = settings.env.text("WALLET_DEFAULT_INTEREST_BASIS").upper()
    if basis_name not in InterestBasis.__members__:
        raise SettingsError(f"WALLET_DEFAULT_INTEREST_BASIS must be AVERAGE_DAILY or MINIMUM_DAILY, got {basis_name!r}")
    default = default_interest(settings.env.integer("WALLET_DEFAULT_APR_BPS", minimum=1), InterestBasis(basis_name))
    runtime = Runtime.create(settings, runtime_tables, clock=clock, telemetry=telemetry)
    servicer = WalletServicer(Accounts(runtime.db, runtime.clock, default), runtime.idempotency)  # type: ignore[abstract]  # RPCs of later issues answer UNIMPLEMENTED

    def register(server: grpc.Server) -> None:
        wallet_pb2_grpc.add_WalletServiceServicer_to_server(servicer, server)

    return ServiceApp(runtime, register=register, service_names=[SERVICE_NAME], migrations=MIGRATIONS)
