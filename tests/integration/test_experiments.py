"""Experiments through the real Promotions service: feature import, definitions, the stratified
sample and its reproducibility, the life cycle, mechanic look-up (also as Wallet posts interest),
results that find the variant that really raises deposits, and rollout."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from loyalty.common.v1 import earning_pb2
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from loyalty.promotions.v1 import experiments_pb2 as pb
from loyalty.promotions.v1 import promotions_pb2
from sqlalchemy import text

from shared.calendar import Month, ProgrammeCalendar
from shared.clock import ManualClock
from tests.clients import refused, rid
from tests.harness import Harness, RunningService, free_port
from tests.integration.experiments_support import (
    ExperimentsClient,
    FakeCheckout,
    features,
    interest,
    serve_checkout,
    three_arms,
)
from tests.integration.promotions_support import WALLET, PromotionsClient, line
from tests.integration.promotions_support import rub as promotions_rub
from tests.integration.wallet_support import WalletClient

MOSCOW = ProgrammeCalendar("Europe/Moscow")
T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)


@pytest.fixture
def checkout() -> Iterator[tuple[FakeCheckout, str]]:
    fake = FakeCheckout()  # type: ignore[abstract]  # only ListOrderStatistics
    for target in serve_checkout(fake):
        yield fake, target


@pytest.fixture
def services(harness: Harness, clock: ManualClock, checkout: tuple[FakeCheckout, str]) -> dict[str, RunningService]:
    """Points, Wallet and Promotions, real, wired both ways (Wallet asks Promotions for mechanics,
    Promotions asks Wallet for statistics), and Checkout's statistics from the test double."""
    clock.set(T0)
    port = free_port()
    points = harness.start("points")
    wallet = harness.start("wallet", peers={"promotions": f"127.0.0.1:{port}"}, background_relay=False)
    promotions = harness.start("promotions", peers={"checkout": checkout[1]}, PROMOTIONS_PORT=str(port))
    return {"points": points, "wallet": wallet, "promotions": promotions}


@pytest.fixture
def api(services: dict[str, RunningService]) -> ExperimentsClient:
    return ExperimentsClient(services["promotions"].channel())


def population(count: int, as_of: datetime, seed: int = 7) -> list[promotions_pb2.CustomerFeatures]:
    rng = random.Random(seed)
    return [
        features(
            f"cust-{n:05d}",
            as_of,
            aov_minor=rng.choice([50_000, 150_000, 450_000]),
            orders=rng.randint(0, 9),
            fin=rng.random() < 0.3,
            pts=rng.random() < 0.5,
        )
        for n in range(count)
    ]


# --- features -----------------------------------------------------------------------------------


def test_feature_import_upserts_by_customer_and_as_of_counts_bad_rows_and_replays(api: ExperimentsClient) -> None:
    day1, day2 = T0 - timedelta(days=2), T0 - timedelta(days=1)
    good = [features("a", day1, orders=1), features("b", day1, orders=2)]
    bad = [
        features("", day1),
        features("c", day1, orders=-1),
        promotions_pb2.CustomerFeatures(customer_id="d", lookback_days=90),  # no as_of
        features("e", day1, lookback=0),
    ]
    key = rid()
    summary = api.import_features([good, bad, [features("a", day2, orders=7)]], request_id=key)
    assert (summary.rows_received, summary.rows_imported, summary.rows_rejected) == (7, 3, 4)
    assert [(e.row_index, e.customer_id, e.reason) for e in summary.errors] == [
        (2, "", "CUSTOMER_ID_REQUIRED"),
        (3, "c", "NEGATIVE_ORDER_COUNT"),
        (4, "d", "AS_OF_REQUIRED"),
        (5, "e", "INVALID_LOOKBACK_DAYS"),
    ]
    latest = api.features("a")
    assert latest.order_count == 7 and latest.as_of.seconds == int(day2.timestamp())
    assert latest.source == promotions_pb2.FEATURE_SOURCE_IMPORTED
    assert refused(lambda: api.features("c")).reason == "CUSTOMER_FEATURES_NOT_FOUND"

    # Re-sending a row for the same customer and as_of overwrites it; the same import replayed
    # answers its first summary and changes nothing.
    api.import_features([[features("b", day1, orders=5)]])
    assert api.features("b").order_count == 5
    assert api.import_features([good, bad, [features("a", day2, orders=7)]], request_id=key) == summary
    assert api.features("b").order_count == 5
    assert refused(lambda: api.import_features([good], request_id=key)).reason == "IDEMPOTENCY_KEY_REUSED"

    # A refused stream changes nothing, not even its valid first batch.
    too_big = [features(f"x-{n}", day1) for n in range(10_001)]
    assert refused(lambda: api.import_features([[features("z", day1)], too_big])).reason == "BATCH_TOO_LARGE"
    assert refused(lambda: api.features("z")).reason == "CUSTOMER_FEATURES_NOT_FOUND"
    mixed = iter(
        [
            pb.ImportCustomerFeaturesRequest(request_id="one", features=[features("z", day1)]),
            pb.ImportCustomerFeaturesRequest(request_id="two", features=[features("y", day1)]),
        ]
    )
    assert refused(lambda: api.stub.ImportCustomerFeatures(mixed, timeout=10)).reason == "REQUEST_ID_MISMATCH"
    assert refused(lambda: api.features("z")).reason == "CUSTOMER_FEATURES_NOT_FOUND"


