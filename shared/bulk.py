"""Set-based writes for the batch jobs: many rows in one statement, inside the caller's transaction.

The batch jobs (interest posting, points credits in batches, expiry) write thousands of rows per
transaction; one ORM object and one statement per row is what made them slow. These helpers take
plain rows (dicts, all with the same keys) and:

- `insert_rows`: PostgreSQL `COPY ... FROM STDIN` on the transaction's own connection (so the rows
  commit or roll back with everything else), in binary when every column's type allows it;
  elsewhere (SQLite) one executemany. `copy_rows` takes the rows as tuples in a column order.
- `add_to_columns`: `UPDATE table SET col = col + delta ... WHERE key = ...` for many keys, as one
  UPDATE ... FROM unnest(arrays) on PostgreSQL; an executemany elsewhere.
- `any_of`: `column IN (values)` as `column = ANY(:array)` on PostgreSQL (one parameter, however
  many values), an expanding IN elsewhere.
- `hash_part`: the rows whose key falls in one of `parts` disjoint parts (by a hash of the key),
  so that a job can be split between workers that never touch the same customer.
- `values_insert`: `INSERT ... VALUES (...), (...)` of a fixed number of rows as SQL text that
  SQLAlchemy compiles once and caches (for a few rows written per request, not the jobs).
- `plain_rows`: the rows of a read as the driver's tuples when no column needs converting (a
  job reads tens of thousands of rows a chunk; a SQLAlchemy `Row` each doubled the cost);
  `as_stored` reads a UTC timestamp column without its conversion where the driver's value is
  already aware (PostgreSQL).
- `array`: a list parameter psycopg sends in binary (`CAST(:p AS text[])` and the like). As text,
  each element is quoted and escaped in Python: 1,000 request ids took 2.6 ms to send and 1,000
  stored answers (`bytea[]`) 9.7 ms, against about 0.6 ms each in binary.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from typing import cast as cast_type

import psycopg
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Executable,
    Table,
    TextClause,
    any_,
    bindparam,
    cast,
    func,
    insert,
    text,
    true,
    type_coerce,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.types import NullType


class BinaryArray(list[Any]):
    """A list that psycopg sends as a binary array (registered below, for every connection)."""


psycopg.adapters.register_dumper(BinaryArray, ListBinaryDumper)
_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


def array(values: Iterable[Any]) -> BinaryArray:
    """`values` as an array parameter sent in binary; give it a type in SQL (`CAST(:p AS text[])`)."""
    return BinaryArray(values)


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` (same keys each) into `table` in the caller's transaction."""
    if not rows:
        return
    columns = tuple(rows[0].keys())
    if dialect_of(session) != "postgresql":
        session.execute(insert(table), list(rows))
        return
    copy_rows(session, table, columns, [[row[name] for name in columns] for row in rows])


