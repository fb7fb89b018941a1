"""Wallets and card top-ups through the running Wallet service."""

from __future__ import annotations

import logging
from datetime import timedelta

import grpc
import pytest
from loyalty.common.v1 import mechanic_pb2
from loyalty.wallet.v1 import wallet_pb2

from shared.clock import ManualClock
from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tests.harness import Harness
from tests.integration.wallet_support import WalletClient, error_of, new_id, rub


@pytest.fixture
def wallet(harness: Harness) -> WalletClient:
    return WalletClient(harness.start("wallet"))


def charges(wallet: WalletClient) -> list[tuple[object, ...]]:
    return wallet.sql("SELECT key, approved FROM acquirer_simulator_operations WHERE kind = 'CHARGE'")


def test_a_wallet_is_opened_explicitly_once_and_shows_the_default_mechanic(wallet: WalletClient) -> None:
    opened = wallet.open("c-1", request_id="open-1")
    assert opened.balance.amount_minor == 0 and opened.status == wallet_pb2.WALLET_STATUS_ACTIVE
    assert wallet.open("c-1", request_id="open-1") == opened  # replay
    error = error_of(wallet.open, "c-1", request_id="open-2")
    assert isinstance(error, AlreadyExists) and error.reason == "WALLET_ALREADY_EXISTS"
    shown = wallet.wallet("c-1")
    # Promotions is not running here: the configured default, interest 12 % on the average daily balance.
    assert shown.mechanic.interest.apr_bps == 1200
    assert shown.mechanic.interest.basis == mechanic_pb2.BALANCE_BASIS_AVERAGE_DAILY
    error = error_of(wallet.wallet, "nobody")
    assert isinstance(error, NotFound) and error.reason == "WALLET_NOT_FOUND"


def test_the_first_top_up_opens_the_wallet_and_is_in_the_statement(wallet: WalletClient) -> None:
    response = wallet.top_up("c-1", 150_000)
    assert response.top_up.status == wallet_pb2.TOP_UP_STATUS_SUCCEEDED
    assert (response.top_up.card.brand, response.top_up.card.last4) == ("VISA", "4242")
    assert response.wallet.balance.amount_minor == 150_000
    assert response.wallet.available.amount_minor == 150_000
    [entry] = wallet.statement("c-1").entries
    assert entry.type == wallet_pb2.STATEMENT_ENTRY_TYPE_TOP_UP
    assert (entry.amount.amount_minor, entry.balance_after.amount_minor) == (150_000, 150_000)
    assert entry.reference == response.top_up.top_up_id
    assert entry.description == "Top-up from VISA *4242"
    fetched = wallet.stub.GetTopUp(wallet_pb2.GetTopUpRequest(top_up_id=response.top_up.top_up_id)).top_up
    assert fetched == response.top_up


def test_a_replay_changes_nothing_and_a_reused_id_is_refused(wallet: WalletClient) -> None:
    first = wallet.top_up("c-1", 100_000, request_id="t-1")
    assert wallet.top_up("c-1", 100_000, request_id="t-1").top_up == first.top_up
    error = error_of(wallet.top_up, "c-1", 200_000, request_id="t-1")
    assert isinstance(error, AlreadyExists) and error.reason == "IDEMPOTENCY_KEY_REUSED"
    assert wallet.balance("c-1") == 100_000
    assert len(charges(wallet)) == 1


def test_a_declined_card_leaves_no_top_up_and_no_balance_change(wallet: WalletClient) -> None:
    wallet.top_up("c-1", 100_000)
    error = error_of(wallet.top_up, "c-1", 50_000, "tok_declined", request_id="t-declined")
    assert isinstance(error, FailedPrecondition) and error.reason == "CARD_DECLINED"
    assert wallet.balance("c-1") == 100_000
    assert len(wallet.statement("c-1").entries) == 1
    assert wallet.sql("SELECT count(*) FROM top_ups")[0][0] == 1
    # Nothing happened, so the same id may be retried, and the acquirer answers as before.
    again = error_of(wallet.top_up, "c-1", 50_000, "tok_declined", request_id="t-declined")
    assert again.reason == "CARD_DECLINED"
    assert wallet.balance("c-1") == 100_000