def test_features_are_computed_from_checkout_wallet_and_points(
    api: ExperimentsClient, services: dict[str, RunningService], checkout: tuple[FakeCheckout, str], clock: ManualClock
) -> None:
    fake, _ = checkout
    fake.rows = {"buyer": (4, 1_000_000), "saver": (1, 80_000)}
    wallet = WalletClient(services["wallet"])
    wallet.top_up("saver", 2_000_000)
    points = points_pb2_grpc.PointsServiceStub(services["points"].channel())
    points.CreditPoints(
        points_pb2.CreditPointsRequest(
            request_id=rid(), customer_id="player", points=50, source=points_pb2.POINTS_SOURCE_PROFILE_ACTION,
            reference="photo",
        ),
        timeout=10,
    )  # fmt: skip
    clock.advance(timedelta(days=1))
    request = pb.ComputeCustomerFeaturesRequest(request_id=rid(), lookback_days=30)
    computed = api.stub.ComputeCustomerFeatures(request, timeout=60)
    assert computed.customers_computed == 3 and computed.as_of.seconds == int(clock.now().timestamp())
    buyer, saver, player = api.features("buyer"), api.features("saver"), api.features("player")
    assert (buyer.order_count, buyer.average_order_value.amount_minor, buyer.uses_financial_products) == (
        4, 250_000, False,
    )  # fmt: skip
    assert (saver.order_count, saver.uses_financial_products, saver.takes_part_in_points_activities) == (1, True, False)
    assert (player.order_count, player.takes_part_in_points_activities) == (0, True)
    assert buyer.lookback_days == 30 and buyer.source == promotions_pb2.FEATURE_SOURCE_COMPUTED
    assert fake.requests[0].end_time.seconds - fake.requests[0].start_time.seconds == 30 * 86_400
    assert api.stub.ComputeCustomerFeatures(request, timeout=60) == computed  # a replay answers the first run


# --- definitions and the sample ---------------------------------------------------------------


def test_experiment_definitions_are_checked(api: ExperimentsClient) -> None:
    variants = list(three_arms().variants)
    cases = {
        "CONTROL_VARIANT_REQUIRED": three_arms(variants=variants[1:]),
        "DUPLICATE_VARIANT_ID": three_arms(variants=[variants[0], variants[1], variants[1]]),
        "VARIANT_WEIGHT_INVALID": three_arms(
            variants=[variants[0], pb.Variant(variant_id="v", mechanic=interest(900))]
        ),
        "VARIANT_MECHANIC_REQUIRED": three_arms(variants=[variants[0], pb.Variant(variant_id="v", weight=1)]),
        "MECHANIC_APR_OUT_OF_RANGE": three_arms(
            variants=[variants[0], pb.Variant(variant_id="v", weight=1, mechanic=interest(1801))]
        ),
        "SAMPLE_SIZE_INVALID": three_arms(sample_size=0),
        "SALT_REQUIRED": three_arms(salt=" "),
        "MECHANIC_VARIANT_REQUIRED": three_arms(variants=variants[:1]),
        "STRATA_EDGES_INVALID": three_arms(strata=pb.StrataDefinition(order_count_edges=[5, 2])),
    }
    for reason, experiment in cases.items():
        assert refused(lambda e=experiment: api.create(e)).reason == reason  # type: ignore[misc]
    assert api.stub.ListExperiments(pb.ListExperimentsRequest(), timeout=10).experiments == []
    created = api.create(three_arms(lookback_days=0))
    assert created.status == pb.EXPERIMENT_STATUS_DRAFT and created.lookback_days == 180
    assert api.get(created.experiment_id) == created
    assert refused(lambda: api.get("nope")).reason == "EXPERIMENT_NOT_FOUND"
    assert refused(lambda: api.results(created.experiment_id)).reason == "EXPERIMENT_NOT_STARTED"
    assert refused(lambda: api.draw(created.experiment_id)).reason == "CUSTOMER_FEATURES_MISSING"


