"""Database access: one engine per service database, sessions through a unit of work.

SQLite (WAL) is the embedded default; PostgreSQL through psycopg 3 is production and CI. On
SQLite every transaction starts with `BEGIN IMMEDIATE`, so writers queue on the database lock
instead of failing when a read lock would have to be upgraded; on PostgreSQL transactions run
at READ COMMITTED and repositories take row locks (`SELECT ... FOR UPDATE`) where a rule reads
before it writes.
"""

from __future__ import annotations

import logging
import select
import sqlite3
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, DateTime, Engine, Executable, Result, Row, create_engine, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session

log = logging.getLogger(__name__)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite has no time zones: store naive UTC there.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def normalise_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and route them to psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def is_sqlite(url: str) -> bool:
    return make_url(normalise_url(url)).get_backend_name() == "sqlite"


def create_db_engine(url: str, *, pool_size: int = 10) -> Engine:
    url = normalise_url(url)
    if is_sqlite(url):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        _configure_sqlite(engine)
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        isolation_level="READ COMMITTED",
        connect_args={"options": utc_session_options(url)},
    )
    _configure_liveness(engine)
    return engine


def utc_session_options(url: str) -> str:
    """libpq `options` for a session in UTC (the URL's own options kept). Stored instants do not
    depend on it, and no statement of the project reads the session's zone; but psycopg then
    returns timestamps with `datetime.UTC` itself as their zone, so converting them to UTC and
    comparing them with the project's UTC instants is a pointer check, where a server zone
    such as `Etc/UTC` made each a `ZoneInfo` offset look-up (a sixth of the Wallet's CPU while
    it posted interest)."""
    given = make_url(url).query.get("options")
    return " ".join([*([given] if isinstance(given, str) else list(given or ())), "-c TimeZone=UTC"])


def connection_looks_dead(dbapi_connection: Any) -> bool:
    """True when a pooled psycopg connection can no longer be used, found without a round trip.

    An idle connection receives nothing from PostgreSQL unless the server is ending it (a
    terminated backend, a restart) or reports a setting change; so a socket with something to
    read, or an error or hang-up on it, means the connection is gone or may be. A false alarm
    only costs a reconnect."""
    if dbapi_connection.closed or dbapi_connection.broken:
        return True
    try:
        descriptor = dbapi_connection.fileno()
    except Exception:
        return True
    poller = select.poll()
    poller.register(descriptor, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def _configure_liveness(engine: Engine) -> None:
    """Replace SQLAlchemy's `pool_pre_ping` (a `SELECT 1`-like round trip before every unit of
    work, about 0.5 ms of CPU each, so a fifth of a simple read RPC) by a non-blocking look at
    the socket when a connection leaves the pool. A dead one is replaced before it is used, so a
    database that restarted costs no failed request."""

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if connection_looks_dead(dbapi_connection):
            raise DisconnectionError("the database closed this pooled connection")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so BEGIN is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
        dbapi_connection.create_function("hashtext", 1, sqlite_hashtext, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_hashtext(value: str | None) -> int | None:
    """SQLite's stand-in for PostgreSQL's `hashtext` (used by `shared.bulk.hash_part`): a signed
    32-bit hash of the text, CRC-32 here."""
    if value is None:
        return None
    return zlib.crc32(value.encode()) - 2**31


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched (typed: `Session.execute` returns the general Result)."""
    return cast("CursorResult[Any]", result).rowcount


class UnitOfWork:
    """One database transaction. It rolls back unless `commit()` is called."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.committed = False
        self._after_commit: list[Callable[[], None]] = []

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this transaction has committed (never if it rolls back): for
        metrics of an effect, which an idempotent replay or a failed attempt must not count."""
        self._after_commit.append(callback)

    def commit(self) -> None:
        self.session.commit()
        self.committed = True
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.warning("after-commit callback failed", exc_info=True)

    def flush(self) -> None:
        self.session.flush()


class Database:
    """A service's own database: its engine, sessions and health probe."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = normalise_url(url)
        self.engine = create_db_engine(self.url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        self._probe_engine = self._make_probe_engine()
        # Shares the engine's pool; its connections are handed out in autocommit mode.
        self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        session = Session(self.engine, expire_on_commit=False)
        uow = UnitOfWork(session)
        try:
            yield uow
            if not uow.committed:
                session.rollback()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads. On PostgreSQL it runs outside a transaction (autocommit): at READ
        COMMITTED each statement of a transaction takes its own snapshot anyway, so the reads see
        the same without the BEGIN and ROLLBACK round trips. On SQLite it is a unit of work as any
        other (autocommit there would still take the database lock per statement). Reads that
        lock rows (`FOR UPDATE`) or write belong in `unit_of_work`."""
        if self.dialect != "postgresql":
            with self.unit_of_work() as uow:
                yield uow.session
            return
        with Session(self._autocommit_engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def one_statement(self) -> Iterator[UnitOfWork]:
        """A unit of work for a write that is one statement (an ORM flush of one changed row,
        say). On PostgreSQL it runs in autocommit, where the statement is atomic by itself, so
        without the BEGIN and COMMIT round trips; elsewhere it is an ordinary unit of work. The
        caller must not write more than one statement here: two would not be one transaction."""
        if self.dialect != "postgresql":
            with self.unit_of_work() as uow:
                yield uow
            return
        with Session(self._autocommit_engine, expire_on_commit=False) as session:
            yield UnitOfWork(session)

    def execute_alone(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Sequence[Row[Any]]:
        """Run one statement as a transaction of its own and return its rows (a write returns
        those of its RETURNING clause). On PostgreSQL it runs in autocommit, where a statement is
        atomic by itself, so without the BEGIN and COMMIT round trips; on SQLite in a unit of work
        that commits."""
        if self.dialect != "postgresql":
            with self.unit_of_work() as uow:
                rows = uow.session.execute(statement, params).all()
                uow.commit()
            return rows
        # A connection, not an ORM session: one statement needs none of a session's bookkeeping
        # (an outbox relay's empty poll cost about a third less this way).
        with self._autocommit_engine.connect() as connection:
            return connection.execute(statement, params).all()

    def ping(self) -> bool:
        """True when the database answers and holds this service's schema."""
        try:
            with self._probe_engine.connect() as connection:
                connection.execute(text("SELECT version_num FROM alembic_version"))
            return True
        except Exception as exc:
            log.warning("database probe failed: %s", exc.__class__.__name__)
            return False

    def _make_probe_engine(self) -> Engine:
        # A fresh connection per probe, so a database that went away is noticed; on SQLite the
        # file is opened read-write without being created, so a missing file is a failure.
        url = make_url(self.url)
        if self.dialect == "sqlite":
            path = url.database or ""
            return create_engine(
                "sqlite://",
                creator=lambda: sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=5),
                poolclass=NullPool,
            )
        return create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 2})

    def dispose(self) -> None:
        self.engine.dispose()
        self._probe_engine.dispose()

    @property
    def supports_skip_locked(self) -> bool:
        return self.dialect == "postgresql"
