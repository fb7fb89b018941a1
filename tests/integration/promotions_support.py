"""A thin client over the PromotionsService stub for the promotions tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from loyalty.common.v1 import mechanic_pb2, money_pb2, payment_pb2
from loyalty.promotions.v1 import promotions_pb2 as pb
from loyalty.promotions.v1 import promotions_pb2_grpc

from shared.protoconv import to_timestamp
from tests.clients import rid

WALLET = payment_pb2.PAYMENT_METHOD_WALLET
CARD = payment_pb2.PAYMENT_METHOD_CARD


def rub(roubles: int, kopecks: int = 0) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=roubles * 100 + kopecks, currency_code="RUB")


def line(line_id: str, category: str, amount_rub: int, points_used: int = 0, *, kopecks: int = 0) -> pb.OrderLine:
    """A line of `amount_rub` roubles of which `points_used` roubles were paid with points."""
    amount = amount_rub * 100 + kopecks
    return pb.OrderLine(
        line_id=line_id,
        sku=line_id,
        category=category,
        quantity=1,
        amount=money_pb2.Money(amount_minor=amount, currency_code="RUB"),
        money_amount=money_pb2.Money(amount_minor=amount - points_used * 100, currency_code="RUB"),
    )


def ts(at: datetime) -> Any:
    return to_timestamp(at)


class PromotionsClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = promotions_pb2_grpc.PromotionsServiceStub(channel)

    # rules
    def create_rule(self, **fields: Any) -> pb.EarningRule:
        return self.stub.CreateEarningRule(
            pb.CreateEarningRuleRequest(request_id=rid(), rule=pb.EarningRule(**fields)), timeout=10
        ).rule

    def category_rate(self, category: str, bps: int) -> pb.EarningRule:
        return self.create_rule(
            name=f"{category} rate", type=pb.EARNING_RULE_TYPE_CATEGORY_RATE, category=category, rate_bps=bps
        )

    def tier(self, from_rub: int, bps: int) -> pb.EarningRule:
        return self.create_rule(
            name=f"Orders from {from_rub}", type=pb.EARNING_RULE_TYPE_ORDER_AMOUNT_TIER, rate_bps=bps,
            min_order_amount=rub(from_rub),
        )  # fmt: skip

    def update_rule(self, rule: pb.EarningRule, *paths: str) -> pb.EarningRule:
        return self.stub.UpdateEarningRule(
            pb.UpdateEarningRuleRequest(request_id=rid(), rule=rule, update_mask=FieldMask(paths=list(paths))),
            timeout=10,
        ).rule

    def end_rule(self, rule_id: str, at: datetime | None = None) -> pb.EarningRule:
        request = pb.EndEarningRuleRequest(request_id=rid(), rule_id=rule_id)
        if at is not None:
            request.end_time.CopyFrom(ts(at))
        return self.stub.EndEarningRule(request, timeout=10).rule

    def rules(self, page_size: int = 0, token: str = "", *statuses: int) -> pb.ListEarningRulesResponse:
        return self.stub.ListEarningRules(
            pb.ListEarningRulesRequest(page_size=page_size, page_token=token, statuses=statuses),  # type: ignore[arg-type]
            timeout=10,
        )

    # campaigns
    def create_campaign(self, start: datetime, end: datetime, **fields: Any) -> pb.Campaign:
        fields.setdefault("name", "Campaign")
        campaign = pb.Campaign(start_time=ts(start), end_time=ts(end), **fields)
        return self.stub.CreateCampaign(
            pb.CreateCampaignRequest(request_id=rid(), campaign=campaign), timeout=10
        ).campaign

    def campaign(self, campaign_id: str) -> pb.Campaign:
        return self.stub.GetCampaign(pb.GetCampaignRequest(campaign_id=campaign_id), timeout=10).campaign

    # promo codes
    def create_code(self, code: str, **fields: Any) -> pb.PromoCode:
        return self.stub.CreatePromoCode(
            pb.CreatePromoCodeRequest(request_id=rid(), promo_code=pb.PromoCode(code=code, **fields)), timeout=10
        ).promo_code

    def code(self, code: str) -> pb.PromoCode:
        return self.stub.GetPromoCode(pb.GetPromoCodeRequest(code=code), timeout=10).promo_code

    def validate(self, customer: str, code: str, *lines: pb.OrderLine) -> pb.ValidatePromoCodeResponse:
        return self.stub.ValidatePromoCode(
            pb.ValidatePromoCodeRequest(customer_id=customer, code=code, lines=lines), timeout=10
        )

    def reserve(
        self, customer: str, code: str, order_id: str, *lines: pb.OrderLine, ttl: timedelta | None = None
    ) -> pb.PromoCodeReservation:
        request = pb.ReservePromoCodeRequest(
            request_id=rid(), customer_id=customer, code=code, order_id=order_id, lines=lines
        )
        if ttl is not None:
            request.ttl.CopyFrom(Duration(seconds=int(ttl.total_seconds())))
        return self.stub.ReservePromoCode(request, timeout=10).reservation

    def confirm(self, reservation_id: str) -> pb.PromoCodeReservation:
        return self.stub.ConfirmPromoCodeReservation(
            pb.ConfirmPromoCodeReservationRequest(request_id=rid(), reservation_id=reservation_id), timeout=10
        ).reservation

    def release(self, reservation_id: str) -> pb.PromoCodeReservation:
        return self.stub.ReleasePromoCodeReservation(
            pb.ReleasePromoCodeReservationRequest(request_id=rid(), reservation_id=reservation_id, reason="failed"),
            timeout=10,
        ).reservation

    def release_expired(self) -> int:
        return self.stub.ReleaseExpiredReservations(
            pb.ReleaseExpiredReservationsRequest(request_id=rid()), timeout=30
        ).reservations_released

    # orders
    def evaluate(
        self,
        customer: str,
        *lines: pb.OrderLine,
        method: Any = CARD,
        balance: money_pb2.Money | None = None,
        promo_code: str = "",
    ) -> pb.OrderEvaluation:
        request = pb.EvaluateOrderRequest(
            customer_id=customer,
            lines=lines,
            payment_method=method,
            promo_code=promo_code,
        )
        if balance is not None:
            request.wallet_balance.CopyFrom(balance)
        return self.stub.EvaluateOrder(request, timeout=10).evaluation

    def accrue(
        self,
        customer: str,
        order_id: str,
        *lines: pb.OrderLine,
        method: Any = CARD,
        balance: money_pb2.Money | None = None,
        request_id: str | None = None,
    ) -> pb.OrderEvaluation:
        request = pb.AccrueOrderPointsRequest(
            request_id=request_id or rid(), customer_id=customer, order_id=order_id, lines=lines,
            payment_method=method,
        )  # fmt: skip
        if balance is not None:
            request.wallet_balance.CopyFrom(balance)
        return self.stub.AccrueOrderPoints(request, timeout=30).evaluation

    # mechanics
    def set_default(self, mechanic: mechanic_pb2.Mechanic, at: datetime | None = None) -> pb.SetDefaultMechanicResponse:
        request = pb.SetDefaultMechanicRequest(request_id=rid(), mechanic=mechanic, reason="test", operator_id="op-1")
        if at is not None:
            request.effective_time.CopyFrom(ts(at))
        return self.stub.SetDefaultMechanic(request, timeout=10)

    def mechanic(self, customer: str, month: str = "") -> pb.GetCustomerMechanicResponse:
        request = pb.GetCustomerMechanicRequest(customer_id=customer)
        if month:
            request.month = month
        return self.stub.GetCustomerMechanic(request, timeout=10)


def cashback(*tiers: tuple[int, int], cap: int = 0) -> mechanic_pb2.Mechanic:
    """Cashback tiers as (from roubles, rate bps)."""
    return mechanic_pb2.Mechanic(
        code="cashback-test",
        name="Cashback",
        cashback=mechanic_pb2.CashbackMechanic(
            tiers=[mechanic_pb2.CashbackTier(min_balance_minor=r * 100, rate_bps=b) for r, b in tiers],
            monthly_cap_points=cap,
        ),
    )


def interest(apr_bps: int) -> mechanic_pb2.Mechanic:
    return mechanic_pb2.Mechanic(
        interest=mechanic_pb2.InterestMechanic(apr_bps=apr_bps, basis=mechanic_pb2.BALANCE_BASIS_AVERAGE_DAILY)
    )


def award_sum(evaluation: pb.OrderEvaluation) -> int:
    return sum(a.points for ln in evaluation.lines for a in ln.awards) + sum(a.points for a in evaluation.order_awards)