def test_same_salt_same_sample_balanced_strata_and_a_busy_customer_is_not_drawn_twice(api: ExperimentsClient) -> None:
    api.import_features([population(600, T0 - timedelta(days=1))])
    first = api.create(three_arms(sample_size=300))
    drawn = api.draw(first.experiment_id)
    assert drawn.experiment.status == pb.EXPERIMENT_STATUS_SAMPLED
    assert (drawn.eligible_count, drawn.sampled_count, drawn.experiment.sampled_count) == (600, 300, 300)
    assert drawn.srm.passed and drawn.srm.degrees_of_freedom == 2
    assert sum(s.population for s in drawn.strata) == 600 and len(drawn.strata) == 6  # 3 AOV x 2 fin
    assignments = api.assignments(first.experiment_id)
    assert len(assignments) == 300
    for stratum in drawn.strata:
        # Proportional to the stratum's population, and balanced within one customer per variant.
        assert abs(stratum.sampled - Fraction(300 * stratum.population, 600)) < 1
        counts = Counter(a.variant_id for a in assignments if a.stratum == stratum.stratum)
        assert {c.variant_id: c.observed for c in stratum.assigned} == {v: counts[v] for v in counts}
        assert max(counts.values()) - min(counts.values()) <= 1 and sum(counts.values()) == stratum.sampled
    one = assignments[0]
    assert api.assignment(first.experiment_id, one.customer_id) == one
    only = api.assignments(first.experiment_id, variant_id="apr-18", stratum=one.stratum)
    assert {a.variant_id for a in only} == {"apr-18"} and {a.stratum for a in only} == {one.stratum}
    assert refused(lambda: api.draw(first.experiment_id)).reason == "EXPERIMENT_NOT_DRAFT"

    # Customers of a sampled experiment are not eligible for another.
    second = api.create(three_arms(sample_size=301))
    assert refused(lambda: api.draw(second.experiment_id)).reason == "NOT_ENOUGH_ELIGIBLE_CUSTOMERS"
    outsider = {a.customer_id for a in assignments}
    other = api.draw(api.create(three_arms(sample_size=300, salt="other")).experiment_id)
    assert other.sampled_count == 300
    assert not outsider & {a.customer_id for a in api.assignments(other.experiment.experiment_id)}

    # Once both have ended, the same salt and definition draw the very same sample and assignment,
    # and another salt another one.
    api.end(first.experiment_id)
    api.end(other.experiment.experiment_id)
    again = api.create(three_arms(sample_size=300))
    api.draw(again.experiment_id)
    pairs = {(a.customer_id, a.variant_id, a.stratum) for a in assignments}
    assert {(a.customer_id, a.variant_id, a.stratum) for a in api.assignments(again.experiment_id)} == pairs
    api.end(again.experiment_id)
    salted = api.create(three_arms(sample_size=300, salt="pilot-2026b"))
    api.draw(salted.experiment_id)
    assert {(a.customer_id, a.variant_id, a.stratum) for a in api.assignments(salted.experiment_id)} != pairs