def test_a_timed_out_top_up_is_pending_and_a_retry_settles_it_exactly_once(harness: Harness) -> None:
    service = harness.start("wallet")
    wallet = WalletClient(service)
    wallet.top_up("c-1", 100_000)
    pending = wallet.top_up("c-1", 70_000, "tok_timeout", request_id="t-slow")
    assert pending.top_up.status == wallet_pb2.TOP_UP_STATUS_PENDING
    assert not pending.top_up.HasField("settle_time")
    assert pending.wallet.balance.amount_minor == 100_000  # untouched while pending
    assert wallet.stub.GetTopUp(wallet_pb2.GetTopUpRequest(top_up_id=pending.top_up.top_up_id)).top_up.status == (
        wallet_pb2.TOP_UP_STATUS_PENDING
    )

    # The wallet restarts; the acquirer (which did charge the card) and the pending top-up survive.
    url = service.database_url
    harness.stop("wallet")
    wallet = WalletClient(harness.start("wallet", database_url=url))

    settled = wallet.top_up("c-1", 70_000, "tok_timeout", request_id="t-slow")
    assert settled.top_up.status == wallet_pb2.TOP_UP_STATUS_SUCCEEDED
    assert settled.top_up.top_up_id == pending.top_up.top_up_id
    assert settled.wallet.balance.amount_minor == 170_000
    again = wallet.top_up("c-1", 70_000, "tok_timeout", request_id="t-slow")
    assert again.top_up == settled.top_up and again.wallet.balance.amount_minor == 170_000
    assert len(charges(wallet)) == 2  # one charge per top-up, never a second one
    assert [e.amount.amount_minor for e in wallet.statement("c-1").entries] == [70_000, 100_000]


def test_a_timed_out_top_up_the_acquirer_declined_settles_as_declined(wallet: WalletClient) -> None:
    pending = wallet.top_up("c-1", 70_000, "tok_timeout_declined", request_id="t-slow")
    assert pending.top_up.status == wallet_pb2.TOP_UP_STATUS_PENDING
    settled = wallet.top_up("c-1", 70_000, "tok_timeout_declined", request_id="t-slow")
    assert settled.top_up.status == wallet_pb2.TOP_UP_STATUS_DECLINED
    assert settled.top_up.failure_reason == "CARD_DECLINED"
    assert settled.wallet.balance.amount_minor == 0
    assert wallet.top_up("c-1", 70_000, "tok_timeout_declined", request_id="t-slow").top_up == settled.top_up
    assert wallet.statement("c-1").entries == []