def copy_rows(session: Session, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """`insert_rows` of rows given as values in the order of `columns`: a job that makes
    thousands of rows need not build a dict for each only to have it taken apart again."""
    if not rows:
        return
    if dialect_of(session) != "postgresql":
        session.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    connection = session.connection().connection.driver_connection
    assert connection is not None
    names = ", ".join(f'"{name}"' for name in columns)
    types = _binary_copy_types(table, tuple(columns))
    statement = f'COPY "{table.name}" ({names}) FROM STDIN' + (" (FORMAT BINARY)" if types else "")
    try:
        with connection.cursor() as cursor, cursor.copy(statement) as copy:
            if types:
                copy.set_types(types)
            for row in rows:
                copy.write_row(row)
    except psycopg.errors.IntegrityError as error:  # as SQLAlchemy would raise it for an INSERT
        raise IntegrityError(statement, None, error) from error


# Column types whose binary form psycopg writes from the Python values the services hold (str,
# int, bool, bytes, aware datetime). COPY in binary costs a third of COPY in text (10,000 lots:
# 16 to 26 ms against 64 to 90 ms): text formats every timestamp and escapes every string.
_BINARY_COPY_TYPES = frozenset(
    {"varchar", "text", "bigint", "integer", "smallint", "boolean", "bytea", "timestamp with time zone"}
)
_copy_types: dict[tuple[Table, tuple[str, ...]], list[str] | None] = {}


def _binary_copy_types(table: Table, columns: tuple[str, ...]) -> list[str] | None:
    """The PostgreSQL type names of `columns` for a binary COPY, or None (COPY in text) when one
    of them is not a type listed above."""
    key = (table, columns)
    if key not in _copy_types:
        names = [table.c[name].type.compile(dialect=_POSTGRESQL).lower().split("(")[0].strip() for name in columns]
        _copy_types[key] = names if all(name in _BINARY_COPY_TYPES for name in names) else None
    return _copy_types[key]


def add_to_columns(
    session: Session,
    table: Table,
    key: str,
    deltas: Mapping[str, Sequence[int]],
    keys: Sequence[str],
    also: Mapping[str, Any] | None = None,
) -> None:
    """For each i: `UPDATE table SET c = c + deltas[c][i] (for each c), also... WHERE key = keys[i]`.

    `keys` must be distinct (sum the deltas of one key first); give them sorted, so that
    concurrent callers lock rows in one order."""
    if not keys:
        return
    also = dict(also or {})
    if dialect_of(session) == "postgresql":
        sets = [f'"{c}" = t."{c}" + v."{c}"' for c in deltas] + [f'"{c}" = :{c}' for c in also]
        arrays = ", ".join(f'unnest(CAST(:d_{c} AS bigint[])) AS "{c}"' for c in deltas)
        statement = text(
            f'UPDATE "{table.name}" AS t SET {", ".join(sets)}'
            f' FROM (SELECT unnest(CAST(:keys AS text[])) AS "key", {arrays}) AS v'
            f' WHERE t."{key}" = v."key"'
        ).bindparams(*(bindparam(c, type_=table.c[c].type) for c in also))
        params: dict[str, Any] = {"keys": array(keys), **{f"d_{c}": array(v) for c, v in deltas.items()}, **also}
        session.execute(statement, params)
        return
    assignments = ", ".join([f'"{c}" = "{c}" + :d_{c}' for c in deltas] + [f'"{c}" = :{c}' for c in also])
    statement = text(f'UPDATE "{table.name}" SET {assignments} WHERE "{key}" = :key').bindparams(
        *(bindparam(c, type_=table.c[c].type) for c in also)
    )
    session.execute(
        statement,
        [{"key": k, **{f"d_{c}": v[i] for c, v in deltas.items()}, **also} for i, k in enumerate(keys)],
    )


def plain_rows(
    session: Session, statement: Executable, params: Mapping[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    """The rows of `statement`, run in the session's transaction, as plain tuples.

    When no column of the result has a conversion (a type's result processor: SQLite's naive
    times made aware, for one), the tuples are the driver's own, fetched from its cursor, with
    no SQLAlchemy `Row` built for each. For 40,000 rows of (text, timestamptz, bigint) on
    PostgreSQL that is 51-85 ms of CPU against 123-184 ms. Otherwise each row is converted as
    usual and given as a tuple. The statement is compiled, bound and traced as any other."""
    result = session.connection().execute(statement, params)
    try:
        if any(result._metadata._processors):  # some column is converted: let SQLAlchemy do it
            return [tuple(row) for row in result]
        cursor = result.cursor
        return [] if cursor is None else cast_type(list[tuple[Any, ...]], cursor.fetchall())
    finally:
        result.close()


_AWARE = DateTime(timezone=True)


def as_stored(session: Session, column: ColumnElement[Any]) -> ColumnElement[Any]:
    """A `UtcDateTime` column to read with `plain_rows`: on PostgreSQL as the driver gives it
    (aware, in the session's UTC zone), without the type's conversion of each value, so the
    rows stay the driver's own; elsewhere (SQLite's naive values) converted as usual."""
    return type_coerce(column, _AWARE) if dialect_of(session) == "postgresql" else column


def any_of(session: Session, column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN values`: one array parameter on PostgreSQL, an expanding IN elsewhere."""
    if dialect_of(session) == "postgresql":
        item_type: TypeEngine[Any] = column.type
        # Untyped for SQLAlchemy (its ARRAY type would copy the list back into a plain one, sent
        # as text), typed by the CAST in SQL.
        values_param = bindparam(None, array(values), type_=NullType(), unique=True)
        return column == any_(cast(values_param, ARRAY(item_type)))
    return column.in_(list(values))


def hash_part(column: ColumnElement[str], parts: int, part: int) -> ColumnElement[bool]:
    """Rows whose `column` falls in part `part` (0 to `parts` - 1) of `parts`: the parts are
    disjoint and together cover every row, so workers given one part each never meet on a key.
    PostgreSQL's `hashtext` (a signed 32-bit hash); SQLite gets a function of that name from
    `shared.db` (CRC-32 based). The two differ, which only matters within one database."""
    if not 0 <= part < parts:
        raise ValueError(f"part {part} is not one of {parts} parts")
    if parts == 1:
        return true()
    return (cast(func.hashtext(column), BigInteger) + 2**31) % parts == part


@dataclass(frozen=True)
class ValuesInsert:
    """`INSERT INTO table (columns) VALUES (...), (...)` of a fixed number of rows, as SQL text
    with typed bind parameters named `<prefix><row>_<column>` (`params` makes them). SQLAlchemy
    caches the compiled form of text; it does not cache an `insert().values()` of several rows,
    nor INSERTs in WITH clauses, and compiled those again on every call (6 ms for an order with
    its lines). `sql` can go into a larger statement, `binds` with it."""

    sql: str
    binds: tuple[BindParameter[Any], ...]
    prefix: str
    columns: tuple[str, ...]

    @functools.cached_property
    def statement(self) -> TextClause:
        return text(self.sql).bindparams(*self.binds)

    def params(self, row: int, values: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters of row number `row` (from 0) from its values by column name."""
        return {f"{self.prefix}{row}_{name}": values[name] for name in self.columns}

    def params_of(self, row: int, obj: Any) -> dict[str, Any]:
        """The parameters of row number `row` from an object's attributes named as the columns."""
        return {f"{self.prefix}{row}_{name}": getattr(obj, name) for name in self.columns}


@functools.cache
def values_insert(table: Table, rows: int, prefix: str, columns: tuple[str, ...] | None = None) -> ValuesInsert:
    """The INSERT of `rows` rows into `table` with `columns` (by default every column but a key
    the database generates), built once per arguments."""
    if rows < 1:
        raise ValueError("an INSERT needs at least one row")
    names = columns or tuple(c.name for c in table.columns if c is not table.autoincrement_column)
    binds: list[BindParameter[Any]] = []
    tuples = []
    for row in range(rows):
        params = [f"{prefix}{row}_{name}" for name in names]
        binds.extend(bindparam(p, type_=table.c[name].type) for p, name in zip(params, names, strict=True))
        tuples.append("(" + ", ".join(f":{p}" for p in params) + ")")
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES {', '.join(tuples)}"
    return ValuesInsert(sql, tuple(binds), prefix, names)