def test_the_draw_uses_each_customer_s_latest_features(api: ExperimentsClient) -> None:
    day1, day2 = T0 - timedelta(days=2), T0 - timedelta(days=1)
    api.import_features([[features(f"c-{n}", day1, orders=5) for n in range(10)]])
    api.import_features([[features(f"c-{n}", day2, orders=0) for n in range(0, 10, 2)]])  # even ones stopped buying
    experiment = api.create(three_arms(sample_size=5, eligibility=promotions_pb2.FeatureCondition(min_order_count=1)))
    drawn = api.draw(experiment.experiment_id)
    assert drawn.eligible_count == 5
    assert sorted(a.customer_id for a in api.assignments(experiment.experiment_id)) == [
        f"c-{n}" for n in range(1, 10, 2)
    ]


# --- life cycle, mechanics, rollout --------------------------------------------------------------


def test_participants_get_their_variant_s_mechanic_for_the_month_and_rollout_changes_everyone(
    api: ExperimentsClient, services: dict[str, RunningService], clock: ManualClock
) -> None:
    promotions = PromotionsClient(services["promotions"].channel())
    api.import_features([population(40, T0 - timedelta(days=1))])
    experiment = api.create(three_arms(sample_size=30, eligibility=promotions_pb2.FeatureCondition(min_order_count=0)))
    eid = experiment.experiment_id
    api.draw(eid)
    assigned = api.assignments(eid)
    by_variant = {a.variant_id: a.customer_id for a in assigned}
    outsider = next(f"cust-{n:05d}" for n in range(40) if f"cust-{n:05d}" not in {a.customer_id for a in assigned})
    assert refused(lambda: api.assignment(eid, outsider)).reason == "CUSTOMER_NOT_IN_EXPERIMENT"
    assert refused(lambda: api.rollout(eid, "apr-18")).reason == "EXPERIMENT_NOT_RUNNING"

    february = MOSCOW.month_start(Month(2026, 2))
    running = api.start(eid, at=february)
    assert running.status == pb.EXPERIMENT_STATUS_RUNNING and running.start_time.seconds == int(february.timestamp())
    assert refused(lambda: api.start(eid)).reason == "EXPERIMENT_NOT_SAMPLED"

    def look(customer: str, month: str) -> promotions_pb2.GetCustomerMechanicResponse:
        return promotions.mechanic(customer, month)

    # January is before the start: everyone on the default.
    assert look(by_variant["apr-18"], "2026-01").origin == promotions_pb2.MECHANIC_ORIGIN_DEFAULT
    apr = look(by_variant["apr-18"], "2026-02")
    assert (apr.mechanic.interest.apr_bps, apr.origin, apr.experiment_id, apr.variant_id) == (
        1800, promotions_pb2.MECHANIC_ORIGIN_EXPERIMENT, eid, "apr-18",
    )  # fmt: skip
    assert look(by_variant["cashback"], "2026-02").mechanic.code == "cashback-3-5"
    control = look(by_variant["control"], "2026-02")
    assert (control.mechanic.interest.apr_bps, control.variant_id) == (1200, "control")
    assert look(outsider, "2026-02").origin == promotions_pb2.MECHANIC_ORIGIN_DEFAULT
    batch = promotions.stub.BatchGetCustomerMechanics(
        promotions_pb2.BatchGetCustomerMechanicsRequest(customer_ids=[by_variant["apr-18"], outsider], month="2026-02"),
        timeout=10,
    )
    assert [m.mechanic.interest.apr_bps for m in batch.mechanics] == [1800, 1200]

    # Cashback at checkout follows the mechanic too: the cashback participant earns it on an order
    # paid from the wallet, control does not.
    clock.set(datetime(2026, 2, 10, tzinfo=UTC))
    order = [line("l1", "books", 1_000)]

    def cashback_points(customer: str) -> int:
        evaluation = promotions.evaluate(customer, *order, method=WALLET, balance=promotions_rub(60_000))
        return sum(a.points for ln in evaluation.lines for a in ln.awards if a.kind == earning_pb2.AWARD_KIND_CASHBACK)

    assert cashback_points(by_variant["cashback"]) == 50  # 5 % of 1,000 RUB at a 60,000 RUB balance
    assert cashback_points(by_variant["control"]) == 0

    # Rollout from April: the variant's mechanic becomes everyone's default; history is kept.
    clock.set(datetime(2026, 3, 10, tzinfo=UTC))
    april = MOSCOW.month_start(Month(2026, 4))
    assert refused(lambda: api.rollout(eid, "nope", april)).reason == "VARIANT_NOT_FOUND"
    assert refused(lambda: api.rollout(eid, "apr-18", datetime(2026, 3, 1, tzinfo=UTC))).reason == (
        "EFFECTIVE_TIME_IN_PAST"
    )
    rolled = api.rollout(eid, "apr-18", april)
    assert rolled.experiment.status == pb.EXPERIMENT_STATUS_ROLLED_OUT
    assert rolled.experiment.rolled_out_variant_id == "apr-18" and rolled.default_mechanic.interest.apr_bps == 1800
    for customer in (outsider, by_variant["control"], by_variant["cashback"], by_variant["apr-18"]):
        after = look(customer, "2026-04")
        assert (after.mechanic.interest.apr_bps, after.origin) == (1800, promotions_pb2.MECHANIC_ORIGIN_DEFAULT)
    assert look(by_variant["cashback"], "2026-03").mechanic.code == "cashback-3-5"  # still the experiment in March
    assert look(outsider, "2026-03").mechanic.interest.apr_bps == 1200
    default = promotions.stub.GetDefaultMechanic(promotions_pb2.GetDefaultMechanicRequest(time=rolled.effective_time))
    assert default.experiment_id == eid
    assert len(api.assignments(eid)) == 30  # assignments kept
    assert refused(lambda: api.end(eid)).reason == "EXPERIMENT_ALREADY_ENDED"
    listed = api.stub.ListExperiments(pb.ListExperimentsRequest(statuses=[pb.EXPERIMENT_STATUS_ROLLED_OUT]))
    assert [e.experiment_id for e in listed.experiments] == [eid]


