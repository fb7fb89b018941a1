"""The scans of the Points jobs across all customers (expiry, activation) use the partial indexes
on lots (`ix_lots_available_expiry`, `ix_lots_pending_available`) in every plan PostgreSQL may
choose, generic ones too: a prepared statement's generic plan can use a partial index only when
the query names the status in its text, not as a bound parameter."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import event

from services.points.adapters.repository import PointsRepository
from services.points.bootstrap import MIGRATIONS
from services.points.domain.lots import Lifetimes
from services.points.service_layer.ledger import Ledger, PointsConfig
from shared.clock import ManualClock
from shared.db import Database
from shared.migrations import upgrade
from tests import harness
from tests.harness import Databases

pytestmark = pytest.mark.skipif(
    harness.test_database_url() is None,
    reason="query plans are PostgreSQL's (set TEST_DATABASE_URL)",
)

NOW = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def database(databases: Databases) -> Iterator[Database]:
    database = Database(databases.new("points_indexes"), pool_size=1)
    upgrade(database, MIGRATIONS)
    yield database
    database.dispose()


def statements_of(database: Database, run: Any) -> list[tuple[str, dict[str, Any]]]:
    """The SELECTs on lots that `run()` sent, with their parameters."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().startswith("SELECT") and "FROM lots" in statement:
            seen.append((statement, dict(parameters or {})))

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        run()
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
    assert seen, "the run sent no query on lots"
    return seen


def generic_plan(database: Database, statement: str, parameters: dict[str, Any]) -> str:
    """EXPLAIN of `statement` prepared on the server and planned generically (as a prepared
    statement is after its first executions), sequential scans off so that a tiny table does not
    hide the choice of index."""
    names: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    prepared = re.sub(r"%\((\w+)\)s", placeholder, statement).replace("%%", "%")
    conninfo = database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("SET enable_seqscan = off")
        connection.execute("SET plan_cache_mode = force_generic_plan")
        connection.execute(f"PREPARE q AS {prepared}")
        arguments = sql.SQL(", ").join(sql.Literal(parameters[name]) for name in names)
        rows = connection.execute(sql.SQL("EXPLAIN EXECUTE q({})").format(arguments)).fetchall()
    return "\n".join(row[0] for row in rows)


def test_the_expiry_scan_uses_the_partial_index_in_a_generic_plan(database: Database) -> None:
    config = PointsConfig(
        lifetimes=Lifetimes.parse(365, ""), zone=UTC, hold_ttl=timedelta(minutes=15), job_batch=100, expiry_chunk=100
    )
    ledger = Ledger(database, ManualClock(NOW), config)
    (statement, parameters), *_ = statements_of(database, ledger.expire_due)
    assert "lots.status = 'AVAILABLE'" in statement
    assert "ix_lots_available_expiry" in generic_plan(database, statement, parameters)


def test_the_scans_for_customers_due_use_the_partial_indexes(database: Database) -> None:
    def expired() -> None:
        with database.read() as session:
            PointsRepository(session).customers_with_expired_lots(NOW, 100)

    def activations() -> None:
        with database.read() as session:
            PointsRepository(session).customers_with_due_activations(NOW, 100)

    (statement, parameters), *_ = statements_of(database, expired)
    assert "ix_lots_available_expiry" in generic_plan(database, statement, parameters)
    (statement, parameters), *_ = statements_of(database, activations)
    assert "ix_lots_pending_available" in generic_plan(database, statement, parameters)
