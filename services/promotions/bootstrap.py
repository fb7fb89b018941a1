"""Composition root of the Promotions service."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
from loyalty.promotions.v1 import experiments_pb2_grpc, promotions_pb2_grpc

from services.promotions.adapters.statistics_peers import PeerStatistics
from services.promotions.adapters.tables import runtime_tables
from services.promotions.domain.mechanics import InterestBasis, default_interest
from services.promotions.domain.profile_actions import ProfileRewards
from services.promotions.entrypoints.experiments_api import ExperimentsServicer
from services.promotions.entrypoints.grpc_api import EXPERIMENTS_SERVICE_NAME, SERVICE_NAME, PromotionsServicer
from services.promotions.service_layer.catalogue import Catalogue
from services.promotions.service_layer.experiments import Experiments
from services.promotions.service_layer.mechanics import Mechanics
from services.promotions.service_layer.orders import Orders
from services.promotions.service_layer.profile_rewards import ProfileRewardsService
from services.promotions.service_layer.promo_usage import PromoUsage
from shared.app import Runtime, ServiceApp
from shared.calendar import ProgrammeCalendar
from shared.clock import Clock
from shared.errors import DomainError
from shared.settings import ServiceSettings, SettingsError
from shared.telemetry import Telemetry

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def build(settings: ServiceSettings, *, clock: Clock | None = None, telemetry: Telemetry | None = None) -> ServiceApp:
    env = settings.env
    rewards = ProfileRewards(
        contacts_updated=env.integer("PROMOTIONS_REWARD_CONTACTS_UPDATED"),
        photo_added=env.integer("PROMOTIONS_REWARD_PHOTO_ADDED"),
        survey_completed=env.integer("PROMOTIONS_REWARD_SURVEY_COMPLETED"),
    )
    basis_name = env.text("PROMOTIONS_DEFAULT_INTEREST_BASIS").upper()
    if basis_name not in InterestBasis.__members__:
        raise SettingsError(
            f"PROMOTIONS_DEFAULT_INTEREST_BASIS must be AVERAGE_DAILY or MINIMUM_DAILY, got {basis_name!r}"
        )
    try:
        configured = default_interest(env.integer("PROMOTIONS_DEFAULT_APR_BPS"), InterestBasis(basis_name))
    except DomainError as error:
        raise SettingsError(f"PROMOTIONS_DEFAULT_APR_BPS: {error.message}") from None
    calendar = ProgrammeCalendar(env.text("PROMOTIONS_TIME_ZONE"), setting="PROMOTIONS_TIME_ZONE")
    reservation_ttl = timedelta(seconds=env.integer("PROMOTIONS_RESERVATION_TTL_SECONDS", minimum=1))

    runtime = Runtime.create(settings, runtime_tables, clock=clock, telemetry=telemetry)
    mechanics = Mechanics(configured, calendar, runtime.clock)
    servicer = PromotionsServicer(
        database=runtime.db,
        clock=runtime.clock,
        rewards=ProfileRewardsService(rewards, runtime.outbox, runtime.clock),
        catalogue=Catalogue(runtime.clock),
        orders=Orders(mechanics, runtime.outbox, runtime.clock),
        promo=PromoUsage(runtime.outbox, runtime.clock, reservation_ttl),
        mechanics=mechanics,
        idempotency=runtime.idempotency,
        relay=runtime.relay,
    )

    experiments = ExperimentsServicer(
        database=runtime.db,
        clock=runtime.clock,
        experiments=Experiments(runtime.db, mechanics, PeerStatistics(runtime.peers), runtime.clock),
        idempotency=runtime.idempotency,
    )

    def register(server: grpc.Server) -> None:
        promotions_pb2_grpc.add_PromotionsServiceServicer_to_server(servicer, server)
        experiments_pb2_grpc.add_ExperimentsServiceServicer_to_server(experiments, server)

    return ServiceApp(
        runtime, register=register, service_names=[SERVICE_NAME, EXPERIMENTS_SERVICE_NAME], migrations=MIGRATIONS
    )
