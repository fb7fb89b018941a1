"""`UnitOfWork.on_commit`: callbacks run once after a commit, never after a rollback, and a failing
callback does not undo or fail the commit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.db import Database


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'uow.db'}")
    yield database
    database.dispose()


def test_callbacks_run_after_commit_only(database: Database) -> None:
    calls: list[str] = []
    with database.unit_of_work() as uow:
        uow.on_commit(lambda: calls.append("rolled back"))
    with pytest.raises(RuntimeError), database.unit_of_work() as uow:
        uow.on_commit(lambda: calls.append("failed"))
        raise RuntimeError("the effect failed")
    with database.unit_of_work() as uow:
        uow.on_commit(lambda: calls.append("committed"))
        assert calls == []
        uow.commit()
        uow.commit()  # a second commit does not run them again
    assert calls == ["committed"]


def test_a_failing_callback_does_not_fail_the_commit(database: Database) -> None:
    calls: list[str] = []

    def broken() -> None:
        raise ValueError("metrics backend gone")

    with database.unit_of_work() as uow:
        uow.on_commit(broken)
        uow.on_commit(lambda: calls.append("next"))
        uow.commit()
    assert calls == ["next"] and uow.committed
