"""Composition root of the Wallet service."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
from loyalty.wallet.v1 import wallet_pb2_grpc

from services.wallet.adapters.acquirer_simulator import SimulatedAcquirer
from services.wallet.adapters.promotions_peer import MechanicLookup
from services.wallet.adapters.tables import runtime_tables
from services.wallet.domain.limits import Limits
from services.wallet.domain.mechanics import InterestBasis, default_interest
from services.wallet.entrypoints.grpc_api import SERVICE_NAME, WalletServicer
from services.wallet.service_layer.accounts import Accounts
from services.wallet.service_layer.holds import Holds
from services.wallet.service_layer.interest import Interest
from services.wallet.service_layer.statements import Statements
from services.wallet.service_layer.top_ups import TopUps
from shared.app import Runtime, ServiceApp
from shared.calendar import ProgrammeCalendar
from shared.clock import Clock
from shared.settings import Env, ServiceSettings, SettingsError
from shared.telemetry import Telemetry

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def limits_from(env: Env) -> Limits:
    try:
        return Limits(
            min_top_up_minor=env.integer("WALLET_MIN_TOP_UP_MINOR", minimum=1),
            max_top_up_minor=env.integer("WALLET_MAX_TOP_UP_MINOR", minimum=1),
            daily_top_up_minor=env.integer("WALLET_DAILY_TOP_UP_LIMIT_MINOR", minimum=1),
            max_balance_minor=env.integer("WALLET_MAX_BALANCE_MINOR", minimum=1),
            hold_ttl=timedelta(seconds=env.integer("WALLET_HOLD_TTL_SECONDS", minimum=1)),
        )
    except ValueError as error:
        if isinstance(error, SettingsError):
            raise
        raise SettingsError(f"WALLET_MIN_TOP_UP_MINOR and WALLET_MAX_TOP_UP_MINOR: {error}") from None


def build(settings: ServiceSettings, *, clock: Clock | None = None, telemetry: Telemetry | None = None) -> ServiceApp:
    env = settings.env
    basis_name = env.text("WALLET_DEFAULT_INTEREST_BASIS").upper()
    if basis_name not in InterestBasis.__members__:
        raise SettingsError(f"WALLET_DEFAULT_INTEREST_BASIS must be AVERAGE_DAILY or MINIMUM_DAILY, got {basis_name!r}")
    default = default_interest(env.integer("WALLET_DEFAULT_APR_BPS", minimum=1), InterestBasis(basis_name))
    limits = limits_from(env)
    calendar = ProgrammeCalendar(env.text("WALLET_TIME_ZONE"), setting="WALLET_TIME_ZONE")
    runtime = Runtime.create(settings, runtime_tables, clock=clock, telemetry=telemetry)
    db, now = runtime.db, runtime.clock
    acquirer = SimulatedAcquirer(db, now)
    mechanics = MechanicLookup(runtime.peers, default)
    accounts = Accounts(db, now, mechanics)
    servicer = WalletServicer(
        accounts,
        TopUps(db, now, calendar, limits, acquirer, accounts, runtime.idempotency, runtime.telemetry.metrics),
        Holds(db, now, acquirer, runtime.idempotency),
        Statements(db, calendar),
        Interest(db, now, calendar, mechanics, runtime.outbox, env.integer("WALLET_INTEREST_CHUNK_SIZE", minimum=1)),
        runtime.idempotency,
        runtime.relay,
    )

    def register(server: grpc.Server) -> None:
        wallet_pb2_grpc.add_WalletServiceServicer_to_server(servicer, server)

    return ServiceApp(runtime, register=register, service_names=[SERVICE_NAME], migrations=MIGRATIONS)