def test_wallet_posts_interest_with_the_participant_s_mechanic_for_the_month(
    api: ExperimentsClient, services: dict[str, RunningService], clock: ManualClock
) -> None:
    wallet = WalletClient(services["wallet"])
    customers = [f"saver-{n}" for n in range(12)]
    clock.set(datetime(2025, 12, 20, tzinfo=UTC))
    api.import_features([[features(c, clock.now()) for c in customers]])
    for customer in customers:
        wallet.top_up(customer, 5_000_000)  # 50,000 RUB: 500 points a month at 12 %, 750 at 18 %
    experiment = api.create(
        three_arms(
            sample_size=8, strata=pb.StrataDefinition(),
            variants=[
                pb.Variant(variant_id="control", control=True, weight=1),
                pb.Variant(variant_id="apr-18", mechanic=interest(1800), weight=1),
            ],
        )
    )  # fmt: skip
    eid = experiment.experiment_id
    api.draw(eid)
    arm = {a.customer_id: a.variant_id for a in api.assignments(eid)}
    api.start(eid, at=MOSCOW.month_start(Month(2026, 1)))
    clock.set(MOSCOW.month_end(Month(2026, 1)) + timedelta(hours=1))
    assert wallet.post_interest("2026-01").wallets_posted == 12
    january = {c: wallet.accruals(c)[0].points for c in customers}
    assert january == {c: 750 if arm.get(c) == "apr-18" else 500 for c in customers}
    assert sum(1 for v in arm.values() if v == "apr-18") == 4

    # Roll the variant out from March: February still by the experiment, March 18 % for everyone.
    api.rollout(eid, "apr-18", MOSCOW.month_start(Month(2026, 3)))
    clock.set(MOSCOW.month_end(Month(2026, 2)) + timedelta(hours=1))
    wallet.post_interest("2026-02")
    assert {c: wallet.accruals(c)[0].points for c in customers} == january
    clock.set(MOSCOW.month_end(Month(2026, 3)) + timedelta(hours=1))
    wallet.post_interest("2026-03")
    assert {c: wallet.accruals(c)[0].points for c in customers} == {c: 750 for c in customers}


# --- results ------------------------------------------------------------------------------------


