"""The instruction-count benchmark itself works: each scenario runs once under callgrind (real
services in the child process, counting switched on and off from outside) and reports a count.
No figure is asserted beyond being plausible: figures are not tests. Skipped without valgrind.
On SQLite, or on the test PostgreSQL when TEST_DATABASE_URL is set."""

from __future__ import annotations

import shutil

import pytest

from bench.instructions import SCENARIOS, measure
from tests.harness import test_database_url as database_url

pytestmark = pytest.mark.skipif(
    shutil.which("valgrind") is None or shutil.which("callgrind_control") is None, reason="needs valgrind"
)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_counts_the_instructions_of_its_units(scenario: str) -> None:
    found = measure(scenario, 1, None, database_url())
    # An order is tens of millions of instructions, a batch of 1,000 credits hundreds of millions.
    assert 10e6 < found["per_unit"] < 5e9, found
    assert found["instructions"] == found["per_unit"]
