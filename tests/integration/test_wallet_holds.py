"""Two-phase movement of money: holds, captures, releases, expiry, refunds, card payments."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
import pytest
from loyalty.common.v1 import payment_pb2
from loyalty.wallet.v1 import wallet_pb2

from services.wallet.adapters.acquirer_simulator import SimulatedAcquirer
from services.wallet.service_layer.acquirer import AcquirerResult, AcquirerTimeout
from shared.clock import ManualClock
from shared.errors import FailedPrecondition, NotFound, from_rpc_error
from tests.harness import Harness
from tests.integration.wallet_support import WalletClient, error_of, new_id, rub

CARD = payment_pb2.PAYMENT_METHOD_CARD


@pytest.fixture
def wallet(harness: Harness) -> WalletClient:
    return WalletClient(harness.start("wallet"))


def test_hold_then_partial_capture_releases_the_rest(wallet: WalletClient) -> None:
    wallet.top_up("c-1", 100_000)
    hold = wallet.hold("c-1", 60_000, reference="order-7")
    assert hold.status == wallet_pb2.HOLD_STATUS_ACTIVE
    shown = wallet.wallet("c-1")
    assert (shown.balance.amount_minor, shown.held.amount_minor, shown.available.amount_minor) == (
        100_000,
        60_000,
        40_000,
    )
    captured = wallet.capture(hold.hold_id, 45_000, request_id="cap-1")
    assert captured.status == wallet_pb2.HOLD_STATUS_CAPTURED
    assert captured.captured.amount_minor == 45_000
    assert wallet.capture(hold.hold_id, 45_000, request_id="cap-1") == captured  # replay
    shown = wallet.wallet("c-1")
    assert (shown.balance.amount_minor, shown.held.amount_minor, shown.available.amount_minor) == (55_000, 0, 55_000)
    payment, _ = wallet.statement("c-1").entries
    assert payment.type == wallet_pb2.STATEMENT_ENTRY_TYPE_PAYMENT
    assert (payment.amount.amount_minor, payment.balance_after.amount_minor, payment.reference) == (
        -45_000,
        55_000,
        "order-7",
    )
    assert error_of(wallet.capture, hold.hold_id).reason == "HOLD_ALREADY_CAPTURED"
    assert error_of(wallet.release, hold.hold_id).reason == "HOLD_ALREADY_CAPTURED"


def test_capture_and_hold_errors(wallet: WalletClient) -> None:
    wallet.top_up("c-1", 100_000)
    error = error_of(wallet.hold, "c-1", 100_001)
    assert isinstance(error, FailedPrecondition) and error.reason == "INSUFFICIENT_FUNDS"
    assert error_of(wallet.hold, "c-2", 1_000).reason == "WALLET_NOT_FOUND"
    hold = wallet.hold("c-1", 10_000)
    assert error_of(wallet.capture, hold.hold_id, 10_001).reason == "CAPTURE_EXCEEDS_HOLD"
    error = error_of(wallet.capture, "no-such-hold")
    assert isinstance(error, NotFound) and error.reason == "HOLD_NOT_FOUND"
    released = wallet.release(hold.hold_id)
    assert released.status == wallet_pb2.HOLD_STATUS_RELEASED
    assert wallet.release(hold.hold_id).status == wallet_pb2.HOLD_STATUS_RELEASED  # as is
    assert error_of(wallet.capture, hold.hold_id).reason == "HOLD_ALREADY_RELEASED"
    missing_method = wallet_pb2.HoldMoneyRequest(request_id="r", customer_id="c-1", amount=rub(1_000))
    assert error_of(wallet.stub.HoldMoney, missing_method).reason == "PAYMENT_METHOD_REQUIRED"
    assert wallet.wallet("c-1").available.amount_minor == 100_000


def test_holds_expire_after_their_ttl_and_the_sweeper_releases_them_once(
    wallet: WalletClient, clock: ManualClock
) -> None:
    wallet.top_up("c-1", 100_000)
    short = wallet.hold("c-1", 30_000, ttl_seconds=60)
    default = wallet.hold("c-1", 20_000)  # WALLET_HOLD_TTL_SECONDS, 15 minutes
    assert default.expire_time.ToDatetime() - default.create_time.ToDatetime() == timedelta(minutes=15)
    clock.advance(timedelta(minutes=2))
    assert error_of(wallet.capture, short.hold_id).reason == "HOLD_EXPIRED"
    sweep = wallet.stub.ReleaseExpiredHolds(wallet_pb2.ReleaseExpiredHoldsRequest(request_id="sweep-1"))
    assert (sweep.holds_released, sweep.amount_released.amount_minor) == (1, 30_000)
    assert wallet.stub.ReleaseExpiredHolds(wallet_pb2.ReleaseExpiredHoldsRequest(request_id="sweep-1")) == sweep
    again = wallet.stub.ReleaseExpiredHolds(wallet_pb2.ReleaseExpiredHoldsRequest(request_id="sweep-2"))
    assert again.holds_released == 0  # never released twice
    got = wallet.stub.GetHold(wallet_pb2.GetHoldRequest(hold_id=short.hold_id)).hold
    assert got.status == wallet_pb2.HOLD_STATUS_EXPIRED
    assert wallet.release(short.hold_id).status == wallet_pb2.HOLD_STATUS_EXPIRED  # as is
    assert wallet.wallet("c-1").available.amount_minor == 80_000
    assert wallet.capture(default.hold_id).status == wallet_pb2.HOLD_STATUS_CAPTURED
    assert wallet.balance("c-1") == 80_000


def test_a_card_hold_the_acquirer_will_not_void_does_not_stop_the_sweep(
    wallet: WalletClient, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = wallet.hold("c-1", 30_000, method=payment_pb2.PAYMENT_METHOD_CARD, token="tok_ok", ttl_seconds=60)
    other = wallet.hold("c-2", 20_000, method=payment_pb2.PAYMENT_METHOD_CARD, token="tok_ok", ttl_seconds=120)
    void = SimulatedAcquirer.void

    def flaky_void(self: SimulatedAcquirer, key: str, authorisation_key: str) -> AcquirerResult:
        if key == f"void:{stuck.hold_id}":
            raise AcquirerTimeout
        return void(self, key, authorisation_key)

    monkeypatch.setattr(SimulatedAcquirer, "void", flaky_void)
    clock.advance(timedelta(minutes=3))
    sweep = wallet.stub.ReleaseExpiredHolds(wallet_pb2.ReleaseExpiredHoldsRequest(request_id="sweep-1"))
    assert (sweep.holds_released, sweep.amount_released.amount_minor) == (1, 20_000)
    get = wallet.stub.GetHold
    assert get(wallet_pb2.GetHoldRequest(hold_id=other.hold_id)).hold.status == wallet_pb2.HOLD_STATUS_EXPIRED
    assert get(wallet_pb2.GetHoldRequest(hold_id=stuck.hold_id)).hold.status == wallet_pb2.HOLD_STATUS_ACTIVE
    monkeypatch.setattr(SimulatedAcquirer, "void", void)  # the acquirer answers again
    later = wallet.stub.ReleaseExpiredHolds(wallet_pb2.ReleaseExpiredHoldsRequest(request_id="sweep-2"))
    assert (later.holds_released, later.amount_released.amount_minor) == (1, 30_000)
    assert get(wallet_pb2.GetHoldRequest(hold_id=stuck.hold_id)).hold.status == wallet_pb2.HOLD_STATUS_EXPIRED


def test_refunds_to_the_wallet_until_the_captured_amount_is_used_up(wallet: WalletClient, clock: ManualClock) -> None:
    wallet.top_up("c-1", 100_000)
    hold = wallet.hold("c-1", 50_000, reference="order-9")
    wallet.capture(hold.hold_id)
    assert wallet.balance("c-1") == 50_000
    first = wallet.refund(hold.hold_id, 20_000, request_id="ref-1")
    assert first.refund.status == wallet_pb2.REFUND_STATUS_SUCCEEDED
    assert first.hold.refunded.amount_minor == 20_000
    assert wallet.refund(hold.hold_id, 20_000, request_id="ref-1") == first  # replay
    assert wallet.balance("c-1") == 70_000
    assert error_of(wallet.refund, hold.hold_id, 30_001).reason == "REFUND_EXCEEDS_CAPTURED"
    clock.advance(timedelta(seconds=1))
    wallet.refund(hold.hold_id, 30_000)
    assert wallet.balance("c-1") == 100_000
    refunds = wallet.stub.GetHold(wallet_pb2.GetHoldRequest(hold_id=hold.hold_id)).refunds
    assert [r.amount.amount_minor for r in refunds] == [20_000, 30_000]
    latest = wallet.statement("c-1").entries[0]
    assert latest.type == wallet_pb2.STATEMENT_ENTRY_TYPE_REFUND and latest.amount.amount_minor == 30_000
    other = wallet.hold("c-1", 1_000)
    assert error_of(wallet.refund, other.hold_id, 1_000).reason == "HOLD_NOT_CAPTURED"


def test_card_payments_go_through_the_acquirer_and_refund_to_the_card_or_the_wallet(wallet: WalletClient) -> None:
    hold = wallet.hold("c-1", 80_000, method=CARD, token="tok_mastercard", reference="order-3")
    assert hold.status == wallet_pb2.HOLD_STATUS_ACTIVE and hold.wallet_id == ""
    assert (hold.card.brand, hold.card.last4) == ("MASTERCARD", "4444")
    captured = wallet.capture(hold.hold_id, 70_000, request_id="cap-card")
    assert captured.captured.amount_minor == 70_000
    assert (
        wallet.capture(hold.hold_id, 70_000, request_id="cap-card") == captured
    )  # replay: the acquirer is not asked again
    assert error_of(wallet.capture, hold.hold_id, 60_000, "cap-card").reason == "IDEMPOTENCY_KEY_REUSED"
    assert error_of(wallet.capture, hold.hold_id).reason == "HOLD_ALREADY_CAPTURED"
    to_card = wallet.refund(hold.hold_id, 10_000)
    assert to_card.refund.destination == wallet_pb2.REFUND_DESTINATION_ORIGINAL_METHOD
    assert error_of(wallet.refund, hold.hold_id, 5_000, wallet_pb2.REFUND_DESTINATION_WALLET).reason == (
        "WALLET_NOT_FOUND"
    )
    wallet.open("c-1")
    wallet.refund(hold.hold_id, 5_000, wallet_pb2.REFUND_DESTINATION_WALLET)
    assert wallet.balance("c-1") == 5_000
    operations = wallet.sql("SELECT kind, amount_minor FROM acquirer_simulator_operations ORDER BY created_at, kind")
    assert sorted(operations) == [("AUTHORISE", 80_000), ("CAPTURE", 70_000), ("REFUND", 10_000)]
    declined = error_of(wallet.hold, "c-1", 1_000, method=CARD, token="tok_declined")
    assert declined.reason == "CARD_DECLINED"
    assert wallet.sql("SELECT count(*) FROM holds")[0][0] == 1
    released = wallet.release(wallet.hold("c-1", 2_000, method=CARD, token="tok_ok").hold_id)
    assert released.status == wallet_pb2.HOLD_STATUS_RELEASED
    assert ("VOID",) in wallet.sql("SELECT kind FROM acquirer_simulator_operations")


def test_a_timed_out_card_authorisation_is_pending_and_a_retry_settles_it_once(wallet: WalletClient) -> None:
    pending = wallet.hold("c-1", 5_000, method=CARD, token="tok_timeout", request_id="pay-1")
    assert pending.status == wallet_pb2.HOLD_STATUS_PENDING
    assert error_of(wallet.capture, pending.hold_id).reason == "HOLD_PENDING"
    settled = wallet.hold("c-1", 5_000, method=CARD, token="tok_timeout", request_id="pay-1")
    assert settled.hold_id == pending.hold_id and settled.status == wallet_pb2.HOLD_STATUS_ACTIVE
    assert wallet.sql("SELECT count(*) FROM acquirer_simulator_operations WHERE kind = 'AUTHORISE'")[0][0] == 1
    lost = wallet.hold("c-1", 5_000, method=CARD, token="tok_timeout_declined", request_id="pay-2")
    assert lost.status == wallet_pb2.HOLD_STATUS_PENDING
    assert error_of(
        wallet.hold, "c-1", 5_000, method=CARD, token="tok_timeout_declined", request_id="pay-2"
    ).reason == ("CARD_DECLINED")


def test_twenty_concurrent_holds_never_overdraw_the_wallet(wallet: WalletClient) -> None:
    wallet.top_up("c-1", 100_000)

    def hold(n: int) -> str:
        try:
            wallet.hold("c-1", 10_000, reference=f"order-{n}", request_id=f"concurrent-{n}")
            return "OK"
        except grpc.RpcError as error:
            return from_rpc_error(error).reason

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(hold, range(20)))
    assert sorted(outcomes) == ["INSUFFICIENT_FUNDS"] * 10 + ["OK"] * 10
    shown = wallet.wallet("c-1")
    assert (shown.balance.amount_minor, shown.held.amount_minor, shown.available.amount_minor) == (100_000, 100_000, 0)
    assert wallet.sql("SELECT count(*) FROM holds WHERE status = 'ACTIVE'")[0][0] == 10


def test_the_statement_pages_newest_first_with_references(wallet: WalletClient, clock: ManualClock) -> None:
    top_up_ids = []
    for _ in range(5):
        top_up_ids.append(wallet.top_up("c-1", 10_000).top_up.top_up_id)
        clock.advance(timedelta(minutes=1))
    hold = wallet.hold("c-1", 5_000, reference="order-42")
    wallet.capture(hold.hold_id)
    seen: list[wallet_pb2.StatementEntry] = []
    token = ""
    while True:
        page = wallet.statement("c-1", page_size=2, page_token=token)
        assert len(page.entries) <= 2
        seen += page.entries
        token = page.next_page_token
        if not token:
            break
    assert [e.reference for e in seen] == ["order-42", *reversed(top_up_ids)]
    assert [e.balance_after.amount_minor for e in seen] == [45_000, 50_000, 40_000, 30_000, 20_000, 10_000]
    assert error_of(wallet.statement, "c-1", page_token="garbage!").reason == "INVALID_PAGE_TOKEN"
    windowed = wallet.stub.ListStatementEntries(
        wallet_pb2.ListStatementEntriesRequest(
            customer_id="c-1", start_time=seen[3].create_time, end_time=seen[1].create_time
        )
    )
    assert [e.reference for e in windowed.entries] == [top_up_ids[3], top_up_ids[2]]


def test_replays_of_holds_are_idempotent(wallet: WalletClient) -> None:
    wallet.top_up("c-1", 100_000)
    first = wallet.hold("c-1", 40_000, request_id="h-1")
    assert wallet.hold("c-1", 40_000, request_id="h-1") == first
    assert wallet.wallet("c-1").held.amount_minor == 40_000
    assert error_of(wallet.hold, "c-1", 41_000, request_id="h-1").reason == "IDEMPOTENCY_KEY_REUSED"
    released = wallet.release(first.hold_id, request_id="rel-1")
    assert wallet.release(first.hold_id, request_id="rel-1") == released
    assert wallet.wallet("c-1").held.amount_minor == 0
    request = wallet_pb2.CaptureHoldRequest(request_id=new_id(), hold_id=first.hold_id)
    assert error_of(wallet.stub.CaptureHold, request).reason == "HOLD_ALREADY_RELEASED"
