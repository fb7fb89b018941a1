"""Monthly interest as points: a simulated year, the carry, idempotent re-runs, batches through
the outbox, mechanics from Promotions, and the calculator."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2
from loyalty.common.v1 import mechanic_pb2
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from loyalty.promotions.v1 import promotions_pb2, promotions_pb2_grpc
from loyalty.wallet.v1 import wallet_pb2

from services.wallet.adapters import points_peer
from shared.calendar import Month, ProgrammeCalendar
from shared.clock import ManualClock
from shared.errors import PeerUnavailable
from tests.harness import Harness
from tests.integration.wallet_support import WalletClient, error_of, rub

MOSCOW = ProgrammeCalendar("Europe/Moscow")
CASHBACK = mechanic_pb2.Mechanic(
    code="cashback-3-5",
    name="Cashback 3-5 %",
    cashback=mechanic_pb2.CashbackMechanic(
        tiers=[
            mechanic_pb2.CashbackTier(min_balance_minor=1_000_000, rate_bps=300),
            mechanic_pb2.CashbackTier(min_balance_minor=5_000_000, rate_bps=500),
        ]
    ),
)


class FakePromotions(promotions_pb2_grpc.PromotionsServiceServicer):
    """Promotions as it will answer once mechanics land: some customers on cashback."""

    def __init__(self, cashback: set[str]) -> None:
        self.cashback = cashback
        self.batch_calls: list[promotions_pb2.BatchGetCustomerMechanicsRequest] = []
        self.calls: list[str] = []  # GetCustomerMechanic, by customer

    def _mechanic(self, customer_id: str) -> mechanic_pb2.Mechanic:
        if customer_id in self.cashback:
            return CASHBACK
        return mechanic_pb2.Mechanic(
            code="interest-1800-min",
            name="18 % on the minimum",
            interest=mechanic_pb2.InterestMechanic(apr_bps=1800, basis=mechanic_pb2.BALANCE_BASIS_MINIMUM_DAILY),
        )

    def GetCustomerMechanic(
        self, request: promotions_pb2.GetCustomerMechanicRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.GetCustomerMechanicResponse:
        self.calls.append(request.customer_id)
        return promotions_pb2.GetCustomerMechanicResponse(mechanic=self._mechanic(request.customer_id))

    def BatchGetCustomerMechanics(
        self, request: promotions_pb2.BatchGetCustomerMechanicsRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.BatchGetCustomerMechanicsResponse:
        self.batch_calls.append(request)
        return promotions_pb2.BatchGetCustomerMechanicsResponse(
            mechanics=[
                promotions_pb2.CustomerMechanic(customer_id=c, mechanic=self._mechanic(c)) for c in request.customer_ids
            ]
        )


class FakePoints(points_pb2_grpc.PointsServiceServicer):
    def __init__(self) -> None:
        self.batches: list[points_pb2.BatchCreditPointsRequest] = []

    def BatchCreditPoints(
        self, request: points_pb2.BatchCreditPointsRequest, context: grpc.ServicerContext
    ) -> points_pb2.BatchCreditPointsResponse:
        self.batches.append(request)
        return points_pb2.BatchCreditPointsResponse(
            results=[points_pb2.BatchCreditPointsResult(request_id=r.request_id) for r in request.requests]
        )


def serve(register: object, servicer: object) -> Iterator[str]:
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    register(servicer, server)  # type: ignore[operator]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


@pytest.fixture
def fake_points() -> Iterator[tuple[FakePoints, str]]:
    points = FakePoints()  # type: ignore[abstract]  # only BatchCreditPoints is needed
    for target in serve(points_pb2_grpc.add_PointsServiceServicer_to_server, points):
        yield points, target


@pytest.fixture
def fake_promotions() -> Iterator[tuple[FakePromotions, str]]:
    promotions = FakePromotions({"cash-1"})  # type: ignore[abstract]  # only the mechanic look-ups
    for target in serve(promotions_pb2_grpc.add_PromotionsServiceServicer_to_server, promotions):
        yield promotions, target


def outbox_batches(wallet: WalletClient) -> list[points_pb2.BatchCreditPointsRequest]:
    rows = wallet.sql("SELECT method, payload FROM outbox_messages ORDER BY id")
    assert all(method == points_peer.BATCH_CREDIT_POINTS for method, _ in rows)
    return [points_pb2.BatchCreditPointsRequest.FromString(payload) for _, payload in rows]


def after_month(month: str, hours: int = 1) -> datetime:
    return MOSCOW.month_end(Month.parse(month)) + timedelta(hours=hours)


def test_a_simulated_year_posts_the_expected_points_with_the_carry(harness: Harness, clock: ManualClock) -> None:
    harness.start("promotions")  # answers UNIMPLEMENTED for mechanics today: everyone has the default
    wallet = WalletClient(harness.start("wallet", background_relay=False))
    clock.set(datetime(2026, 1, 1, 6, tzinfo=UTC))  # 09:00 on 1 January in Moscow
    wallet.top_up("saver", 5_000_000)  # 50,000 RUB: 500 points a month
    wallet.top_up("small", 33_333)  # 333.33 RUB: 3.3333 points a month
    ids = {c: wallet.wallet(c).wallet_id for c in ("saver", "small")}

    error = error_of(wallet.post_interest, "2026-01")
    assert error.reason == "MONTH_NOT_ENDED"
    assert error_of(wallet.post_interest, "2026-13").reason == "INVALID_MONTH"

    small_points = []
    for number in range(1, 13):
        month = f"2026-{number:02d}"
        if number == 3:  # a third customer arrives on 16 March (Moscow) with 100,000 RUB
            clock.set(datetime(2026, 3, 16, 9, tzinfo=UTC))
            wallet.top_up("late", 10_000_000)
            ids["late"] = wallet.wallet("late").wallet_id
        clock.set(after_month(month))
        posted = wallet.post_interest(month)
        assert posted.month == month and posted.wallets_already_posted == 0
        assert posted.wallets_posted == (2 if number < 3 else 3)
        accruals = {c: wallet.accruals(c)[0] for c in ids}
        assert all(a.month == month for a in accruals.values())
        assert (accruals["saver"].points, accruals["saver"].carry_out_micro_points) == (500, 0)
        assert accruals["saver"].basis_minor == 5_000_000
        small_points.append(accruals["small"].points)
        if number == 3:
            # 16 of 31 days at 100,000 RUB: basis 51,612.90 RUB, 516.129032 points.
            late = accruals["late"]
            assert (late.basis_minor, late.points, late.carry_out_micro_points) == (5_161_290, 516, 129_032)
        if number == 4:
            late = accruals["late"]
            assert (late.carry_in_micro_points, late.points, late.carry_out_micro_points) == (129_032, 1_000, 129_032)

    assert small_points == [3, 3, 3, 4, 3, 3, 4, 3, 3, 4, 3, 3]
    assert wallet.accruals("small")[0].carry_out_micro_points == 999_600
    assert [a.month for a in wallet.accruals("small")][:2] == ["2026-12", "2026-11"]

    # The credits went to the outbox, one batch per run, keyed per wallet and month.
    batches = outbox_batches(wallet)
    assert len(batches) == 12
    december = {r.request_id: r for r in batches[-1].requests}
    key = f"interest:{ids['saver']}:2026-12"
    assert december[key].points == 500
    assert december[key].source == points_pb2.POINTS_SOURCE_WALLET_INTEREST
    assert december[key].reference == key and december[key].customer_id == "saver"
    total_saver = sum(r.points for b in batches for r in b.requests if r.customer_id == "saver")
    assert total_saver == 6_000

    # Re-running a month, under any request id, changes nothing.
    again = wallet.post_interest("2026-06")
    assert (again.wallets_posted, again.wallets_already_posted, again.points_posted) == (0, 3, 0)
    assert len(outbox_batches(wallet)) == 12
    assert [a.points for a in wallet.accruals("small")] == list(reversed(small_points))


def test_a_replayed_run_returns_its_first_answer(harness: Harness, clock: ManualClock) -> None:
    harness.start("promotions")
    wallet = WalletClient(harness.start("wallet", background_relay=False))
    wallet.top_up("c-1", 5_000_000)
    clock.set(after_month("2026-01"))
    first = wallet.post_interest("2026-01", request_id="job-1")
    assert (first.wallets_posted, first.points_posted) == (1, 500)
    assert wallet.post_interest("2026-01", request_id="job-1") == first


def test_interest_is_credited_in_batches_of_at_most_the_batch_size(
    harness: Harness, clock: ManualClock, fake_points: tuple[FakePoints, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.wallet.service_layer import interest

    monkeypatch.setattr(interest, "BATCH", 2)
    points, points_target = fake_points
    harness.start("promotions")
    service = harness.start("wallet", peers={"points": points_target}, background_relay=False)
    wallet = WalletClient(service)
    for n in range(5):
        wallet.top_up(f"c-{n}", 1_000_000)
    clock.set(after_month("2026-01"))
    posted = wallet.post_interest("2026-01")
    assert (posted.wallets_posted, posted.points_posted) == (5, 500)
    assert [len(b.requests) for b in outbox_batches(wallet)] == [2, 2, 1]
    assert points_peer.MAX_BATCH == 1000

    # The relay delivers each batch as one BatchCreditPoints call.
    assert service.app.runtime.relay.deliver_due() == 3
    assert len(points.batches) == 3
    credited = sorted((r.customer_id, r.points) for b in points.batches for r in b.requests)
    assert credited == [(f"c-{n}", 100) for n in range(5)]
    assert service.app.runtime.relay.deliver_due() == 0


def test_mechanics_come_from_promotions_and_cashback_customers_earn_no_interest(
    harness: Harness, clock: ManualClock, fake_promotions: tuple[FakePromotions, str]
) -> None:
    promotions, promotions_target = fake_promotions
    wallet = WalletClient(harness.start("wallet", peers={"promotions": promotions_target}, background_relay=False))
    clock.set(datetime(2026, 1, 10, tzinfo=UTC))
    wallet.top_up("cash-1", 5_000_000)
    wallet.top_up("int-1", 5_000_000)
    assert wallet.wallet("cash-1").mechanic.code == "cashback-3-5"
    assert wallet.wallet("int-1").mechanic.interest.apr_bps == 1800
    clock.set(datetime(2026, 1, 20, tzinfo=UTC))
    wallet.hold("int-1", 4_000_000)
    wallet.capture(wallet.hold("int-1", 1_000_000).hold_id)  # the minimum falls to 40,000 RUB... and 0 before the 10th
    clock.set(after_month("2026-01"))
    posted = wallet.post_interest("2026-01")
    assert (posted.wallets_posted, posted.wallets_not_on_interest) == (1, 1)
    [accrual] = wallet.accruals("int-1")
    assert accrual.mechanic.interest.basis == mechanic_pb2.BALANCE_BASIS_MINIMUM_DAILY
    assert (accrual.basis_minor, accrual.points) == (0, 0)  # no money before 10 January: minimum 0
    assert wallet.accruals("cash-1") == []
    assert promotions.batch_calls[-1].month == "2026-01"
    assert outbox_batches(wallet) == []  # nothing positive to credit
    clock.set(after_month("2026-02"))
    february = wallet.post_interest("2026-02")
    assert february.points_posted == 600  # 40,000 RUB minimum x 18 % / 12


def test_a_read_mask_without_the_mechanic_asks_promotions_nothing(
    harness: Harness, fake_promotions: tuple[FakePromotions, str]
) -> None:
    """Checkout prices an order with the balance only: the Wallet does not call Promotions."""
    promotions, promotions_target = fake_promotions
    wallet = WalletClient(harness.start("wallet", peers={"promotions": promotions_target}, background_relay=False))
    wallet.top_up("cash-1", 5_000_000)
    hold = wallet.hold("cash-1", 1_000_000)
    asked = len(promotions.calls)

    def get(*paths: str) -> wallet_pb2.Wallet:
        request = wallet_pb2.GetWalletRequest(customer_id="cash-1", read_mask=field_mask_pb2.FieldMask(paths=paths))
        return wallet.stub.GetWallet(request).wallet

    money_only = get("balance", "available")
    assert [field.name for field, _ in money_only.ListFields()] == ["balance", "available"]
    assert (money_only.balance.amount_minor, money_only.available.amount_minor) == (5_000_000, 4_000_000)
    assert get("held,status").held.amount_minor == 1_000_000  # comma-separated paths, as in a URL
    assert len(promotions.calls) == asked, "no mechanic asked for, none looked up"
    assert get("mechanic").ListFields()[0][1].code == "cashback-3-5"
    whole = get()
    assert whole.mechanic.code == "cashback-3-5" and whole.wallet_id and whole.balance.amount_minor == 5_000_000
    assert promotions.calls[asked:] == ["cash-1", "cash-1"]
    for bad in (("balance", "nope"), ("balance.amount_minor",)):
        error = error_of(get, *bad)
        assert (error.reason, error.field_violations[0].field) == ("READ_MASK_INVALID", "read_mask")
    assert wallet.release(hold.hold_id).status == wallet_pb2.HOLD_STATUS_RELEASED


def test_posting_does_not_guess_when_promotions_is_unreachable(harness: Harness, clock: ManualClock) -> None:
    wallet = WalletClient(harness.start("wallet", background_relay=False))  # promotions unreachable
    wallet.top_up("c-1", 5_000_000)
    assert wallet.wallet("c-1").mechanic.interest.apr_bps == 1200  # a read falls back to the default
    clock.set(after_month("2026-01"))
    error = error_of(wallet.post_interest, "2026-01")
    assert isinstance(error, PeerUnavailable)
    assert wallet.sql("SELECT count(*) FROM interest_accruals")[0][0] == 0


def calculate(wallet: WalletClient, **fields: object) -> wallet_pb2.CalculateYieldResponse:
    return wallet.stub.CalculateYield(wallet_pb2.CalculateYieldRequest(**fields))  # type: ignore[arg-type]


def test_the_calculator_gives_the_seed_example_and_carries_fractions(harness: Harness) -> None:
    wallet = WalletClient(harness.start("wallet"))
    seed = calculate(wallet, customer_id="anyone", amount=rub(5_000_000), months=12, start_month="2026-01")
    assert [m.points for m in seed.months] == [500] * 12
    assert seed.total_points == 6_000
    assert seed.mechanic.interest.apr_bps == 1200
    assert [m.month for m in seed.months][-1] == "2026-12"
    fraction = calculate(wallet, customer_id="anyone", amount=rub(33_333), months=4, start_month="2026-01")
    assert [(m.points, m.carry_micro_points) for m in fraction.months] == [
        (3, 333_300),
        (3, 666_600),
        (3, 999_900),
        (4, 333_200),
    ]
    explicit = mechanic_pb2.Mechanic(
        code="i18",
        interest=mechanic_pb2.InterestMechanic(apr_bps=1800, basis=mechanic_pb2.BALANCE_BASIS_AVERAGE_DAILY),
    )
    assert calculate(wallet, amount=rub(5_000_000), months=2, mechanic=explicit).total_points == 1_500
    first = calculate(wallet, amount=rub(5_000_000), months=1, mechanic=explicit).months[0].month
    assert first == "2026-02"  # the clock is in January: the next month
    cashback = calculate(wallet, amount=rub(5_000_000), months=3, mechanic=CASHBACK, monthly_spend=rub(1_000_000))
    assert cashback.total_points == 3 * 500  # 5 % tier on 10,000 RUB of purchases a month
    too_high = mechanic_pb2.Mechanic(
        interest=mechanic_pb2.InterestMechanic(apr_bps=1801, basis=mechanic_pb2.BALANCE_BASIS_AVERAGE_DAILY)
    )
    assert error_of(calculate, wallet, amount=rub(100), months=1, mechanic=too_high).reason == (
        "MECHANIC_APR_OUT_OF_RANGE"
    )
    assert error_of(calculate, wallet, customer_id="c", amount=rub(100), months=0).reason == "MONTHS_OUT_OF_RANGE"
    assert error_of(calculate, wallet, customer_id="c", amount=rub(100), months=121).reason == "MONTHS_OUT_OF_RANGE"
    assert error_of(calculate, wallet, amount=rub(100), months=1).reason == "MECHANIC_REQUIRED"


def test_wallet_statistics_for_many_customers_in_one_call(harness: Harness, clock: ManualClock) -> None:
    wallet = WalletClient(harness.start("wallet"))
    clock.set(datetime(2026, 2, 1, 9, tzinfo=UTC))
    wallet.top_up("a", 1_000_000)
    clock.set(datetime(2026, 2, 11, 9, tzinfo=UTC))
    hold = wallet.hold("a", 400_000)
    wallet.capture(hold.hold_id)
    wallet.open("b")
    start, end = MOSCOW.month_start(Month(2026, 2)), MOSCOW.month_end(Month(2026, 2))
    request = wallet_pb2.ListWalletStatisticsRequest(customer_ids=["a", "b", "nobody"])
    request.start_time.FromDatetime(start)
    request.end_time.FromDatetime(end)
    rows = {r.customer_id: r for r in wallet.stub.ListWalletStatistics(request).statistics}
    a = rows["a"]
    assert a.adopted and a.top_ups.amount_minor == 1_000_000
    assert (a.net_deposits.amount_minor, a.end_balance.amount_minor) == (600_000, 600_000)
    assert a.wallet_payments.amount_minor == 400_000
    assert a.average_balance.amount_minor == (10 * 1_000_000 + 18 * 600_000) // 28
    assert not rows["b"].adopted and rows["b"].HasField("wallet_open_time")
    assert not rows["nobody"].adopted and not rows["nobody"].HasField("wallet_open_time")
    too_many = wallet_pb2.ListWalletStatisticsRequest(
        start_time=request.start_time, end_time=request.end_time, customer_ids=[f"c-{n}" for n in range(1001)]
    )
    assert error_of(wallet.stub.ListWalletStatistics, too_many).reason == "TOO_MANY_CUSTOMERS"
    everyone = wallet_pb2.ListWalletStatisticsRequest(
        start_time=request.start_time, end_time=request.end_time, page_size=1
    )
    first = wallet.stub.ListWalletStatistics(everyone)
    everyone.page_token = first.next_page_token
    second = wallet.stub.ListWalletStatistics(everyone)
    assert [r.customer_id for r in (*first.statistics, *second.statistics)] == ["a", "b"]
    assert second.next_page_token == ""


def test_interest_arrives_in_the_points_service_once(harness: Harness, clock: ManualClock) -> None:
    points = harness.start("points")
    harness.start("promotions")
    service = harness.start("wallet", background_relay=False)
    wallet = WalletClient(service)
    wallet.top_up("saver", 5_000_000)
    wallet.top_up("small", 33_333)
    small_id = wallet.wallet("small").wallet_id
    for month in ("2026-01", "2026-02", "2026-03", "2026-04"):
        clock.set(after_month(month))
        wallet.post_interest(month)
        assert service.app.runtime.relay.deliver_due() == 1
    wallet.post_interest("2026-02")  # a re-run queues nothing
    assert service.app.runtime.relay.deliver_due() == 0
    assert wallet.sql("SELECT status FROM outbox_messages") == [("DELIVERED",)] * 4

    stub = points_pb2_grpc.PointsServiceStub(points.channel())
    lots = stub.ListLots(points_pb2.ListLotsRequest(customer_id="small", page_size=100)).lots
    assert sorted((lot.reference, lot.amount) for lot in lots) == [
        (f"interest:{small_id}:2026-01", 3),
        (f"interest:{small_id}:2026-02", 3),
        (f"interest:{small_id}:2026-03", 3),
        (f"interest:{small_id}:2026-04", 4),
    ]
    assert {lot.source for lot in lots} == {points_pb2.POINTS_SOURCE_WALLET_INTEREST}
    assert stub.GetBalance(points_pb2.GetBalanceRequest(customer_id="saver")).available == 2_000
