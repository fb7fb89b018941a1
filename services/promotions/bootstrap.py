"""Composition root of the Promotions service."""

from __future__ import annotations

from pathlib import Path

import grpc

from loyalty.promotions.v1 import promotions_pb2_grpc
from services.promotions.adapters.tables import runtime_tables
from services.promotions.domain.profile_actions import ProfileRewards
from services.promotions.entrypoints.grpc_api import SERVICE_NAME, PromotionsServicer
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
    servicer = PromotionsServicer(
        ProfileRewardsService(rewards, runtime.outbox, runtime.clock), runtime.idempotency, runtime.relay
    )

    def register(server: grpc.Server) -> None:
        promotions_pb2_grpc.add_PromotionsServiceServicer_to_server(servicer, server)

    return ServiceApp(runtime, register=register, service_names=[SERVICE_NAME], migrations=MIGRATIONS)
