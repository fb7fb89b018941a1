"""Composition root of the Checkout service."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
from loyalty.checkout.v1 import checkout_pb2_grpc

from services.checkout.adapters.peers import PeerServices
from services.checkout.adapters.tables import runtime_tables
from services.checkout.domain.pricing import PointsPolicy
from services.checkout.entrypoints.grpc_api import SERVICE_NAME, CheckoutServicer
from services.checkout.service_layer.orders import Orders, SagaConfig
from services.checkout.service_layer.pricing import Catalogue, Pricer
from shared.app import Runtime, ServiceApp
from shared.clock import Clock
from shared.settings import ServiceSettings, SettingsError
from shared.telemetry import Telemetry
from shared.workers import PeriodicWorker

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def policy_from(settings: ServiceSettings) -> PointsPolicy:
    env = settings.env
    excluded = frozenset(
        category.strip() for category in env.text("CHECKOUT_POINTS_EXCLUDED_CATEGORIES").split(",") if category.strip()
    )
    try:
        return PointsPolicy(
            min_money_per_unit_minor=env.integer("CHECKOUT_MIN_MONEY_PER_UNIT_MINOR", minimum=1),
            max_points_share_bps=env.integer("CHECKOUT_MAX_POINTS_SHARE_BPS"),
            excluded_categories=excluded,
            return_window=timedelta(days=env.integer("CHECKOUT_RETURN_WINDOW_DAYS")),
        )
    except ValueError as error:
        raise SettingsError(f"checkout points policy: {error}") from None


def build(settings: ServiceSettings, *, clock: Clock | None = None, telemetry: Telemetry | None = None) -> ServiceApp:
    env = settings.env
    policy = policy_from(settings)
    config = SagaConfig(
        lease=timedelta(seconds=env.integer("CHECKOUT_SAGA_LEASE_SECONDS", minimum=1)),
        stuck_for=timedelta(seconds=env.integer("CHECKOUT_RECOVERY_STUCK_SECONDS")),
        give_up_after=timedelta(seconds=env.integer("CHECKOUT_SAGA_TIMEOUT_SECONDS", minimum=1)),
        return_window=policy.return_window,
    )
    hold_ttl = timedelta(seconds=env.integer("CHECKOUT_HOLD_TTL_SECONDS", minimum=1))
    runtime = Runtime.create(settings, runtime_tables, clock=clock, telemetry=telemetry)
    peers = PeerServices(runtime.peers, hold_ttl=hold_ttl)
    pricer = Pricer(runtime.db, peers, policy)
    orders = Orders(
        database=runtime.db,
        pricer=pricer,
        peers=peers,
        outbox=runtime.outbox,
        idempotency=runtime.idempotency,
        clock=runtime.clock,
        config=config,
        metrics=runtime.telemetry.metrics,
    )
    servicer = CheckoutServicer(
        database=runtime.db,
        clock=runtime.clock,
        catalogue=Catalogue(runtime.clock),
        pricer=pricer,
        orders=orders,
        idempotency=runtime.idempotency,
    )
    recovery = PeriodicWorker(
        "checkout-recovery", env.integer("CHECKOUT_RECOVERY_INTERVAL_SECONDS"), lambda: orders.recover()
    )

    def register(server: grpc.Server) -> None:
        checkout_pb2_grpc.add_CheckoutServiceServicer_to_server(servicer, server)

    return ServiceApp(
        runtime, register=register, service_names=[SERVICE_NAME], migrations=MIGRATIONS, workers=[recovery]
    )
