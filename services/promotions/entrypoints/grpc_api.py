"""The PromotionsService servicer: turns requests into use cases and results into responses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from loyalty.common.v1 import mechanic_pb2, payment_pb2
from loyalty.promotions.v1 import experiments_pb2, promotions_pb2, promotions_pb2_grpc

from services.promotions.adapters.tables import CampaignRow, EarningRuleRow, PromoCodeRow
from services.promotions.domain.catalogue import CampaignSpec, CodeSpec, RuleSpec, normalise_code
from services.promotions.domain.profile_actions import ProfileAction
from services.promotions.entrypoints.codec import (
    CAMPAIGN_FIELDS,
    CODE_FIELDS,
    REWARD_PATHS,
    RULE_FIELDS,
    SEGMENT_PATHS,
    apply_mask,
    campaign_spec_from,
    campaign_to_proto,
    code_spec_from,
    code_to_proto,
    evaluation_to_proto,
    lines_from,
    mask_paths,
    mechanic_from_proto,
    mechanic_to_proto,
    reservation_to_proto,
    rule_spec_from,
    rule_to_proto,
    statuses_from,
)
from services.promotions.service_layer.catalogue import (
    Catalogue,
    campaign_status,
    code_status,
    page_of,
    rule_status,
)
from services.promotions.service_layer.mechanics import Mechanics
from services.promotions.service_layer.orders import OrderInput, Orders
from services.promotions.service_layer.profile_rewards import ProfileRewardsService
from services.promotions.service_layer.promo_usage import PromoUsage, code_state, refusal_error
from shared.clock import Clock
from shared.db import Database, UnitOfWork
from shared.errors import InvalidArgument
from shared.idempotency import Idempotency
from shared.outbox import OutboxRelay
from shared.pagination import page_size
from shared.protoconv import (
    enum_from_proto,
    enum_to_proto,
    from_duration,
    money_minor,
    optional_timestamp,
    to_timestamp,
)
from shared.validation import validate_customer_id

R = TypeVar("R", bound=Message)

SERVICE_NAME = promotions_pb2.DESCRIPTOR.services_by_name["PromotionsService"].full_name
EXPERIMENTS_SERVICE_NAME = experiments_pb2.DESCRIPTOR.services_by_name["ExperimentsService"].full_name
_MECHANIC_ORIGINS = {
    "DEFAULT": promotions_pb2.MECHANIC_ORIGIN_DEFAULT,
    "EXPERIMENT": promotions_pb2.MECHANIC_ORIGIN_EXPERIMENT,
}


class PromotionsServicer(promotions_pb2_grpc.PromotionsServiceServicer):
    def __init__(
        self,
        *,
        database: Database,
        clock: Clock,
        rewards: ProfileRewardsService,
        catalogue: Catalogue,
        orders: Orders,
        promo: PromoUsage,
        mechanics: Mechanics,
        idempotency: Idempotency,
        relay: OutboxRelay,
    ) -> None:
        self._db = database
        self._clock = clock
        self._rewards = rewards
        self._catalogue = catalogue
        self._orders = orders
        self._promo = promo
        self._mechanics = mechanics
        self._idempotency = idempotency
        self._relay = relay

    def _run(self, method: str, request: Message, response: type[R], effect: Callable[[UnitOfWork], R]) -> R:
        return self._idempotency.run(f"PromotionsService/{method}", request, response, effect)

    # --- earning rules --------------------------------------------------------------------

    def _rule(self, row: object) -> promotions_pb2.EarningRule:
        return rule_to_proto(row, rule_status(row, self._clock.now()))  # type: ignore[arg-type]

    def CreateEarningRule(
        self, request: promotions_pb2.CreateEarningRuleRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.CreateEarningRuleResponse:
        def effect(uow: UnitOfWork) -> promotions_pb2.CreateEarningRuleResponse:
            spec = rule_spec_from(request.rule, self._clock.now())
            return promotions_pb2.CreateEarningRuleResponse(rule=self._rule(self._catalogue.create_rule(uow, spec)))

        return self._run("CreateEarningRule", request, promotions_pb2.CreateEarningRuleResponse, effect)

    def GetEarningRule(
        self, request: promotions_pb2.GetEarningRuleRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.GetEarningRuleResponse:
        with self._db.unit_of_work() as uow:
            return promotions_pb2.GetEarningRuleResponse(rule=self._rule(self._catalogue.rule(uow, request.rule_id)))

    def ListEarningRules(
        self, request: promotions_pb2.ListEarningRulesRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.ListEarningRulesResponse:
        wanted, size, now = statuses_from(request.statuses), page_size(request.page_size), self._clock.now()
        with self._db.unit_of_work() as uow:
            rows, token = page_of(
                uow, EarningRuleRow, "rule_id", "earning_rules", size, request.page_token,
                lambda row: not wanted or rule_status(row, now) in wanted,
            )  # fmt: skip
            return promotions_pb2.ListEarningRulesResponse(
                rules=[self._rule(row) for row in rows], next_page_token=token
            )

    def UpdateEarningRule(
        self, request: promotions_pb2.UpdateEarningRuleRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.UpdateEarningRuleResponse:
        paths = mask_paths(request.update_mask, set(RULE_FIELDS))

        def change(current: RuleSpec) -> RuleSpec:
            new = rule_spec_from(replace_type(request.rule, current), current.start_at)
            return apply_mask(current, new, paths, RULE_FIELDS)

        def effect(uow: UnitOfWork) -> promotions_pb2.UpdateEarningRuleResponse:
            row = self._catalogue.update_rule(uow, request.rule.rule_id, change)
            return promotions_pb2.UpdateEarningRuleResponse(rule=self._rule(row))

        return self._run("UpdateEarningRule", request, promotions_pb2.UpdateEarningRuleResponse, effect)

    def EndEarningRule(
        self, request: promotions_pb2.EndEarningRuleRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.EndEarningRuleResponse:
        def effect(uow: UnitOfWork) -> promotions_pb2.EndEarningRuleResponse:
            row = self._catalogue.end_rule(uow, request.rule_id, optional_timestamp(request, "end_time"))
            return promotions_pb2.EndEarningRuleResponse(rule=self._rule(row))

        return self._run("EndEarningRule", request, promotions_pb2.EndEarningRuleResponse, effect)

    # --- campaigns ------------------------------------------------------------------------

    def _campaign(self, uow: UnitOfWork, row: object) -> promotions_pb2.Campaign:
        spec = self._catalogue.campaign_spec(uow, row)  # type: ignore[arg-type]
        return campaign_to_proto(row, spec, campaign_status(row, self._clock.now()))  # type: ignore[arg-type]

    def CreateCampaign(
        self, request: promotions_pb2.CreateCampaignRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.CreateCampaignResponse:
        def effect(uow: UnitOfWork) -> promotions_pb2.CreateCampaignResponse:
            row = self._catalogue.create_campaign(uow, campaign_spec_from(request.campaign))
            return promotions_pb2.CreateCampaignResponse(campaign=self._campaign(uow, row))

        return self._run("CreateCampaign", request, promotions_pb2.CreateCampaignResponse, effect)

    def GetCampaign(
        self, request: promotions_pb2.GetCampaignRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.GetCampaignResponse:
        with self._db.unit_of_work() as uow:
            row = self._catalogue.campaign(uow, request.campaign_id)
            return promotions_pb2.GetCampaignResponse(campaign=self._campaign(uow, row))

    def ListCampaigns(
        self, request: promotions_pb2.ListCampaignsRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.ListCampaignsResponse:
        wanted, size, now = statuses_from(request.statuses), page_size(request.page_size), self._clock.now()
        with self._db.unit_of_work() as uow:
            rows, token = page_of(
                uow, CampaignRow, "campaign_id", "campaigns", size, request.page_token,
                lambda row: not wanted or campaign_status(row, now) in wanted,
            )  # fmt: skip
            return promotions_pb2.ListCampaignsResponse(
                campaigns=[self._campaign(uow, row) for row in rows], next_page_token=token
            )

    def UpdateCampaign(
        self, request: promotions_pb2.UpdateCampaignRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.UpdateCampaignResponse:
        paths = mask_paths(request.update_mask, set(CAMPAIGN_FIELDS) | SEGMENT_PATHS)
        if paths & {"multiplier_bps", "bonus_points"}:
            paths |= {"multiplier_bps", "bonus_points"}  # the reward is a oneof: setting one clears the other
        new = campaign_spec_from(request.campaign)

        def change(current: CampaignSpec) -> CampaignSpec:
            changed = apply_mask(current, new, paths - SEGMENT_PATHS, CAMPAIGN_FIELDS)
            if "segment" in paths:
                changed = replace(
                    changed, segment_kind=new.segment_kind, customers=new.customers, condition=new.condition
                )
            return changed

        def effect(uow: UnitOfWork) -> promotions_pb2.UpdateCampaignResponse:
            row = self._catalogue.update_campaign(uow, request.campaign.campaign_id, change, "segment" in paths)
            return promotions_pb2.UpdateCampaignResponse(campaign=self._campaign(uow, row))

        return self._run("UpdateCampaign", request, promotions_pb2.UpdateCampaignResponse, effect)

    def EndCampaign(
        self, request: promotions_pb2.EndCampaignRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.EndCampaignResponse:
        def effect(uow: UnitOfWork) -> promotions_pb2.EndCampaignResponse:
            row = self._catalogue.end_campaign(uow, request.campaign_id, optional_timestamp(request, "end_time"))
            return promotions_pb2.EndCampaignResponse(campaign=self._campaign(uow, row))

        return self._run("EndCampaign", request, promotions_pb2.EndCampaignResponse, effect)

    # --- promo codes ----------------------------------------------------------------------

    def _code(self, row: object) -> promotions_pb2.PromoCode:
        return code_to_proto(row, code_status(row, self._clock.now()))  # type: ignore[arg-type]

    def CreatePromoCode(
        self, request: promotions_pb2.CreatePromoCodeRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.CreatePromoCodeResponse:
        def effect(uow: UnitOfWork) -> promotions_pb2.CreatePromoCodeResponse:
            row = self._catalogue.create_code(uow, code_spec_from(request.promo_code, self._clock.now()))
            return promotions_pb2.CreatePromoCodeResponse(promo_code=self._code(row))

        return self._run("CreatePromoCode", request, promotions_pb2.CreatePromoCodeResponse, effect)

    def GetPromoCode(
        self, request: promotions_pb2.GetPromoCodeRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.GetPromoCodeResponse:
        with self._db.unit_of_work() as uow:
            row = self._catalogue.code(uow, normalise_code(request.code))
            return promotions_pb2.GetPromoCodeResponse(promo_code=self._code(row))

    def ListPromoCodes(
        self, request: promotions_pb2.ListPromoCodesRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.ListPromoCodesResponse:
        wanted, size, now = statuses_from(request.statuses), page_size(request.page_size), self._clock.now()
        with self._db.unit_of_work() as uow:
            rows, token = page_of(
                uow, PromoCodeRow, "code", "promo_codes", size, request.page_token,
                lambda row: not wanted or code_status(row, now) in wanted,
            )  # fmt: skip
            return promotions_pb2.ListPromoCodesResponse(
                promo_codes=[self._code(row) for row in rows], next_page_token=token
            )

    def UpdatePromoCode(
        self, request: promotions_pb2.UpdatePromoCodeRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.UpdatePromoCodeResponse:
        paths = mask_paths(request.update_mask, set(CODE_FIELDS))
        if paths & REWARD_PATHS:
            paths |= REWARD_PATHS

        def change(current: CodeSpec) -> CodeSpec:
            new = code_spec_from(request.promo_code, current.start_at)
            return apply_mask(current, new, paths, CODE_FIELDS)

        def effect(uow: UnitOfWork) -> promotions_pb2.UpdatePromoCodeResponse:
            row = self._catalogue.update_code(uow, normalise_code(request.promo_code.code), change)
            return promotions_pb2.UpdatePromoCodeResponse(promo_code=self._code(row))

        return self._run("UpdatePromoCode", request, promotions_pb2.UpdatePromoCodeResponse, effect)

    def EndPromoCode(
        self, request: promotions_pb2.EndPromoCodeRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.EndPromoCodeResponse:
        def effect(uow: UnitOfWork) -> promotions_pb2.EndPromoCodeResponse:
            row = self._catalogue.end_code(uow, normalise_code(request.code), optional_timestamp(request, "end_time"))
            return promotions_pb2.EndPromoCodeResponse(promo_code=self._code(row))

        return self._run("EndPromoCode", request, promotions_pb2.EndPromoCodeResponse, effect)

    # --- using promo codes ----------------------------------------------------------------

    def ValidatePromoCode(
        self, request: promotions_pb2.ValidatePromoCodeRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.ValidatePromoCodeResponse:
        lines = lines_from(request.lines) if request.lines else None
        with self._db.unit_of_work() as uow:
            checked = self._promo.check(uow, request.customer_id, request.code, lines)
            response = promotions_pb2.ValidatePromoCodeResponse(
                valid=checked.refusal is None,
                reason=checked.refusal.value if checked.refusal is not None else "",
                points=checked.points,
            )
            if checked.row is not None:
                response.promo_code.CopyFrom(self._code(checked.row))
            return response

    def ReservePromoCode(
        self, request: promotions_pb2.ReservePromoCodeRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.ReservePromoCodeResponse:
        lines = lines_from(request.lines)
        ttl = from_duration(request.ttl, "ttl") if request.HasField("ttl") else None

        def effect(uow: UnitOfWork) -> promotions_pb2.ReservePromoCodeResponse:
            row = self._promo.reserve(uow, request.customer_id, request.code, request.order_id, lines, ttl)
            return promotions_pb2.ReservePromoCodeResponse(reservation=reservation_to_proto(row))

        return self._run("ReservePromoCode", request, promotions_pb2.ReservePromoCodeResponse, effect)

    def ConfirmPromoCodeReservation(
        self, request: promotions_pb2.ConfirmPromoCodeReservationRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.ConfirmPromoCodeReservationResponse:
        def effect(uow: UnitOfWork) -> promotions_pb2.ConfirmPromoCodeReservationResponse:
            row = self._promo.confirm(uow, request.reservation_id)
            return promotions_pb2.ConfirmPromoCodeReservationResponse(reservation=reservation_to_proto(row))

        response = self._run(
            "ConfirmPromoCodeReservation", request, promotions_pb2.ConfirmPromoCodeReservationResponse, effect
        )
        self._relay.notify()
        return response

    def ReleasePromoCodeReservation(
        self, request: promotions_pb2.ReleasePromoCodeReservationRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.ReleasePromoCodeReservationResponse:
        if len(request.reason) > 500:
            raise InvalidArgument.field("reason", "must be at most 500 characters", "TEXT_TOO_LONG")

        def effect(uow: UnitOfWork) -> promotions_pb2.ReleasePromoCodeReservationResponse:
            row = self._promo.release(uow, request.reservation_id)
            return promotions_pb2.ReleasePromoCodeReservationResponse(reservation=reservation_to_proto(row))

        return self._run(
            "ReleasePromoCodeReservation", request, promotions_pb2.ReleasePromoCodeReservationResponse, effect
        )

    def ReleaseExpiredReservations(
        self, request: promotions_pb2.ReleaseExpiredReservationsRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.ReleaseExpiredReservationsResponse:
        def work() -> promotions_pb2.ReleaseExpiredReservationsResponse:
            return promotions_pb2.ReleaseExpiredReservationsResponse(
                reservations_released=self._promo.release_expired(self._db)
            )

        return self._idempotency.run_job(
            "PromotionsService/ReleaseExpiredReservations",
            request,
            promotions_pb2.ReleaseExpiredReservationsResponse,
            work,
        )

    # --- orders ---------------------------------------------------------------------------

    @staticmethod
    def _order(
        customer_id: str,
        order_id: str,
        lines: object,
        method: int,
        balance: object,
    ) -> OrderInput:
        if method not in (
            payment_pb2.PAYMENT_METHOD_UNSPECIFIED,
            payment_pb2.PAYMENT_METHOD_WALLET,
            payment_pb2.PAYMENT_METHOD_CARD,
        ):
            raise InvalidArgument.field("payment_method", f"unknown value {method}", "INVALID_ENUM_VALUE")
        return OrderInput(
            customer_id=customer_id,
            order_id=order_id,
            lines=lines_from(lines),  # type: ignore[arg-type]
            wallet_payment=method == payment_pb2.PAYMENT_METHOD_WALLET,
            wallet_balance_minor=money_minor(balance, "wallet_balance"),  # type: ignore[arg-type]
        )

    def EvaluateOrder(
        self, request: promotions_pb2.EvaluateOrderRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.EvaluateOrderResponse:
        order = self._order(
            request.customer_id, request.order_id, request.lines, request.payment_method, request.wallet_balance
        )
        with self._db.unit_of_work() as uow:
            reward = None
            if request.promo_code.strip():
                checked = self._promo.check(uow, order.customer_id, request.promo_code, order.lines)
                if checked.refusal is not None:
                    raise refusal_error(
                        checked.refusal, normalise_code(request.promo_code), not_found_is_not_found=False
                    )
                assert checked.row is not None
                reward = code_state(checked.row).reward()
            evaluated = self._orders.evaluate(uow, order, reward)
        return promotions_pb2.EvaluateOrderResponse(
            evaluation=evaluation_to_proto(evaluated.evaluation, evaluated.mechanic)
        )

    def AccrueOrderPoints(
        self, request: promotions_pb2.AccrueOrderPointsRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.AccrueOrderPointsResponse:
        order = self._order(
            request.customer_id, request.order_id, request.lines, request.payment_method, request.wallet_balance
        )

        def effect(uow: UnitOfWork) -> promotions_pb2.AccrueOrderPointsResponse:
            evaluated = self._orders.accrue(uow, order)
            return promotions_pb2.AccrueOrderPointsResponse(
                evaluation=evaluation_to_proto(evaluated.evaluation, evaluated.mechanic)
            )

        response = self._run("AccrueOrderPoints", request, promotions_pb2.AccrueOrderPointsResponse, effect)
        self._relay.notify()
        return response

    # --- profile actions ------------------------------------------------------------------

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

    # --- mechanics ------------------------------------------------------------------------

    def GetCustomerMechanic(
        self, request: promotions_pb2.GetCustomerMechanicRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.GetCustomerMechanicResponse:
        validate_customer_id(request.customer_id)
        at = self._instant(request)
        with self._db.read() as session:
            found = self._mechanics.mechanic_for(session, request.customer_id, at)
        return promotions_pb2.GetCustomerMechanicResponse(
            mechanic=mechanic_to_proto(found.mechanic),
            origin=_MECHANIC_ORIGINS[found.origin],
            experiment_id=found.experiment_id,
            variant_id=found.variant_id,
        )

    def BatchGetCustomerMechanics(
        self, request: promotions_pb2.BatchGetCustomerMechanicsRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.BatchGetCustomerMechanicsResponse:
        at = self._instant(request)
        with self._db.unit_of_work() as uow:
            found = self._mechanics.mechanics_for(uow, list(request.customer_ids), at)
        # A batch holds a handful of distinct mechanics (the default, the variants of an
        # experiment): each is converted once. `found` holds them all, so their ids stay theirs.
        converted: dict[int, mechanic_pb2.Mechanic] = {}
        for m in found:
            if id(m.mechanic) not in converted:
                converted[id(m.mechanic)] = mechanic_to_proto(m.mechanic)
        return promotions_pb2.BatchGetCustomerMechanicsResponse(
            mechanics=[
                promotions_pb2.CustomerMechanic(
                    customer_id=m.customer_id,
                    mechanic=converted[id(m.mechanic)],
                    origin=_MECHANIC_ORIGINS[m.origin],
                    experiment_id=m.experiment_id,
                    variant_id=m.variant_id,
                )
                for m in found
            ]
        )

    def _instant(
        self, request: promotions_pb2.GetCustomerMechanicRequest | promotions_pb2.BatchGetCustomerMechanicsRequest
    ) -> datetime:
        which = request.WhichOneof("at")
        if which == "month":
            return self._mechanics.instant_of(None, request.month)
        return self._mechanics.instant_of(optional_timestamp(request, "time"), None)

    def GetDefaultMechanic(
        self, request: promotions_pb2.GetDefaultMechanicRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.GetDefaultMechanicResponse:
        at = optional_timestamp(request, "time") or self._clock.now()
        with self._db.unit_of_work() as uow:
            found = self._mechanics.default_at(uow, at)
        response = promotions_pb2.GetDefaultMechanicResponse(
            mechanic=mechanic_to_proto(found.mechanic), experiment_id=found.experiment_id
        )
        if found.effective_at is not None:
            response.effective_time.CopyFrom(to_timestamp(found.effective_at))
        return response

    def SetDefaultMechanic(
        self, request: promotions_pb2.SetDefaultMechanicRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.SetDefaultMechanicResponse:
        if not request.HasField("mechanic"):
            raise InvalidArgument.field("mechanic", "is required", "MECHANIC_REQUIRED")
        mechanic = mechanic_from_proto(request.mechanic)

        def effect(uow: UnitOfWork) -> promotions_pb2.SetDefaultMechanicResponse:
            row = self._mechanics.set_default(
                uow, mechanic, optional_timestamp(request, "effective_time"), request.reason, request.operator_id
            )
            return promotions_pb2.SetDefaultMechanicResponse(
                mechanic=mechanic_to_proto(mechanic), effective_time=to_timestamp(row.effective_at)
            )

        return self._run("SetDefaultMechanic", request, promotions_pb2.SetDefaultMechanicResponse, effect)


def replace_type(message: promotions_pb2.EarningRule, current: RuleSpec) -> promotions_pb2.EarningRule:
    """The update's rule with the stored type, so the spec converts (the type never changes)."""
    copy = promotions_pb2.EarningRule()
    copy.CopyFrom(message)
    copy.type = enum_to_proto(promotions_pb2.EarningRuleType, current.type)
    return copy
