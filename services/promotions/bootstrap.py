"""Composition root of the Promotions service."""

from __future__ import annotations

from pathlib import Path

import grpc
from loyalty.promotions.v1 import experiments_pb2_grpc, promotions_pb2_grpc

from services.promotions.adapters.tables import runtime_tables
from services.promotions.domain.profile_actions import ProfileRewards
from services.promotions.entrypoints.grpc_api import (
    EXPERIMENTS_SERVICE_NAME,
    SERVICE_NAME,
    ExperimentsServicer,
    PromotionsServicer,
)
from services.promotions.service_layer.profile_rewards import ProfileRewardsService
from shared.app import Runtime, ServiceApp
from shared.clock import Clock
from shared.settings import ServiceSettings
from shared.telemetry import Telemetry

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def build(settings: ServiceSettings, *, clock: Clock | None = None, telemetry: Telemetry | None = None) -> ServiceApp:
    env = settings.env
    rewards = ProfileRewards(
        contacts_updated=env.integer("PROMOTIONS_REWARD_CONTACTS_UPDATED"),
        photo_added=env.integer("PROMOTIONS_REWARD_PHOTO_ADDED"),
        survey_completed=env.integer("PROMOTIONS_REWARD_SURVEY_COMPLETED"),
    )
    runtime = Runtime.create(settings, runtime_tables, clock=clock, telemetry=telemetry)
    servicer = PromotionsServicer(  # type: ignore[abstract]  # RPCs of later issues answer UNIMPLEMENTED
        ProfileRewardsService(rewards, runtime.outbox, runtime.clock), runtime.idempotency, runtime.relay
    )

    experiments = ExperimentsServicer()  # type: ignore[abstract]  # answers UNIMPLEMENTED until issue #8

    def register(server: grpc.Server) -> None:
        promotions_pb2_grpc.add_PromotionsServiceServicer_to_server(servicer, server)
        experiments_pb2_grpc.add_ExperimentsServiceServicer_to_server(experiments, server)

    return ServiceApp(
        runtime, register=register, service_names=[SERVICE_NAME, EXPERIMENTS_SERVICE_NAME], migrations=MIGRATIONS
    )
