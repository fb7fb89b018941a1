"""Property tests of the points balance rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.points.domain.lots import LotStatus, LotView, balance_of

NOW = datetime(2026, 6, 1, tzinfo=UTC)

lots = st.lists(
    st.builds(
        LotView,
        remaining=st.integers(min_value=0, max_value=10**9),
        status=st.sampled_from(list(LotStatus)),
        expires_at=st.integers(min_value=-400, max_value=400).map(lambda d: NOW + timedelta(days=d)),
    ),
    max_size=40,
)


@given(lots, st.integers(min_value=0, max_value=400))
def test_balance_counts_exactly_the_live_lots(views: list[LotView], window_days: int) -> None:
    balance = balance_of(views, NOW, timedelta(days=window_days))
    live = [v for v in views if v.expires_at > NOW]
    assert balance.available == sum(v.remaining for v in live if v.status is LotStatus.AVAILABLE)
    assert balance.pending == sum(v.remaining for v in live if v.status is LotStatus.PENDING)
    assert balance.available >= 0 and balance.pending >= 0
    expiring_total = sum(points for _, points in balance.expiring)
    assert expiring_total <= balance.available
    assert all(NOW < at <= NOW + timedelta(days=window_days) for at, _ in balance.expiring)
    assert [at for at, _ in balance.expiring] == sorted({at for at, _ in balance.expiring})
