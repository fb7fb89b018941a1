"""Pooled PostgreSQL connections: no round trip before each unit of work, yet a connection the
server has closed while it sat in the pool is replaced before use, so no request fails for it.

(`shared.db` dropped SQLAlchemy's `pool_pre_ping`, which cost a round trip per unit of work, for a
non-blocking look at the socket at checkout.)"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from shared.db import Database, connection_looks_dead
from tests import harness
from tests.harness import Databases

pytestmark = pytest.mark.skipif(
    harness.test_database_url() is None,
    reason="pooled network connections are a PostgreSQL matter (set TEST_DATABASE_URL)",
)


@pytest.fixture
def database(databases: Databases) -> Iterator[Database]:
    database = Database(databases.new("pool"), pool_size=1)
    yield database
    database.dispose()


def backend_pid(database: Database) -> int:
    with database.unit_of_work() as uow:
        pid = int(uow.session.execute(text("SELECT pg_backend_pid()")).scalar_one())
        uow.commit()
    return pid


def test_a_healthy_pooled_connection_is_reused_without_a_ping(database: Database) -> None:
    first = backend_pid(database)
    for _ in range(5):
        assert backend_pid(database) == first
    with database.engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        assert not connection_looks_dead(raw)
    assert not database.engine.pool._pre_ping  # the round trip is gone


def test_a_connection_the_server_closed_is_replaced_before_use(databases: Databases, database: Database) -> None:
    first = backend_pid(database)
    with databases._admin() as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (first,)).fetchone() == (True,)
        # Wait until the backend has gone: its socket, idle in our pool, is closed by then.
        deadline = time.monotonic() + 10
        while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (first,)).fetchone() != (0,):
            assert time.monotonic() < deadline, "the terminated backend did not go away"
            time.sleep(0.02)
    second = backend_pid(database)  # no OperationalError: the dead connection never reached a query
    assert second != first
    assert backend_pid(database) == second


def test_a_read_runs_outside_a_transaction_and_leaves_the_pooled_connection_transactional(
    database: Database,
) -> None:
    """`Database.read()`: one statement without BEGIN/ROLLBACK, on the same pooled connection a
    unit of work uses next, which must be back in transaction mode (a rollback still undoes)."""
    with database.unit_of_work() as uow:
        uow.session.execute(text("CREATE TABLE counter (n integer NOT NULL)"))
        uow.session.execute(text("INSERT INTO counter VALUES (1)"))
        uow.commit()
    with database.read() as session:
        assert session.execute(text("SELECT n FROM counter")).scalar_one() == 1
        # psycopg in autocommit mode sends no BEGIN before the statement and no ROLLBACK after.
        raw = session.connection().connection.dbapi_connection
        assert raw is not None and raw.autocommit
        reader = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with database.unit_of_work() as uow:
        assert uow.session.execute(text("SELECT pg_backend_pid()")).scalar_one() == reader  # pool of one
        uow.session.execute(text("UPDATE counter SET n = 2"))
        # not committed: the unit of work rolls it back
    with database.read() as session:
        assert session.execute(text("SELECT n FROM counter")).scalar_one() == 1


def test_a_statement_run_alone_commits_by_itself_in_autocommit(database: Database) -> None:
    """`Database.execute_alone()`: one write, committed without a transaction around it, and the
    pooled connection goes back to transaction mode afterwards."""
    with database.unit_of_work() as uow:
        uow.session.execute(text("CREATE TABLE queue (id integer PRIMARY KEY, claimed boolean NOT NULL)"))
        uow.session.execute(text("INSERT INTO queue VALUES (1, false), (2, false)"))
        uow.commit()
    claimed = database.execute_alone(
        text("UPDATE queue SET claimed = true WHERE id = :id RETURNING id"),
        {"id": 2},
    )
    assert [row[0] for row in claimed] == [2]
    with database.read() as session:  # committed: visible to the next statement
        assert session.execute(text("SELECT id FROM queue WHERE claimed")).scalars().all() == [2]
    with database.unit_of_work() as uow:
        raw = uow.session.connection().connection.dbapi_connection
        assert raw is not None and not raw.autocommit
