"""What Checkout asks of Wallet, Points and Promotions: one method per call, each with a deadline
(through `shared.peers`) and, for mutations, the request id the saga derives from the order, so
a retry or a replay after a crash never causes a second effect."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from google.protobuf.field_mask_pb2 import FieldMask
from loyalty.common.v1 import payment_pb2
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from loyalty.promotions.v1 import promotions_pb2, promotions_pb2_grpc
from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from shared.db import UnitOfWork
from shared.errors import NotFound
from shared.outbox import Outbox
from shared.peers import Peers
from shared.protoconv import method_path, money, to_duration, to_timestamp

ACTIVATE_PENDING_POINTS = method_path(points_pb2.DESCRIPTOR, "PointsService", "ActivatePendingPoints")
BALANCE_ONLY = FieldMask(paths=["balance"])


class PeerServices:
    """The three services a checkout talks to."""

    def __init__(self, peers: Peers, *, hold_ttl: timedelta) -> None:
        self._peers = peers
        self._hold_ttl = hold_ttl

    @property
    def _points(self) -> points_pb2_grpc.PointsServiceStub:
        stub: points_pb2_grpc.PointsServiceStub = self._peers.stub("points", points_pb2_grpc.PointsServiceStub)
        return stub

    @property
    def _wallet(self) -> wallet_pb2_grpc.WalletServiceStub:
        stub: wallet_pb2_grpc.WalletServiceStub = self._peers.stub("wallet", wallet_pb2_grpc.WalletServiceStub)
        return stub

    @property
    def _promotions(self) -> promotions_pb2_grpc.PromotionsServiceStub:
        stub: promotions_pb2_grpc.PromotionsServiceStub = self._peers.stub(
            "promotions", promotions_pb2_grpc.PromotionsServiceStub
        )
        return stub

    # --- reads ----------------------------------------------------------------------------

    def available_points(self, customer_id: str) -> int:
        answer = self._peers.call(
            self._points.GetBalance, points_pb2.GetBalanceRequest(customer_id=customer_id), idempotent=True
        )
        return answer.available

    def wallet_balance(self, customer_id: str) -> int:
        """The wallet balance, which picks the cashback tier; 0 without a wallet. Only the balance
        is asked for, so the Wallet does not look the customer's mechanic up in Promotions."""
        request = wallet_pb2.GetWalletRequest(customer_id=customer_id, read_mask=BALANCE_ONLY)
        try:
            answer = self._peers.call(self._wallet.GetWallet, request, idempotent=True)
        except NotFound:
            return 0
        return answer.wallet.balance.amount_minor

    def points_and_wallet_balance(self, customer_id: str) -> tuple[int, int]:
        """`available_points` and `wallet_balance` asked at the same time."""
        return self._peers.both(lambda: self.available_points(customer_id), lambda: self.wallet_balance(customer_id))

    def evaluate(
        self,
        *,
        customer_id: str,
        order_id: str,
        lines: Sequence[promotions_pb2.OrderLine],
        payment_method: payment_pb2.PaymentMethod.ValueType,
        wallet_balance_minor: int,
        promo_code: str,
    ) -> promotions_pb2.OrderEvaluation:
        answer = self._peers.call(
            self._promotions.EvaluateOrder,
            promotions_pb2.EvaluateOrderRequest(
                customer_id=customer_id,
                order_id=order_id,
                lines=lines,
                payment_method=payment_method,
                wallet_balance=money(wallet_balance_minor),
                promo_code=promo_code,
            ),
            idempotent=True,
        )
        return answer.evaluation

    def money_hold(self, hold_id: str) -> wallet_pb2.Hold:
        return self._peers.call(self._wallet.GetHold, wallet_pb2.GetHoldRequest(hold_id=hold_id), idempotent=True).hold

    def points_hold(self, hold_id: str) -> points_pb2.Hold:
        return self._peers.call(self._points.GetHold, points_pb2.GetHoldRequest(hold_id=hold_id), idempotent=True).hold

    # --- the order saga -------------------------------------------------------------------

    def reserve_code(
        self,
        request_id: str,
        *,
        customer_id: str,
        code: str,
        order_id: str,
        lines: Sequence[promotions_pb2.OrderLine],
    ) -> promotions_pb2.PromoCodeReservation:
        request = promotions_pb2.ReservePromoCodeRequest(
            request_id=request_id, customer_id=customer_id, code=code, order_id=order_id, lines=lines
        )
        return self._peers.call(self._promotions.ReservePromoCode, request, idempotent=True).reservation

    def confirm_code(self, request_id: str, reservation_id: str) -> None:
        request = promotions_pb2.ConfirmPromoCodeReservationRequest(
            request_id=request_id, reservation_id=reservation_id
        )
        self._peers.call(self._promotions.ConfirmPromoCodeReservation, request, idempotent=True)

    def release_code(self, request_id: str, reservation_id: str, reason: str) -> None:
        request = promotions_pb2.ReleasePromoCodeReservationRequest(
            request_id=request_id, reservation_id=reservation_id, reason=reason
        )
        self._peers.call(self._promotions.ReleasePromoCodeReservation, request, idempotent=True)

    def hold_points(self, request_id: str, *, customer_id: str, points: int, reference: str) -> points_pb2.Hold:
        request = points_pb2.HoldPointsRequest(
            request_id=request_id,
            customer_id=customer_id,
            points=points,
            reference=reference,
            ttl=to_duration(self._hold_ttl),
        )
        return self._peers.call(self._points.HoldPoints, request, idempotent=True).hold

    def capture_points(self, request_id: str, hold_id: str, points: int) -> None:
        request = points_pb2.CaptureHoldRequest(request_id=request_id, hold_id=hold_id, points=points)
        self._peers.call(self._points.CaptureHold, request, idempotent=True)

    def release_points(self, request_id: str, hold_id: str, reason: str) -> None:
        request = points_pb2.ReleaseHoldRequest(request_id=request_id, hold_id=hold_id, reason=reason)
        self._peers.call(self._points.ReleaseHold, request, idempotent=True)

    def return_points(self, request_id: str, *, hold_id: str, points: int, reference: str, reason: str) -> int:
        request = points_pb2.ReturnPointsRequest(
            request_id=request_id, hold_id=hold_id, points=points, reference=reference, reason=reason
        )
        return self._peers.call(self._points.ReturnPoints, request, idempotent=True).points_returned

    def hold_money(
        self,
        request_id: str,
        *,
        customer_id: str,
        amount_minor: int,
        reference: str,
        payment_method: payment_pb2.PaymentMethod.ValueType,
        card_token: str,
    ) -> wallet_pb2.Hold:
        request = wallet_pb2.HoldMoneyRequest(
            request_id=request_id,
            customer_id=customer_id,
            amount=money(amount_minor),
            reference=reference,
            payment_method=payment_method,
            card_token=card_token,
            ttl=to_duration(self._hold_ttl),
        )
        return self._peers.call(self._wallet.HoldMoney, request, idempotent=True).hold

    def capture_money(self, request_id: str, hold_id: str, amount_minor: int) -> None:
        request = wallet_pb2.CaptureHoldRequest(request_id=request_id, hold_id=hold_id, amount=money(amount_minor))
        self._peers.call(self._wallet.CaptureHold, request, idempotent=True)

    def release_money(self, request_id: str, hold_id: str, reason: str) -> None:
        request = wallet_pb2.ReleaseHoldRequest(request_id=request_id, hold_id=hold_id, reason=reason)
        self._peers.call(self._wallet.ReleaseHold, request, idempotent=True)

    def refund_money(self, request_id: str, *, hold_id: str, amount_minor: int, reference: str, reason: str) -> None:
        request = wallet_pb2.RefundPaymentRequest(
            request_id=request_id,
            hold_id=hold_id,
            amount=money(amount_minor),
            destination=wallet_pb2.REFUND_DESTINATION_ORIGINAL_METHOD,
            reference=reference,
            reason=reason,
        )
        self._peers.call(self._wallet.RefundPayment, request, idempotent=True)

    def accrue(
        self,
        request_id: str,
        *,
        customer_id: str,
        order_id: str,
        lines: Sequence[promotions_pb2.OrderLine],
        payment_method: payment_pb2.PaymentMethod.ValueType,
        wallet_balance_minor: int,
    ) -> promotions_pb2.OrderEvaluation:
        request = promotions_pb2.AccrueOrderPointsRequest(
            request_id=request_id,
            customer_id=customer_id,
            order_id=order_id,
            lines=lines,
            payment_method=payment_method,
            wallet_balance=money(wallet_balance_minor),
        )
        return self._peers.call(self._promotions.AccrueOrderPoints, request, idempotent=True).evaluation

    def cancel_pending(self, request_id: str, *, customer_id: str, reference: str, reason: str) -> None:
        request = points_pb2.CancelPendingPointsRequest(
            request_id=request_id, customer_id=customer_id, reference=reference, reason=reason
        )
        self._peers.call(self._points.CancelPendingPoints, request, idempotent=True)

    def reverse_points(self, request_id: str, *, customer_id: str, reference: str, points: int, reason: str) -> None:
        request = points_pb2.ReversePointsRequest(
            request_id=request_id, customer_id=customer_id, reference=reference, points=points, reason=reason
        )
        self._peers.call(self._points.ReversePoints, request, idempotent=True)


def enqueue_activation(
    outbox: Outbox, uow: UnitOfWork, *, order_id: str, customer_id: str, available_at: datetime
) -> None:
    """Schedule, through the outbox, the order's pending points to become available when its
    return window has passed."""
    request = points_pb2.ActivatePendingPointsRequest(
        request_id=f"{order_id}:activate",
        customer_id=customer_id,
        reference=order_id,
        available_at=to_timestamp(available_at),
    )
    outbox.enqueue(uow, peer="points", method=ACTIVATE_PENDING_POINTS, request=request)