def run_pilot(
    api: ExperimentsClient, services: dict[str, RunningService], clock: ManualClock, fake: FakeCheckout, lift_minor: int
) -> tuple[str, pb.GetExperimentResultsResponse]:
    """150 customers in three arms; during the test period every participant tops up a random
    amount, and those on apr-18 top up `lift_minor` more."""
    wallet = WalletClient(services["wallet"])
    api.import_features([population(180, T0 - timedelta(days=1))])
    eid = api.create(three_arms(sample_size=150)).experiment_id
    api.draw(eid)
    api.start(eid)
    clock.advance(timedelta(days=1))
    rng = random.Random(2026)
    points = points_pb2_grpc.PointsServiceStub(services["points"].channel())
    for assignment in api.assignments(eid):
        amount = rng.randint(10, 200) * 10_000 + (lift_minor if assignment.variant_id == "apr-18" else 0)
        wallet.top_up(assignment.customer_id, amount)
        if assignment.variant_id == "apr-18":  # what the richer mechanic paid in the period
            points.CreditPoints(
                points_pb2.CreditPointsRequest(
                    request_id=rid(), customer_id=assignment.customer_id, points=120,
                    source=points_pb2.POINTS_SOURCE_WALLET_INTEREST, reference=f"interest:{assignment.customer_id}",
                ),
                timeout=10,
            )  # fmt: skip
        fake.rows[assignment.customer_id] = (rng.randint(0, 5), rng.randint(0, 5) * 250_000)
    clock.advance(timedelta(days=14))
    return eid, api.results(eid)


