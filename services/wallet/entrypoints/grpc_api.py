"""The WalletService servicer: turns requests into use cases and results into responses.

Mutations that only touch the wallet database run in one `Idempotency.run` transaction. Those
that must ask the acquirer first (card capture, release, refund, the sweeper) answer a replay from
the idempotency store before anything is sent, then ask the acquirer under a key derived from the
request, then commit their effect with the key. Top-ups and card holds record themselves PENDING
with the key first and settle afterwards, so a retry can finish them (see `service_layer`).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from loyalty.common.v1 import payment_pb2
from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from services.wallet.adapters.mechanic_codec import mechanic_from_proto, mechanic_to_proto
from services.wallet.adapters.tables import Hold, InterestAccrual, Refund, StatementEntry, TopUp, Wallet
from services.wallet.domain.cards import looks_like_card_number, validate_card_token
from services.wallet.domain.holds import (
    HoldStatus,
    PaymentMethod,
    RefundDestination,
    RefundStatus,
    TopUpStatus,
    validate_ttl,
)
from services.wallet.domain.ledger import StatementEntryType
from services.wallet.domain.mechanics import InterestBasis, InterestMechanic, Mechanic
from services.wallet.domain.wallets import WalletStatus, currency_of, positive_amount
from services.wallet.service_layer.accounts import Accounts
from services.wallet.service_layer.holds import HOLD_SCOPE, CardCaptureFirst, Holds
from services.wallet.service_layer.interest import Interest
from services.wallet.service_layer.statements import Statements
from services.wallet.service_layer.top_ups import SCOPE as TOP_UP_SCOPE
from services.wallet.service_layer.top_ups import TopUps
from shared.db import UnitOfWork
from shared.errors import InvalidArgument
from shared.idempotency import Idempotency, request_fingerprint, validate_request_id
from shared.outbox import OutboxRelay
from shared.pagination import page_size
from shared.protoconv import (
    enum_from_proto,
    enum_to_proto,
    from_duration,
    from_timestamp,
    keep_fields,
    money,
    optional_timestamp,
    read_mask,
    to_duration,
    to_timestamp,
)
from shared.validation import validate_customer_id

SERVICE_NAME = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name
STATISTICS_PAGE = 1000


def card(token: str, brand: str, last4: str) -> payment_pb2.PaymentCard:
    return payment_pb2.PaymentCard(token=token, brand=brand, last4=last4)


def wallet_to_proto(wallet: Wallet, mechanic: Mechanic | None) -> wallet_pb2.Wallet:
    """The wallet; `mechanic` None leaves it unset (a read mask without it)."""
    message = wallet_pb2.Wallet(
        wallet_id=wallet.wallet_id,
        customer_id=wallet.customer_id,
        balance=money(wallet.balance_minor, wallet.currency),
        held=money(wallet.held_minor, wallet.currency),
        available=money(wallet.balance_minor - wallet.held_minor, wallet.currency),
        status=enum_to_proto(wallet_pb2.WalletStatus, WalletStatus(wallet.status)),
        create_time=to_timestamp(wallet.created_at),
        update_time=to_timestamp(wallet.updated_at),
    )
    if mechanic is not None:
        message.mechanic.CopyFrom(mechanic_to_proto(mechanic))
    return message


def top_up_to_proto(top_up: TopUp) -> wallet_pb2.TopUp:
    message = wallet_pb2.TopUp(
        top_up_id=top_up.top_up_id,
        wallet_id=top_up.wallet_id,
        customer_id=top_up.customer_id,
        amount=money(top_up.amount_minor, top_up.currency),
        status=enum_to_proto(wallet_pb2.TopUpStatus, TopUpStatus(top_up.status)),
        card=card(top_up.card_token, top_up.card_brand, top_up.card_last4),
        failure_reason=top_up.failure_reason,
        create_time=to_timestamp(top_up.created_at),
    )
    if top_up.settled_at is not None:
        message.settle_time.CopyFrom(to_timestamp(top_up.settled_at))
    return message


def hold_to_proto(hold: Hold) -> wallet_pb2.Hold:
    message = wallet_pb2.Hold(
        hold_id=hold.hold_id,
        customer_id=hold.customer_id,
        reference=hold.reference,
        payment_method=enum_to_proto(payment_pb2.PaymentMethod, PaymentMethod(hold.payment_method)),
        amount=money(hold.amount_minor, hold.currency),
        captured=money(hold.captured_minor, hold.currency),
        refunded=money(hold.refunded_minor, hold.currency),
        status=enum_to_proto(wallet_pb2.HoldStatus, HoldStatus(hold.status)),
        expire_time=to_timestamp(hold.expire_at),
        create_time=to_timestamp(hold.created_at),
        update_time=to_timestamp(hold.updated_at),
        wallet_id=hold.wallet_id or "",
    )
    if hold.payment_method == PaymentMethod.CARD:
        message.card.CopyFrom(card(hold.card_token, hold.card_brand, hold.card_last4))
    return message


def refund_to_proto(refund: Refund) -> wallet_pb2.Refund:
    return wallet_pb2.Refund(
        refund_id=refund.refund_id,
        hold_id=refund.hold_id,
        amount=money(refund.amount_minor),
        destination=enum_to_proto(wallet_pb2.RefundDestination, RefundDestination(refund.destination)),
        status=enum_to_proto(wallet_pb2.RefundStatus, RefundStatus(refund.status)),
        reference=refund.reference,
        create_time=to_timestamp(refund.created_at),
    )


def entry_to_proto(entry: StatementEntry) -> wallet_pb2.StatementEntry:
    return wallet_pb2.StatementEntry(
        entry_id=str(entry.id),
        transfer_id=entry.transfer_id,
        type=enum_to_proto(wallet_pb2.StatementEntryType, StatementEntryType(entry.type)),
        amount=money(entry.amount_minor),
        balance_after=money(entry.balance_after_minor),
        reference=entry.reference,
        description=entry.description,
        create_time=to_timestamp(entry.created_at),
    )


def accrual_to_proto(accrual: InterestAccrual) -> wallet_pb2.InterestAccrual:
    mechanic = InterestMechanic(
        apr_bps=accrual.apr_bps,
        basis=InterestBasis(accrual.basis),
        code=accrual.mechanic_code,
        name=accrual.mechanic_name,
    )
    return wallet_pb2.InterestAccrual(
        month=accrual.month,
        wallet_id=accrual.wallet_id,
        customer_id=accrual.customer_id,
        mechanic=mechanic_to_proto(mechanic),
        basis_minor=accrual.basis_minor,
        carry_in_micro_points=accrual.carry_in_micro,
        points=accrual.points,
        carry_out_micro_points=accrual.carry_out_micro,
        post_time=to_timestamp(accrual.posted_at),
    )


def acquirer_key(kind: str, request: object) -> str:
    """The acquirer's idempotency key for a request: its id and a digest of its content, so the
    same request always gets the same key and a different one under a reused id does not."""
    return f"{kind}:{request.request_id}:{request_fingerprint(request)[:16]}"  # type: ignore[attr-defined,arg-type]


def required_id(value: str, field: str) -> str:
    if not value.strip():
        raise InvalidArgument.field(field, "is required", f"{field.upper()}_REQUIRED")
    return value


class WalletServicer(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(
        self,
        accounts: Accounts,
        top_ups: TopUps,
        holds: Holds,
        statements: Statements,
        interest: Interest,
        idempotency: Idempotency,
        relay: OutboxRelay,
    ) -> None:
        self._accounts = accounts
        self._top_ups = top_ups
        self._holds = holds
        self._statements = statements
        self._interest = interest
        self._idempotency = idempotency
        self._relay = relay

    # -- wallets -----------------------------------------------------------------------------------

    def OpenWallet(
        self, request: wallet_pb2.OpenWalletRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.OpenWalletResponse:
        validate_customer_id(request.customer_id)
        mechanic = self._accounts.mechanic_of(request.customer_id)

        def effect(uow: UnitOfWork) -> wallet_pb2.OpenWalletResponse:
            wallet = self._accounts.open(uow, request.customer_id, request.currency_code)
            return wallet_pb2.OpenWalletResponse(wallet=wallet_to_proto(wallet, mechanic))

        return self._idempotency.run("WalletService/OpenWallet", request, wallet_pb2.OpenWalletResponse, effect)

    def GetWallet(
        self, request: wallet_pb2.GetWalletRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.GetWalletResponse:
        fields = read_mask(request.read_mask, wallet_pb2.Wallet.DESCRIPTOR)
        wallet = self._accounts.get(request.customer_id)
        # Promotions is asked for the mechanic only when the caller wants it.
        mechanic = self._accounts.mechanic_of(request.customer_id) if fields is None or "mechanic" in fields else None
        answer = wallet_to_proto(wallet, mechanic)
        keep_fields(answer, fields)
        return wallet_pb2.GetWalletResponse(wallet=answer)

    def UpdateWalletStatus(
        self, request: wallet_pb2.UpdateWalletStatusRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.UpdateWalletStatusResponse:
        validate_customer_id(request.customer_id)
        status = enum_from_proto(wallet_pb2.WalletStatus, request.status, WalletStatus, "status")
        mechanic = self._accounts.mechanic_of(request.customer_id)

        def effect(uow: UnitOfWork) -> wallet_pb2.UpdateWalletStatusResponse:
            wallet = self._accounts.update_status(uow, request.customer_id, status, request.reason, request.operator_id)
            return wallet_pb2.UpdateWalletStatusResponse(wallet=wallet_to_proto(wallet, mechanic))

        return self._idempotency.run(
            "WalletService/UpdateWalletStatus", request, wallet_pb2.UpdateWalletStatusResponse, effect
        )

    def GetLimits(
        self, request: wallet_pb2.GetLimitsRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.GetLimitsResponse:
        if request.customer_id:
            validate_customer_id(request.customer_id)
        view = self._top_ups.limits_for(request.customer_id)
        limits = view.limits
        ttl = to_duration(limits.hold_ttl)
        response = wallet_pb2.GetLimitsResponse(
            min_top_up=money(limits.min_top_up_minor),
            max_top_up=money(limits.max_top_up_minor),
            daily_top_up_limit=money(limits.daily_top_up_minor),
            max_balance=money(limits.max_balance_minor),
            hold_ttl=ttl,
        )
        if view.used_today_minor is not None and view.allowance_minor is not None:
            response.daily_top_up_used.CopyFrom(money(view.used_today_minor))
            response.top_up_allowance.CopyFrom(money(view.allowance_minor))
        return response

    # -- top-ups -----------------------------------------------------------------------------------

    def TopUp(self, request: wallet_pb2.TopUpRequest, context: grpc.ServicerContext) -> wallet_pb2.TopUpResponse:
        token = validate_card_token(request.card_token)  # first: a card number goes no further
        validate_request_id(request.request_id)
        validate_customer_id(request.customer_id)
        amount = positive_amount(request.amount.amount_minor, request.amount.currency_code)
        key = acquirer_key("charge", request)

        def effect(uow: UnitOfWork) -> wallet_pb2.TopUpResponse:
            top_up = self._top_ups.begin(uow, request.customer_id, amount, token, key)
            return wallet_pb2.TopUpResponse(top_up=wallet_pb2.TopUp(top_up_id=top_up.top_up_id))

        # The stored answer names the top-up; its current state is what a retry answers with.
        first = self._idempotency.run(TOP_UP_SCOPE, request, wallet_pb2.TopUpResponse, effect)
        top_up = self._top_ups.settle(first.top_up.top_up_id, request.request_id)
        wallet = self._top_ups.wallet_of(top_up)
        return wallet_pb2.TopUpResponse(
            top_up=top_up_to_proto(top_up),
            wallet=wallet_to_proto(wallet, self._accounts.mechanic_of(request.customer_id)),
        )

    def GetTopUp(
        self, request: wallet_pb2.GetTopUpRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.GetTopUpResponse:
        required_id(request.top_up_id, "top_up_id")
        return wallet_pb2.GetTopUpResponse(top_up=top_up_to_proto(self._top_ups.get(request.top_up_id)))

    # -- holds -------------------------------------------------------------------------------------

    def HoldMoney(
        self, request: wallet_pb2.HoldMoneyRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.HoldMoneyResponse:
        if request.payment_method == payment_pb2.PAYMENT_METHOD_UNSPECIFIED:
            raise InvalidArgument.field("payment_method", "WALLET or CARD is required", "PAYMENT_METHOD_REQUIRED")
        method = enum_from_proto(payment_pb2.PaymentMethod, request.payment_method, PaymentMethod, "payment_method")
        if looks_like_card_number(request.card_token):  # refused whatever the method: never stored or logged
            validate_card_token(request.card_token)
        token = validate_card_token(request.card_token) if method is PaymentMethod.CARD else ""
        validate_request_id(request.request_id)
        validate_customer_id(request.customer_id)
        amount = positive_amount(request.amount.amount_minor, request.amount.currency_code)
        ttl = validate_ttl(
            from_duration(request.ttl, "ttl") if request.HasField("ttl") else None, self._top_ups.limits.hold_ttl
        )
        if method is PaymentMethod.WALLET:

            def hold_wallet(uow: UnitOfWork) -> wallet_pb2.HoldMoneyResponse:
                hold = self._holds.hold_wallet(uow, request.customer_id, amount, request.reference, ttl)
                return wallet_pb2.HoldMoneyResponse(hold=hold_to_proto(hold))

            return self._idempotency.run(HOLD_SCOPE, request, wallet_pb2.HoldMoneyResponse, hold_wallet)

        key = acquirer_key("authorise", request)

        def begin_card(uow: UnitOfWork) -> wallet_pb2.HoldMoneyResponse:
            hold = self._holds.begin_card(uow, request.customer_id, amount, request.reference, ttl, token, key)
            return wallet_pb2.HoldMoneyResponse(hold=wallet_pb2.Hold(hold_id=hold.hold_id))

        first = self._idempotency.run(HOLD_SCOPE, request, wallet_pb2.HoldMoneyResponse, begin_card)
        return wallet_pb2.HoldMoneyResponse(
            hold=hold_to_proto(self._holds.settle_card(first.hold.hold_id, request.request_id))
        )

    def CaptureHold(
        self, request: wallet_pb2.CaptureHoldRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.CaptureHoldResponse:
        """A wallet hold is captured in one transaction with the key. A card hold is found to be
        one under its lock, the acquirer captures it outside any transaction, then a second
        transaction books it (a replay is answered by either transaction before anything else)."""
        scope = "WalletService/CaptureHold"

        def capture(
            amount: int | None, *, card_captured: bool
        ) -> Callable[[UnitOfWork], wallet_pb2.CaptureHoldResponse]:
            def effect(uow: UnitOfWork) -> wallet_pb2.CaptureHoldResponse:
                hold = self._holds.capture(uow, request.hold_id, amount, card_captured=card_captured)
                return wallet_pb2.CaptureHoldResponse(hold=hold_to_proto(hold))

            return effect

        def first(uow: UnitOfWork) -> wallet_pb2.CaptureHoldResponse:
            required_id(request.hold_id, "hold_id")
            requested = (
                positive_amount(request.amount.amount_minor, request.amount.currency_code)
                if request.HasField("amount")
                else None
            )
            return capture(requested, card_captured=False)(uow)

        try:
            return self._idempotency.run(scope, request, wallet_pb2.CaptureHoldResponse, first)
        except CardCaptureFirst as card:
            self._holds.capture_at_acquirer(card)
            return self._idempotency.run(
                scope, request, wallet_pb2.CaptureHoldResponse, capture(card.amount_minor, card_captured=True)
            )

    def ReleaseHold(
        self, request: wallet_pb2.ReleaseHoldRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.ReleaseHoldResponse:
        scope = "WalletService/ReleaseHold"
        replay = self._idempotency.replay(scope, request, wallet_pb2.ReleaseHoldResponse)
        if replay is not None:
            return replay
        required_id(request.hold_id, "hold_id")
        self._holds.prepare_release(request.hold_id)

        def effect(uow: UnitOfWork) -> wallet_pb2.ReleaseHoldResponse:
            hold = self._holds.release(uow, request.hold_id, request.reason or "released by the caller")
            return wallet_pb2.ReleaseHoldResponse(hold=hold_to_proto(hold))

        return self._idempotency.run(scope, request, wallet_pb2.ReleaseHoldResponse, effect)

    def GetHold(self, request: wallet_pb2.GetHoldRequest, context: grpc.ServicerContext) -> wallet_pb2.GetHoldResponse:
        required_id(request.hold_id, "hold_id")
        hold, refunds = self._holds.get_with_refunds(request.hold_id)
        return wallet_pb2.GetHoldResponse(hold=hold_to_proto(hold), refunds=[refund_to_proto(r) for r in refunds])

    def RefundPayment(
        self, request: wallet_pb2.RefundPaymentRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.RefundPaymentResponse:
        scope = "WalletService/RefundPayment"
        replay = self._idempotency.replay(scope, request, wallet_pb2.RefundPaymentResponse)
        if replay is not None:
            return replay
        required_id(request.hold_id, "hold_id")
        amount = positive_amount(request.amount.amount_minor, request.amount.currency_code)
        destination = (
            RefundDestination.ORIGINAL_METHOD
            if request.destination == wallet_pb2.REFUND_DESTINATION_UNSPECIFIED
            else enum_from_proto(wallet_pb2.RefundDestination, request.destination, RefundDestination, "destination")
        )
        self._holds.prepare_refund(request.hold_id, amount, destination, request.request_id)

        def effect(uow: UnitOfWork) -> wallet_pb2.RefundPaymentResponse:
            refund, hold = self._holds.refund(
                uow, request.hold_id, amount, destination, request.reference, request.reason
            )
            return wallet_pb2.RefundPaymentResponse(refund=refund_to_proto(refund), hold=hold_to_proto(hold))

        return self._idempotency.run(scope, request, wallet_pb2.RefundPaymentResponse, effect)

    def ReleaseExpiredHolds(
        self, request: wallet_pb2.ReleaseExpiredHoldsRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.ReleaseExpiredHoldsResponse:
        def sweep() -> wallet_pb2.ReleaseExpiredHoldsResponse:
            released = self._holds.release_expired()
            return wallet_pb2.ReleaseExpiredHoldsResponse(
                holds_released=released.holds, amount_released=money(released.amount_minor)
            )

        return self._idempotency.run_job(
            "WalletService/ReleaseExpiredHolds", request, wallet_pb2.ReleaseExpiredHoldsResponse, sweep
        )

    # -- statement, interest, statistics -----------------------------------------------------------

    def ListStatementEntries(
        self, request: wallet_pb2.ListStatementEntriesRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.ListStatementEntriesResponse:
        size = page_size(request.page_size)
        wallet = self._accounts.get(request.customer_id)
        entries, token = self._statements.entries(
            wallet.wallet_id,
            size,
            request.page_token,
            optional_timestamp(request, "start_time"),
            optional_timestamp(request, "end_time"),
        )
        return wallet_pb2.ListStatementEntriesResponse(
            entries=[entry_to_proto(e) for e in entries], next_page_token=token
        )

    def CalculateYield(
        self, request: wallet_pb2.CalculateYieldRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.CalculateYieldResponse:
        amount = positive_amount(request.amount.amount_minor, request.amount.currency_code)
        if request.HasField("mechanic"):
            mechanic = mechanic_from_proto(request.mechanic)
        elif request.customer_id:
            validate_customer_id(request.customer_id)
            mechanic = self._accounts.mechanic_of(request.customer_id)
        else:
            raise InvalidArgument.field("customer_id", "give a customer or an explicit mechanic", "MECHANIC_REQUIRED")
        if request.monthly_spend.currency_code:
            currency_of(request.monthly_spend.currency_code, "monthly_spend.currency_code")
        months = self._interest.project(
            amount, request.months, mechanic, request.monthly_spend.amount_minor, request.start_month
        )
        return wallet_pb2.CalculateYieldResponse(
            months=[
                wallet_pb2.YieldMonth(
                    month_number=m.number, month=str(m.month), points=m.points, carry_micro_points=m.carry_micro
                )
                for m in months
            ],
            total_points=sum(m.points for m in months),
            mechanic=mechanic_to_proto(mechanic),
        )

    def ListInterestAccruals(
        self, request: wallet_pb2.ListInterestAccrualsRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.ListInterestAccrualsResponse:
        size = page_size(request.page_size)
        wallet = self._accounts.get(request.customer_id)
        accruals, token = self._interest.accruals(wallet.wallet_id, size, request.page_token)
        return wallet_pb2.ListInterestAccrualsResponse(
            accruals=[accrual_to_proto(a) for a in accruals], next_page_token=token
        )

    def PostMonthlyInterest(
        self, request: wallet_pb2.PostMonthlyInterestRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.PostMonthlyInterestResponse:
        def post() -> wallet_pb2.PostMonthlyInterestResponse:
            month = self._interest.ended_month(request.month)
            summary = self._interest.post(month)  # idempotent by itself: (wallet, month) is unique
            return wallet_pb2.PostMonthlyInterestResponse(
                month=str(month),
                wallets_posted=summary.posted,
                wallets_already_posted=summary.already_posted,
                wallets_not_on_interest=summary.not_on_interest,
                points_posted=summary.points,
            )

        response = self._idempotency.run_job(
            "WalletService/PostMonthlyInterest", request, wallet_pb2.PostMonthlyInterestResponse, post
        )
        self._relay.notify()
        return response

    def ListWalletStatistics(
        self, request: wallet_pb2.ListWalletStatisticsRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.ListWalletStatisticsResponse:
        for field in ("start_time", "end_time"):
            if not request.HasField(field):
                raise InvalidArgument.field(field, "is required", "PERIOD_REQUIRED")
        for customer_id in request.customer_ids:
            validate_customer_id(customer_id)
        size = page_size(request.page_size, default=STATISTICS_PAGE)
        rows, token = self._statements.statistics(
            from_timestamp(request.start_time, "start_time"),
            from_timestamp(request.end_time, "end_time"),
            list(request.customer_ids),
            size,
            request.page_token,
        )
        statistics = []
        for row in rows:
            message = wallet_pb2.WalletStatistics(
                customer_id=row.customer_id,
                adopted=row.adopted,
                top_ups=money(row.top_ups_minor),
                net_deposits=money(row.net_deposits_minor),
                average_balance=money(row.average_balance_minor),
                end_balance=money(row.end_balance_minor),
                wallet_payments=money(row.wallet_payments_minor),
            )
            if row.wallet_open_time is not None:
                message.wallet_open_time.CopyFrom(to_timestamp(row.wallet_open_time))
            statistics.append(message)
        return wallet_pb2.ListWalletStatisticsResponse(statistics=statistics, next_page_token=token)
