"""A serving process freezes what start-up built and collects its youngest generation less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from shared.app import tune_garbage_collector
from shared.settings import ServiceSettings, SettingsError


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_start_up_objects_are_frozen_and_the_youngest_generation_waits_longer(restored: None) -> None:
    middle, oldest = gc.get_threshold()[1:]
    built_at_start_up = [{"a": [1, 2]} for _ in range(100)]
    tune_garbage_collector(50_000)
    assert gc.get_threshold() == (50_000, middle, oldest)
    assert gc.get_freeze_count() >= len(built_at_start_up)


def test_the_threshold_is_a_setting_with_a_floor() -> None:
    env = {"WALLET_DATABASE_URL": "sqlite:///x.db"}
    assert ServiceSettings.from_env("wallet", env).gc_threshold == 50_000
    assert ServiceSettings.from_env("wallet", {**env, "GC_THRESHOLD": "2000"}).gc_threshold == 2_000
    with pytest.raises(SettingsError, match="GC_THRESHOLD"):
        ServiceSettings.from_env("wallet", {**env, "GC_THRESHOLD": "0"})
