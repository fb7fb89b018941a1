"""A small client for Wallet tests: one method per RPC, money in kopecks."""

from __future__ import annotations

import itertools
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from loyalty.common.v1 import money_pb2, payment_pb2
from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from sqlalchemy import text

from shared.errors import DomainError
from tests.clients import refused
from tests.harness import RunningService

_ids = itertools.count(1)


def rub(amount_minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount_minor, currency_code="RUB")


def new_id(prefix: str = "req") -> str:
    return f"{prefix}-{next(_ids)}"


def error_of(call: Any, *args: Any, **kwargs: Any) -> DomainError:
    """The domain error a call fails with (fails the test if it succeeds)."""
    return refused(lambda: call(*args, **kwargs))


class WalletClient:
    def __init__(self, service: RunningService | None = None, channel: grpc.Channel | None = None) -> None:
        """Over a service started in-process, or over any channel (a service run as a process)."""
        self.service = service
        if channel is None:
            assert service is not None, "a service or a channel"
            channel = service.channel()
        self.stub = wallet_pb2_grpc.WalletServiceStub(channel)

    def open(self, customer: str, request_id: str | None = None) -> wallet_pb2.Wallet:
        request = wallet_pb2.OpenWalletRequest(request_id=request_id or new_id("open"), customer_id=customer)
        return self.stub.OpenWallet(request).wallet

    def wallet(self, customer: str) -> wallet_pb2.Wallet:
        return self.stub.GetWallet(wallet_pb2.GetWalletRequest(customer_id=customer)).wallet

    def balance(self, customer: str) -> int:
        return int(self.wallet(customer).balance.amount_minor)

    def top_up(
        self, customer: str, amount_minor: int, token: str = "tok_ok", request_id: str | None = None
    ) -> wallet_pb2.TopUpResponse:
        return self.stub.TopUp(
            wallet_pb2.TopUpRequest(
                request_id=request_id or new_id("top-up"),
                customer_id=customer,
                amount=rub(amount_minor),
                card_token=token,
            )
        )

    def hold(
        self,
        customer: str,
        amount_minor: int,
        *,
        reference: str = "order-1",
        method: payment_pb2.PaymentMethod.ValueType = payment_pb2.PAYMENT_METHOD_WALLET,
        token: str = "",
        ttl_seconds: int | None = None,
        request_id: str | None = None,
    ) -> wallet_pb2.Hold:
        request = wallet_pb2.HoldMoneyRequest(
            request_id=request_id or new_id("hold"),
            customer_id=customer,
            amount=rub(amount_minor),
            reference=reference,
            payment_method=method,
            card_token=token,
        )
        if ttl_seconds is not None:
            request.ttl.CopyFrom(Duration(seconds=ttl_seconds))
        return self.stub.HoldMoney(request).hold

    def capture(self, hold_id: str, amount_minor: int | None = None, request_id: str | None = None) -> wallet_pb2.Hold:
        request = wallet_pb2.CaptureHoldRequest(request_id=request_id or new_id("capture"), hold_id=hold_id)
        if amount_minor is not None:
            request.amount.CopyFrom(rub(amount_minor))
        return self.stub.CaptureHold(request).hold

    def release(self, hold_id: str, request_id: str | None = None) -> wallet_pb2.Hold:
        return self.stub.ReleaseHold(
            wallet_pb2.ReleaseHoldRequest(request_id=request_id or new_id("release"), hold_id=hold_id, reason="test")
        ).hold

    def refund(
        self,
        hold_id: str,
        amount_minor: int,
        destination: wallet_pb2.RefundDestination.ValueType = wallet_pb2.REFUND_DESTINATION_UNSPECIFIED,
        request_id: str | None = None,
    ) -> wallet_pb2.RefundPaymentResponse:
        return self.stub.RefundPayment(
            wallet_pb2.RefundPaymentRequest(
                request_id=request_id or new_id("refund"),
                hold_id=hold_id,
                amount=rub(amount_minor),
                destination=destination,
                reference="return-1",
                reason="returned",
            )
        )

    def statement(
        self, customer: str, page_size: int = 0, page_token: str = ""
    ) -> wallet_pb2.ListStatementEntriesResponse:
        return self.stub.ListStatementEntries(
            wallet_pb2.ListStatementEntriesRequest(customer_id=customer, page_size=page_size, page_token=page_token)
        )

    def post_interest(self, month: str, request_id: str | None = None) -> wallet_pb2.PostMonthlyInterestResponse:
        return self.stub.PostMonthlyInterest(
            wallet_pb2.PostMonthlyInterestRequest(request_id=request_id or new_id("interest"), month=month)
        )

    def accruals(self, customer: str) -> list[wallet_pb2.InterestAccrual]:
        response = self.stub.ListInterestAccruals(
            wallet_pb2.ListInterestAccrualsRequest(customer_id=customer, page_size=1000)
        )
        return list(response.accruals)

    def sql(self, statement: str, **params: Any) -> list[tuple[Any, ...]]:
        """Read the wallet's own database (tests only)."""
        assert self.service is not None, "an in-process service"
        with self.service.app.runtime.db.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(statement), params)]
