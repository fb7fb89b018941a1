"""The job runner of the CronJobs: one request id per scheduled run, so a retried pod replays
instead of running twice; a new schedule runs again; failures exit non-zero."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.clock import ManualClock
from shared.jobs import JOBS, main, request_id_for, run_job, scheduled_time
from shared.settings import Env, SettingsError
from shared.telemetry import Telemetry
from tests.clients import PointsClient
from tests.harness import UNREACHABLE, Harness

NOW = datetime(2026, 3, 1, 0, 7, 31, tzinfo=UTC)


def test_the_scheduled_minute_comes_from_the_cronjob_job_name() -> None:
    # A CronJob names its Jobs `<cronjob>-<scheduled time in minutes since the epoch>`.
    minutes = int(datetime(2026, 2, 28, 21, 5, tzinfo=UTC).timestamp()) // 60
    when = scheduled_time(None, f"loyalty-expire-points-{minutes}", NOW)
    assert when == datetime(2026, 2, 28, 21, 5, tzinfo=UTC)
    assert request_id_for("expire-points", when) == "job:expire-points:2026-02-28T21:05Z"
    # The pod's own start time does not matter: two pods of one run share the id.
    assert scheduled_time(None, f"loyalty-expire-points-{minutes}", NOW + timedelta(minutes=9)) == when


def test_an_explicit_time_wins_and_a_manual_run_uses_the_current_minute() -> None:
    assert scheduled_time("2026-02-01T00:05:59+03:00", "ignored-123456789", NOW) == datetime(
        2026, 1, 31, 21, 5, tzinfo=UTC
    )
    assert scheduled_time(None, "expire-points-manual", NOW) == datetime(2026, 3, 1, 0, 7, tzinfo=UTC)
    assert scheduled_time(None, None, NOW) == datetime(2026, 3, 1, 0, 7, tzinfo=UTC)
    with pytest.raises(SettingsError, match="UTC offset"):
        scheduled_time("2026-02-01T00:05", None, NOW)


def test_every_job_builds_a_request_with_the_run_id() -> None:
    from shared.jobs import Run

    run = Run(request_id="job:x:1", scheduled_at=datetime(2026, 2, 28, 21, 5, tzinfo=UTC), env=Env({}))
    for name, job in JOBS.items():
        request = job.request(run)
        assert request.request_id == "job:x:1", name  # type: ignore[attr-defined]
    # The monthly posting takes the month that ended before the schedule, in programme time:
    # 2026-02-28T21:05Z is already March 1st in Moscow.
    interest = JOBS["post-monthly-interest"].request(run)
    assert interest.month == "2026-02"  # type: ignore[attr-defined]


def test_a_rerun_of_the_same_schedule_replays_and_the_next_schedule_runs(harness: Harness, clock: ManualClock) -> None:
    points = harness.start("points")
    client = PointsClient(points.channel())
    client.credit("c-1", 40, expires_at=clock.now() + timedelta(days=1))
    clock.advance(timedelta(days=2))
    env = Env({"POINTS_TARGET": points.target})
    telemetry = Telemetry("jobs", environ={})
    first = run_job("expire-points", env=env, telemetry=telemetry, scheduled_at="2026-01-03T03:00:00+00:00")
    client.credit("c-1", 5, expires_at=clock.now() + timedelta(seconds=1))
    clock.advance(timedelta(minutes=1))
    again = run_job("expire-points", env=env, telemetry=telemetry, scheduled_at="2026-01-03T03:00:00+00:00")
    later = run_job("expire-points", env=env, telemetry=telemetry, scheduled_at="2026-01-04T03:00:00+00:00")
    assert (first.points_expired, again.points_expired, later.points_expired) == (40, 40, 5)  # type: ignore[attr-defined]


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """`main` configures the root logger as a process would; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("keep_logging")
def test_the_command_prints_the_answer_and_exits_non_zero_on_failure(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    points = harness.start("points")
    environ = {"POINTS_TARGET": points.target, "LOG_FORMAT": "json", "JOB_NAME": "loyalty-activate-due-points-1"}
    assert main(["activate-due-points"], environ) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"job": "activate-due-points", "result": {}}  # nothing was due: all zero

    unreachable = {"POINTS_TARGET": UNREACHABLE, "PEER_RETRY_ATTEMPTS": "1", "LOG_FORMAT": "json"}
    assert main(["expire-points", "--deadline-ms", "2000"], unreachable) == 1
    assert main(["expire-points", "--scheduled-at", "yesterday"], {"POINTS_TARGET": points.target}) == 2
    assert main(["expire-points"], {"POINTS_TARGET": points.target, "OTEL_TRACES_EXPORTER": "zipkin"}) == 2
