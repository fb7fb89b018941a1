from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.clock import ManualClock, SystemClock


def test_manual_clock_moves_months_on_request_only() -> None:
    clock = ManualClock(datetime(2026, 1, 31, tzinfo=UTC))
    assert clock.now() == clock.now()
    clock.advance(timedelta(days=365))
    assert clock.now() == datetime(2027, 1, 31, tzinfo=UTC)


def test_manual_clock_refuses_naive_times_and_going_back() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="backwards"):
        ManualClock().advance(timedelta(seconds=-1))


def test_system_clock_is_utc() -> None:
    assert SystemClock().now().tzinfo is UTC
