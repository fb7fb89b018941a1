from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.clock import ManualClock
from tests.harness import Databases, Harness, RunningService


def pytest_report_header() -> str:
    from tests.harness import test_database_url

    url = test_database_url()
    return f"database backend: {'postgresql (' + url + ')' if url else 'sqlite'}"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def databases(tmp_path: Path) -> Iterator[Databases]:
    dbs = Databases(tmp_path)
    yield dbs
    dbs.drop_all()


@pytest.fixture
def harness(databases: Databases, clock: ManualClock) -> Iterator[Harness]:
    h = Harness(databases, clock)
    yield h
    h.close()


@pytest.fixture
def points(harness: Harness) -> RunningService:
    return harness.start("points")


@pytest.fixture
def platform(harness: Harness) -> dict[str, RunningService]:
    """All four services wired together."""
    return harness.start_all()