def test_results_point_at_the_variant_that_really_raises_deposits_and_a_skewed_split_fails_srm(
    api: ExperimentsClient,
    services: dict[str, RunningService],
    clock: ManualClock,
    checkout: tuple[FakeCheckout, str],
) -> None:
    eid, results = run_pilot(api, services, clock, checkout[0], lift_minor=1_000_000)  # +10,000 RUB
    assert [v.variant_id for v in results.variants] == ["control", "apr-18", "cashback"]
    assert results.confidence_level_bps == 9500 and results.srm.passed
    sizes = [v.customers for v in results.variants]
    assert sum(sizes) == 150 and all(abs(n - 50) <= 6 for n in sizes)  # within one per variant per stratum
    apr = results.variants[1]
    deposits = next(c for c in apr.comparisons if c.metric == pb.EXPERIMENT_METRIC_NET_DEPOSITS)
    assert deposits.significant and deposits.ci_lower_micro > 0 and deposits.p_value_micro < 50_000
    assert deposits.ci_lower_micro < 1_000_000 * 1_000_000 < deposits.ci_upper_micro  # the true lift is inside
    adoption = next(m for m in results.variants[0].metrics if m.metric == pb.EXPERIMENT_METRIC_WALLET_ADOPTION)
    assert adoption.mean_micro == 1_000_000  # everyone topped up
    assert results.recommendation.variant_id == "apr-18"
    assert "net deposits" in results.recommendation.rule and "sample-ratio" in results.recommendation.rule

    def mean(variant: pb.VariantResult, metric: int) -> int:
        return next(m.mean_micro for m in variant.metrics if m.metric == metric)

    control = results.variants[0]
    cost = mean(apr, pb.EXPERIMENT_METRIC_POINTS_COST) - mean(control, pb.EXPERIMENT_METRIC_POINTS_COST)
    balance = mean(apr, pb.EXPERIMENT_METRIC_AVERAGE_BALANCE) - mean(control, pb.EXPERIMENT_METRIC_AVERAGE_BALANCE)
    assert cost == 120_000_000 and balance > 0  # 120 points per apr-18 customer, none in control
    # Micro-points per extra rouble of average balance: cost / (balance in roubles).
    assert abs(apr.points_per_extra_balance_rouble_micro - cost * 100 * 1_000_000 // balance) <= 1
    assert (
        abs(
            deposits.relative_difference_bps
            - deposits.difference_micro * 10_000 // mean(control, pb.EXPERIMENT_METRIC_NET_DEPOSITS)
        )
        <= 1
    )
    assert results.variants[2].points_per_extra_balance_rouble_micro == 0  # cashback paid nothing more here
    assert results.variants[0].comparisons == []
    assert len(apr.comparisons) == 6 and len(apr.metrics) == 6

    # At 90 % the intervals are narrower, and the rule says which level it used.
    ninety = api.results(eid, confidence_level_bps=9000)
    narrower = next(c for c in ninety.variants[1].comparisons if c.metric == pb.EXPERIMENT_METRIC_NET_DEPOSITS)
    assert deposits.ci_lower_micro < narrower.ci_lower_micro < narrower.ci_upper_micro < deposits.ci_upper_micro
    assert "95 %" in results.recommendation.rule and "90 %" in ninety.recommendation.rule
    assert refused(lambda: api.results(eid, confidence_level_bps=4000)).reason == "CONFIDENCE_LEVEL_INVALID"

    # The same experiment with a deliberately skewed split (a fifth of control moved to apr-18)
    # fails the sample-ratio check, and then nothing is recommended.
    promotions = services["promotions"].app.runtime.db
    with promotions.engine.begin() as connection:
        moved = connection.execute(
            text(
                "UPDATE experiment_assignments SET variant_id = 'apr-18' WHERE experiment_id = :e AND customer_id IN "
                "(SELECT customer_id FROM experiment_assignments WHERE experiment_id = :e AND variant_id = 'control' "
                "ORDER BY customer_id LIMIT 20)"
            ),
            {"e": eid},
        )
        assert moved.rowcount == 20
    skewed = api.results(eid)
    assert not skewed.srm.passed and skewed.srm.p_value_micro < 1_000
    assert [c.observed for c in skewed.srm.counts] == [sizes[0] - 20, sizes[1] + 20, sizes[2]]
    assert skewed.recommendation.variant_id == "" and "sample-ratio" in skewed.recommendation.rationale


def test_results_recommend_nothing_when_no_variant_has_an_effect(
    api: ExperimentsClient,
    services: dict[str, RunningService],
    clock: ManualClock,
    checkout: tuple[FakeCheckout, str],
) -> None:
    _, results = run_pilot(api, services, clock, checkout[0], lift_minor=0)
    assert results.srm.passed
    for variant in results.variants[1:]:
        deposits = next(c for c in variant.comparisons if c.metric == pb.EXPERIMENT_METRIC_NET_DEPOSITS)
        assert not deposits.significant and deposits.ci_lower_micro < 0 < deposits.ci_upper_micro
    assert results.recommendation.variant_id == ""
    assert "No variant" in results.recommendation.rationale


def test_features_are_computed_from_the_real_checkout(harness: Harness, clock: ManualClock) -> None:
    """Checkout (issue #6) for real: orders placed through its saga show up in the features."""
    from tests.integration.checkout_support import CARD, CATALOGUE, CheckoutClient

    clock.set(T0)
    wallet_port, checkout_port = free_port(), free_port()
    harness.start("points", background_relay=False)
    promotions = harness.start(
        "promotions", background_relay=False,
        peers={"wallet": f"127.0.0.1:{wallet_port}", "checkout": f"127.0.0.1:{checkout_port}"},
    )  # fmt: skip
    wallet = WalletClient(harness.start("wallet", background_relay=False, WALLET_PORT=str(wallet_port)))
    checkout = CheckoutClient(
        harness.start("checkout", background_relay=False, CHECKOUT_PORT=str(checkout_port)).channel()
    )
    for sku, (title, category, price) in CATALOGUE.items():
        checkout.upsert(sku, title, category, price)
    wallet.top_up("buyer", 1_000_000)
    checkout.place("buyer", ("kettle", 1))
    checkout.place("buyer", ("soap", 2))
    checkout.place("carder", ("phone", 1), method=CARD, token="tok_ok")

    api = ExperimentsClient(promotions.channel())
    clock.advance(timedelta(hours=1))
    computed = api.stub.ComputeCustomerFeatures(pb.ComputeCustomerFeaturesRequest(request_id=rid()), timeout=60)
    assert computed.customers_computed == 2
    buyer, carder = api.features("buyer"), api.features("carder")
    assert (buyer.order_count, buyer.average_order_value.amount_minor, buyer.uses_financial_products) == (
        2, (50_000 + 2 * 9_950) // 2, True,
    )  # fmt: skip
    assert (carder.order_count, carder.average_order_value.amount_minor, carder.uses_financial_products) == (
        1, 2_000_000, False,
    )  # fmt: skip
    assert buyer.lookback_days == 180 and buyer.source == promotions_pb2.FEATURE_SOURCE_COMPUTED
