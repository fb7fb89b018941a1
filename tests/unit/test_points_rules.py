"""Property tests of the Points rules: how holds take lots, captures and returns split, reversals plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from loyalty.points.v1 import points_pb2

from services.points.domain.lots import Lifetimes, PointsSource, group_expiring
from services.points.domain.spending import (
    Returnable,
    Spendable,
    Take,
    allocate,
    attribute,
    plan_reversal,
    spending_order,
    split_capture,
    split_return,
)
from services.points.entrypoints.grpc_api import credit_answer
from shared.errors import FailedPrecondition

T0 = datetime(2026, 1, 1, tzinfo=UTC)

lots_strategy = st.lists(
    st.builds(
        Spendable,
        lot_id=st.uuids().map(str),
        free=st.integers(min_value=0, max_value=1_000),
        expires_at=st.integers(min_value=0, max_value=400).map(lambda d: T0 + timedelta(days=d)),
        created_at=st.integers(min_value=0, max_value=400).map(lambda d: T0 - timedelta(days=d)),
    ),
    max_size=8,
    unique_by=lambda lot: lot.lot_id,
)


@given(lots_strategy, st.integers(min_value=1, max_value=10_000))
def test_a_hold_takes_exactly_the_points_nearest_expiry_first_or_refuses(lots: list[Spendable], points: int) -> None:
    available = sum(lot.free for lot in lots)
    if points > available:
        with pytest.raises(FailedPrecondition) as refused:
            allocate(lots, points)
        assert refused.value.reason == "INSUFFICIENT_POINTS"
        return
    takes = allocate(lots, points)
    assert sum(take.points for take in takes) == points
    by_id = {lot.lot_id: lot for lot in lots}
    assert all(0 < take.points <= by_id[take.lot_id].free for take in takes)
    # Nearest expiry first: every lot before the last one taken is taken in full.
    order = [lot.lot_id for lot in spending_order(lots) if lot.free > 0]
    taken = [take.lot_id for take in takes]
    assert taken == order[: len(taken)]
    assert all(take.points == by_id[take.lot_id].free for take in takes[:-1])


@given(st.lists(st.integers(min_value=1, max_value=500), min_size=1, max_size=6), st.data())
def test_a_capture_spends_the_first_allocations_and_the_rest_goes_back(
    allocations: list[int], data: st.DataObject
) -> None:
    capture = data.draw(st.integers(min_value=0, max_value=sum(allocations)))
    captured = split_capture(allocations, capture)
    assert sum(captured) == capture
    assert all(0 <= c <= a for c, a in zip(captured, allocations, strict=True))
    first_short = next((i for i, (c, a) in enumerate(zip(captured, allocations, strict=True)) if c < a), None)
    if first_short is not None:
        assert all(c == 0 for c in captured[first_short + 1 :])


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=300)),
        min_size=1,
        max_size=6,
    ),
    st.data(),
)
def test_returns_give_back_latest_expiry_first_and_never_more_than_captured(
    parts: list[tuple[int, int]], data: st.DataObject
) -> None:
    allocations = [
        Returnable(f"lot-{i}", captured=c + r, returned=r, expires_at=T0 + timedelta(days=i % 3), position=i)
        for i, (c, r) in enumerate(parts)
    ]
    left = sum(a.captured - a.returned for a in allocations)
    points = data.draw(st.integers(min_value=0, max_value=left + 5))
    if points > left:
        with pytest.raises(ValueError):
            split_return(allocations, points)
        return
    takes = split_return(allocations, points)
    assert sum(t.points for t in takes) == points
    by_id = {a.lot_id: a for a in allocations}
    assert all(0 < t.points <= by_id[t.lot_id].captured - by_id[t.lot_id].returned for t in takes)
    expiries = [by_id[t.lot_id].expires_at for t in takes]
    assert expiries == sorted(expiries, reverse=True)


@given(
    st.integers(min_value=1, max_value=3_000),
    st.lists(st.integers(min_value=0, max_value=500), max_size=3),
    lots_strategy,
    lots_strategy,
)
def test_a_reversal_takes_pending_then_own_then_other_points_and_records_the_rest(
    points: int, pending: list[int], own: list[Spendable], others: list[Spendable]
) -> None:
    pending_takes = [Take(f"p{i}", p) for i, p in enumerate(pending)]
    plan = plan_reversal(points, pending_takes, own, others)
    assert plan.points_from_pending + plan.points_from_available + plan.unrecovered == points
    assert plan.unrecovered >= 0
    assert plan.points_from_pending == min(points, sum(pending))
    free = sum(lot.free for lot in own) + sum(lot.free for lot in others)
    assert plan.points_from_available == min(points - plan.points_from_pending, free)
    own_ids = {lot.lot_id for lot in own}
    own_taken = sum(t.points for t in plan.from_available if t.lot_id in own_ids)
    assert own_taken == min(points - plan.points_from_pending, sum(lot.free for lot in own))


@given(st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=5), st.data())
def test_attribution_withdraws_each_lot_at_most_its_outstanding_earning(
    outstanding: list[int], data: st.DataObject
) -> None:
    lots = [Take(f"lot-{i}", n) for i, n in enumerate(outstanding)]
    points = data.draw(st.integers(min_value=0, max_value=sum(outstanding)))
    takes = attribute(points, lots)
    assert sum(t.points for t in takes) == points
    limits = {lot.lot_id: lot.points for lot in lots}
    assert all(0 < t.points <= limits[t.lot_id] for t in takes)


def test_expiring_points_are_grouped_by_the_programme_day() -> None:
    moscow = ZoneInfo("Europe/Moscow")
    late = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)  # 01:30 on 2 March in Moscow
    groups = group_expiring(
        [(late, 10), (datetime(2026, 3, 1, 10, 0, tzinfo=UTC), 5), (datetime(2026, 3, 2, 5, 0, tzinfo=UTC), 7)], moscow
    )
    assert groups == [
        ("2026-03-01", datetime(2026, 3, 1, 10, 0, tzinfo=UTC), 5),
        ("2026-03-02", late, 17),
    ]


def test_lifetimes_by_source_override_the_default_and_bad_ones_are_refused() -> None:
    lifetimes = Lifetimes.parse(365, "promo_code=90, CAMPAIGN=60")
    assert lifetimes.of(PointsSource.PROMO_CODE) == timedelta(days=90)
    assert lifetimes.of(PointsSource.CAMPAIGN) == timedelta(days=60)
    assert lifetimes.of(PointsSource.PURCHASE) == timedelta(days=365)
    for bad in ("PROMO=90", "PROMO_CODE=0", "PROMO_CODE", "CAMPAIGN=x"):
        with pytest.raises(ValueError):
            Lifetimes.parse(365, bad)


@given(
    st.builds(
        points_pb2.Lot,
        lot_id=st.text(max_size=40),
        customer_id=st.text(max_size=64),
        amount=st.integers(min_value=0, max_value=2**62),
        remaining=st.integers(min_value=0, max_value=2**62),
        reference=st.text(max_size=200),
        reason=st.text(max_size=500),  # answers longer than 127 bytes: a length of two bytes or more
        status=st.sampled_from(list(points_pb2.LotStatus.values())),
    )
)
def test_a_batch_stores_each_credit_answer_exactly_as_credit_points_serializes_it(lot: points_pb2.Lot) -> None:
    expected = points_pb2.CreditPointsResponse(lot=lot).SerializeToString(deterministic=True)
    assert credit_answer(lot) == expected
    assert points_pb2.CreditPointsResponse.FromString(credit_answer(lot)).lot == lot


def test_a_new_lots_row_gives_each_column_its_own_value() -> None:
    """`NewLot.row()` is copied by position (`LOT_COLUMNS`): every value must sit under its name."""
    from datetime import UTC, datetime

    from services.points.service_layer.ledger import LOT_COLUMNS, NewLot

    created, expires = datetime(2026, 11, 1, tzinfo=UTC), datetime(2027, 11, 1, tzinfo=UTC)
    lot = NewLot("lot-1", "customer-1", 591, "WALLET_INTEREST", "ref-1", expires, created, "why", "op-1", 591)
    assert dict(zip(LOT_COLUMNS, lot.row(), strict=True)) == {
        "lot_id": "lot-1",
        "customer_id": "customer-1",
        "amount": 591,
        "remaining": 591,
        "held": 0,
        "withdrawn": 0,
        "source": "WALLET_INTEREST",
        "reference": "ref-1",
        "status": "AVAILABLE",
        "available_at": created,
        "expires_at": expires,
        "created_at": created,
        "reason": "why",
        "operator_id": "op-1",
    }
