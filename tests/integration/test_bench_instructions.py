"""The instruction-count benchmark itself works: each scenario runs once under callgrind (real
services in the child process, counting switched on and off from outside) and reports a count.
No figure is asserted beyond being plausible: figures are not tests. Skipped without valgrind,
and on SQLite: the benchmark measures on PostgreSQL (issue #11; the interest and expiry
scenarios seed with PostgreSQL's SQL), and callgrind runs in both CI suites took CI past its time."""

from __future__ import annotations

import shutil

import pytest

from bench.instructions import SCENARIOS, measure
from tests.harness import test_database_url as database_url

pytestmark = [
    pytest.mark.skipif(
        shutil.which("valgrind") is None or shutil.which("callgrind_control") is None, reason="needs valgrind"
    ),
    pytest.mark.skipif(database_url() is None, reason="the benchmark measures on PostgreSQL (set TEST_DATABASE_URL)"),
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_counts_the_instructions_of_its_units(scenario: str) -> None:
    found = measure(scenario, 1, None, database_url())
    # An order is tens of millions of instructions, a batch of 1,000 credits hundreds of millions.
    assert 10e6 < found["per_unit"] < 5e9, found
    assert found["instructions"] == found["per_unit"]