def test_a_card_number_is_refused_and_never_stored_or_logged(
    wallet: WalletClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    number = "4111 1111 1111 1111"
    for token in (number, number.replace(" ", ""), "tok_4111111111111111"):
        error = error_of(wallet.top_up, "c-1", 100_000, token)
        assert isinstance(error, InvalidArgument) and error.reason == "CARD_NUMBER_NOT_ALLOWED"
        assert "4111" not in error.message
    hold = error_of(
        wallet.hold,
        "c-1",
        10_000,
        method=2,
        token="4111111111111111",
    )
    assert hold.reason == "CARD_NUMBER_NOT_ALLOWED"
    assert error_of(wallet.hold, "c-1", 10_000, token="4111111111111111").reason == "CARD_NUMBER_NOT_ALLOWED"
    assert "41111111" not in caplog.text and "4111 1111" not in caplog.text
    dump = repr(
        [
            wallet.sql(f"SELECT * FROM {table}")
            for table in ("top_ups", "holds", "idempotency_keys", "acquirer_simulator_operations", "wallets")
        ]
    )
    assert "4111" not in dump
    assert wallet.sql("SELECT count(*) FROM wallets")[0][0] == 0  # changed nothing


def test_limits_each_refuse_with_their_own_reason(harness: Harness, clock: ManualClock) -> None:
    wallet = WalletClient(
        harness.start(
            "wallet",
            WALLET_MIN_TOP_UP_MINOR="1000",
            WALLET_MAX_TOP_UP_MINOR="50000",
            WALLET_DAILY_TOP_UP_LIMIT_MINOR="80000",
            WALLET_MAX_BALANCE_MINOR="120000",
        )
    )
    assert error_of(wallet.top_up, "c-1", 999).reason == "TOP_UP_BELOW_MINIMUM"
    assert error_of(wallet.top_up, "c-1", 50_001).reason == "TOP_UP_LIMIT_EXCEEDED"
    wallet.top_up("c-1", 50_000)
    assert error_of(wallet.top_up, "c-1", 30_001).reason == "DAILY_TOP_UP_LIMIT_EXCEEDED"
    # A pending top-up counts: it may still succeed.
    assert wallet.top_up("c-1", 20_000, "tok_timeout").top_up.status == wallet_pb2.TOP_UP_STATUS_PENDING
    assert error_of(wallet.top_up, "c-1", 10_001).reason == "DAILY_TOP_UP_LIMIT_EXCEEDED"
    limits = wallet.stub.GetLimits(wallet_pb2.GetLimitsRequest(customer_id="c-1"))
    assert (limits.min_top_up.amount_minor, limits.max_top_up.amount_minor) == (1_000, 50_000)
    assert (limits.daily_top_up_limit.amount_minor, limits.max_balance.amount_minor) == (80_000, 120_000)
    assert (limits.daily_top_up_used.amount_minor, limits.top_up_allowance.amount_minor) == (70_000, 10_000)
    assert limits.hold_ttl.seconds == 900
    assert not wallet.stub.GetLimits(wallet_pb2.GetLimitsRequest()).HasField("top_up_allowance")

    clock.advance(timedelta(days=1))  # a new calendar day: the daily allowance is back
    wallet.top_up("c-1", 45_000)
    assert error_of(wallet.top_up, "c-1", 10_000).reason == "BALANCE_LIMIT_EXCEEDED"  # 95,000 + 20,000 pending
    assert wallet.balance("c-1") == 95_000


def test_frozen_and_closed_wallets(wallet: WalletClient) -> None:
    wallet.top_up("c-1", 100_000)

    def status(
        value: wallet_pb2.WalletStatus.ValueType, reason: str = "fraud check", operator: str = "op-1"
    ) -> wallet_pb2.Wallet:
        return wallet.stub.UpdateWalletStatus(
            wallet_pb2.UpdateWalletStatusRequest(
                request_id=new_id("status"),
                customer_id="c-1",
                status=value,
                reason=reason,
                operator_id=operator,
            )
        ).wallet

    assert error_of(status, wallet_pb2.WALLET_STATUS_FROZEN, operator="").reason == "OPERATOR_REQUIRED"
    assert error_of(status, wallet_pb2.WALLET_STATUS_FROZEN, reason=" ").reason == "REASON_REQUIRED"
    assert status(wallet_pb2.WALLET_STATUS_FROZEN).status == wallet_pb2.WALLET_STATUS_FROZEN
    assert error_of(wallet.top_up, "c-1", 100_000).reason == "WALLET_FROZEN"
    assert error_of(wallet.hold, "c-1", 1_000).reason == "WALLET_FROZEN"
    assert wallet.balance("c-1") == 100_000  # kept
    assert error_of(status, wallet_pb2.WALLET_STATUS_CLOSED).reason == "WALLET_BALANCE_NOT_ZERO"
    assert status(wallet_pb2.WALLET_STATUS_ACTIVE).status == wallet_pb2.WALLET_STATUS_ACTIVE
    hold = wallet.hold("c-1", 100_000)
    wallet.capture(hold.hold_id)
    assert status(wallet_pb2.WALLET_STATUS_CLOSED).status == wallet_pb2.WALLET_STATUS_CLOSED
    assert error_of(wallet.top_up, "c-1", 100_000).reason == "WALLET_CLOSED"
    assert error_of(status, wallet_pb2.WALLET_STATUS_ACTIVE).reason == "WALLET_CLOSED"
    assert wallet.sql("SELECT from_status, to_status, operator_id FROM wallet_status_changes ORDER BY id") == [
        ("ACTIVE", "FROZEN", "op-1"),
        ("FROZEN", "ACTIVE", "op-1"),
        ("ACTIVE", "CLOSED", "op-1"),
    ]


def test_bad_input_gets_a_precise_error(wallet: WalletClient) -> None:
    def top_up(**fields: object) -> object:
        request = wallet_pb2.TopUpRequest(request_id="r", customer_id="c-1", amount=rub(100_000), card_token="tok_ok")
        for name, value in fields.items():
            if name == "amount":
                request.amount.CopyFrom(value)  # type: ignore[arg-type]
            else:
                setattr(request, name, value)
        return wallet.stub.TopUp(request)

    assert error_of(top_up, amount=rub(0)).reason == "INVALID_AMOUNT"
    assert error_of(top_up, amount=rub(-5)).reason == "INVALID_AMOUNT"
    usd = rub(100)
    usd.currency_code = "USD"
    assert error_of(top_up, amount=usd).reason == "UNSUPPORTED_CURRENCY"
    assert error_of(top_up, card_token="").reason == "CARD_TOKEN_REQUIRED"
    assert error_of(top_up, request_id="").reason == "REQUEST_ID_REQUIRED"
    assert error_of(top_up, customer_id="").reason == "CUSTOMER_ID_REQUIRED"
    with pytest.raises(grpc.RpcError) as raised:
        wallet.stub.GetTopUp(wallet_pb2.GetTopUpRequest(top_up_id="nope"))
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    assert wallet.sql("SELECT count(*) FROM wallets")[0][0] == 0
