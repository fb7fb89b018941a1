"""Pooled PostgreSQL connections: no round trip before each unit of work, yet a connection the
server has closed while it sat in the pool is replaced before use, so no request fails for it.

(`shared.db` dropped SQLAlchemy's `pool_pre_ping`, which cost a round trip per unit of work, for a
non-blocking look at the socket at checkout.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from psycopg.adapt import PyFormat
from psycopg.pq import Format
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    Numeric,
    String,
    Table,
    literal_column,
    select,
    text,
)
from sqlalchemy.engine.default import CACHE_HIT
from sqlalchemy.exc import IntegrityError

from shared import bulk
from shared.db import Database, UtcDateTime, connection_looks_dead, utc_session_options
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


def test_sessions_run_in_utc_so_timestamps_come_back_with_the_standard_utc_zone(database: Database) -> None:
    # The server's own zone here may be `Etc/UTC` (a ZoneInfo in Python); with it, comparing a
    # loaded timestamp with the project's `datetime.UTC` instants looked the offset up each time.
    with database.read() as session:
        zone = session.execute(text("SHOW TimeZone")).scalar_one()
        stamp = session.execute(text("SELECT TIMESTAMPTZ '2026-10-31 21:00:00+00'")).scalar_one()
    with database.unit_of_work() as uow:
        in_transaction = uow.session.execute(text("SELECT now()")).scalar_one()
    assert zone == "UTC"
    assert stamp.tzinfo is UTC and in_transaction.tzinfo is UTC
    assert stamp == datetime(2026, 10, 31, 21, tzinfo=UTC)


def test_utc_sessions_keep_the_options_the_url_gives() -> None:
    plain = "postgresql+psycopg://u@h/db"
    assert utc_session_options(plain) == "-c TimeZone=UTC"
    given = "postgresql+psycopg://u@h/db?options=-c%20statement_timeout%3D5000"
    assert utc_session_options(given) == "-c statement_timeout=5000 -c TimeZone=UTC"


def test_array_parameters_go_in_binary_and_arrive_intact(database: Database) -> None:
    # As text, psycopg quotes and escapes each element in Python (a fifth of a 1,000-credit batch).
    dumper = psycopg.adapters.get_dumper(bulk.BinaryArray, PyFormat.AUTO)
    assert dumper.format == Format.BINARY
    texts = ["", "a,b", 'quo"te', "back\\slash", "{braces}", "NULL", "ключ", " spaced "]
    blobs = [b"", b"\x00\x01\xff", "ключ".encode()]
    numbers = [0, -1, 2**40, 7]
    with database.read() as session:
        row = session.execute(
            text("SELECT CAST(:t AS text[]), CAST(:b AS bytea[]), CAST(:n AS bigint[]), CAST(:e AS text[])"),
            {"t": bulk.array(texts), "b": bulk.array(blobs), "n": bulk.array(numbers), "e": bulk.array([])},
        ).one()
        column = literal_column("'{braces}'", String)
        found = session.execute(select(bulk.any_of(session, column, texts))).scalar_one()
        missing = session.execute(select(bulk.any_of(session, column, ["x", "y"]))).scalar_one()
    assert (list(row[0]), [bytes(b) for b in row[1]], list(row[2]), list(row[3])) == (texts, blobs, numbers, [])
    assert (found, missing) == (True, False)


def test_copy_goes_in_binary_when_every_column_allows_it_and_in_text_otherwise(database: Database) -> None:
    metadata = MetaData()
    binary = Table(
        "copy_binary",
        metadata,
        Column("key", String(8), primary_key=True),
        Column("amount", BigInteger),
        Column("at", DateTime(timezone=True)),
        Column("note", String(20)),
    )
    texty = Table("copy_text", metadata, Column("key", String(8), primary_key=True), Column("rate", Numeric(6, 3)))
    metadata.create_all(database.engine)
    at = datetime(2026, 10, 31, 21, 0, 0, 123456, tzinfo=UTC)
    rows = [
        {"key": "a", "amount": -(2**40), "at": at, "note": 'tab\tquote"ключ\\'},
        {"key": "b", "amount": 0, "at": None, "note": ""},
    ]
    assert bulk._binary_copy_types(binary, ("key", "amount", "at", "note")) is not None
    assert bulk._binary_copy_types(texty, ("key", "rate")) is None
    with database.unit_of_work() as uow:
        bulk.insert_rows(uow.session, binary, rows)
        bulk.insert_rows(uow.session, texty, [{"key": "r", "rate": Decimal("1.250")}])
        uow.commit()
    with database.read() as session:
        loaded = [dict(row._mapping) for row in session.execute(select(binary).order_by(binary.c.key))]
        rate = session.execute(select(texty.c.rate)).scalar_one()
    assert loaded == rows and rate == Decimal("1.250")
    with database.unit_of_work() as uow, pytest.raises(IntegrityError):  # a key already there, as for an INSERT
        bulk.insert_rows(uow.session, binary, rows[:1])


def test_one_statement_commits_by_itself_in_autocommit(database: Database) -> None:
    """`Database.one_statement()`: a unit of work whose one write commits without a transaction
    around it (no BEGIN and COMMIT round trips); the pooled connection goes back to transaction
    mode afterwards."""
    with database.unit_of_work() as uow:
        uow.session.execute(text("CREATE TABLE ledger (id integer PRIMARY KEY, note text NOT NULL)"))
        uow.commit()
    with database.one_statement() as uow:
        raw = uow.session.connection().connection.dbapi_connection
        assert raw is not None and raw.autocommit
        uow.session.execute(text("INSERT INTO ledger VALUES (1, 'alone')"))
        with database.read() as session:  # committed already, before the unit of work ends
            assert session.execute(text("SELECT note FROM ledger")).scalars().all() == ["alone"]
        uow.commit()
    with database.unit_of_work() as uow:
        raw = uow.session.connection().connection.dbapi_connection
        assert raw is not None and not raw.autocommit


def test_a_values_insert_is_compiled_once_and_its_rows_arrive_intact(database: Database) -> None:
    """`bulk.values_insert`: several rows in one INSERT, as text SQLAlchemy compiles once and
    then finds in its cache (an `insert().values()` of several rows was compiled on every call);
    typed parameters, and a key the database generates left to it."""
    metadata = MetaData()
    events = Table(
        "events_many",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("order_id", String(8), nullable=False),
        Column("at", UtcDateTime, nullable=False),
    )
    metadata.create_all(database.engine)
    insert = bulk.values_insert(events, 2, "e")
    assert bulk.values_insert(events, 2, "e") is insert  # built once
    assert insert.columns == ("order_id", "at")
    at = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    hits = []
    for number in range(3):
        params = {
            **insert.params(0, {"order_id": f"a{number}", "at": at}),
            **insert.params(1, {"order_id": "b", "at": at}),
        }
        with database.unit_of_work() as uow:
            result = uow.session.execute(insert.statement, params)
            hits.append(result.context.cache_hit)  # type: ignore[attr-defined]
            uow.commit()
    assert hits[1:] == [CACHE_HIT, CACHE_HIT]
    with database.read() as session:
        rows = session.execute(select(events).order_by(events.c.id)).all()
    assert [(row.order_id, row.at) for row in rows] == [
        ("a0", at),
        ("b", at),
        ("a1", at),
        ("b", at),
        ("a2", at),
        ("b", at),
    ]
    assert [row.id for row in rows] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError):
        bulk.values_insert(events, 0, "e")
