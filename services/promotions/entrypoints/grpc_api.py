"""The PromotionsService servicer: turns requests into use cases and results into responses."""

from __future__ import annotations

import grpc
from loyalty.promotions.v1 import experiments_pb2, experiments_pb2_grpc, promotions_pb2, promotions_pb2_grpc

from services.promotions.domain.profile_actions import ProfileAction
from services.promotions.service_layer.profile_rewards import ProfileRewardsService
from shared.db import UnitOfWork
from shared.idempotency import Idempotency
from shared.outbox import OutboxRelay
from shared.protoconv import enum_from_proto

SERVICE_NAME = promotions_pb2.DESCRIPTOR.services_by_name["PromotionsService"].full_name
EXPERIMENTS_SERVICE_NAME = experiments_pb2.DESCRIPTOR.services_by_name["ExperimentsService"].full_name


class PromotionsServicer(promotions_pb2_grpc.PromotionsServiceServicer):
    def __init__(self, rewards: ProfileRewardsService, idempotency: Idempotency, relay: OutboxRelay) -> None:
        self._rewards = rewards
        self._idempotency = idempotency
        self._relay = relay

    def RecordProfileAction(
        self, request: promotions_pb2.RecordProfileActionRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.RecordProfileActionResponse:
        action = enum_from_proto(promotions_pb2.ProfileActionType, request.action, ProfileAction, "action")

        def effect(uow: UnitOfWork) -> promotions_pb2.RecordProfileActionResponse:
            outcome = self._rewards.record(uow, request.customer_id, action, request.survey_id)
            return promotions_pb2.RecordProfileActionResponse(
                points_awarded=outcome.points_awarded, already_rewarded=outcome.already_rewarded
            )

        response = self._idempotency.run(
            "PromotionsService/RecordProfileAction", request, promotions_pb2.RecordProfileActionResponse, effect
        )
        self._relay.notify()
        return response


class ExperimentsServicer(experiments_pb2_grpc.ExperimentsServiceServicer):
    """Served by the Promotions process on its database; every RPC is UNIMPLEMENTED until the
    experiments issue lands."""
