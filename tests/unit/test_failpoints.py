"""Failpoints: the FAILPOINTS syntax, counted actions, and the in-process arm/disarm."""

from __future__ import annotations

import pytest

from shared import failpoints
from shared.errors import PeerDeadlineExceeded, PeerUnavailable


def test_the_syntax_names_an_action_and_how_often() -> None:
    armed = failpoints.parse(" checkout.saga.after.HOLD_MONEY , points.rpc.CreditPoints.after=sleep:250*2,x=deadline")
    assert [(name, a.action, a.sleep_ms, a.remaining) for name, a in armed.items()] == [
        ("checkout.saga.after.HOLD_MONEY", "kill", 0, None),
        ("points.rpc.CreditPoints.after", "sleep", 250, 2),
        ("x", "deadline", 0, None),
    ]
    assert failpoints.parse("") == {}
    for bad in ("a=explode", "a=sleep", "a=kill:3"):
        with pytest.raises(ValueError, match="unknown failpoint action"):
            failpoints.parse(bad)


def test_a_counted_failpoint_fires_that_often_then_disarms_itself() -> None:
    failpoints.arm("test.lost", "unavailable*2")
    try:
        for _ in range(2):
            with pytest.raises(PeerUnavailable):
                failpoints.hit("test.lost")
        failpoints.hit("test.lost")  # disarmed now
        assert not failpoints.is_armed("test.lost")
        with failpoints.armed("test.slow", "deadline"), pytest.raises(PeerDeadlineExceeded):
            failpoints.hit("test.slow")
        failpoints.hit("test.slow")
        failpoints.arm("test.sleep", "sleep:1*1")
        failpoints.hit("test.sleep")
        assert failpoints.wait_idle(1)
        failpoints.hit("not.armed")
    finally:
        failpoints.disarm()
