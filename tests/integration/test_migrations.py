"""Each service's migrations build exactly the schema its tables declare, and can be undone."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from shared.db import Database
from shared.migrations import alembic_config, upgrade
from tests.harness import Databases


@pytest.mark.parametrize("service", ["wallet", "points", "promotions", "checkout"])
def test_migrations_match_the_tables_and_downgrade_cleanly(service: str, databases: Databases) -> None:
    from alembic import command

    tables = importlib.import_module(f"services.{service}.adapters.tables")
    bootstrap = importlib.import_module(f"services.{service}.bootstrap")
    database = Database(databases.new(service))
    try:
        upgrade(database, bootstrap.MIGRATIONS)
        with database.engine.connect() as connection:
            diff = compare_metadata(
                MigrationContext.configure(connection, opts={"compare_type": True}), tables.metadata
            )
        assert diff == [], f"{service}: migrations and tables disagree: {diff}"
        command.downgrade(alembic_config(bootstrap.MIGRATIONS, database), "base")
        assert set(inspect(database.engine).get_table_names()) <= {"alembic_version"}
        upgrade(database, bootstrap.MIGRATIONS)  # and forward again
    finally:
        database.dispose()


@pytest.mark.parametrize("service", ["wallet", "points", "promotions", "checkout"])
def test_large_answers_and_payloads_are_compressed_with_lz4_where_postgresql_offers_it(
    service: str, databases: Databases
) -> None:
    from alembic import command
    from sqlalchemy import text

    from shared.runtime_tables import LARGE_BLOBS

    bootstrap = importlib.import_module(f"services.{service}.bootstrap")
    database = Database(databases.new(f"{service}_lz4"))
    try:
        upgrade(database, bootstrap.MIGRATIONS)
        if database.engine.dialect.name != "postgresql":
            pytest.skip("column compression is PostgreSQL's; SQLite stores values as they are")
        with database.engine.connect() as connection:
            offered = connection.execute(
                text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
            ).scalar_one()

            def methods() -> set[str]:
                return {
                    connection.execute(
                        text(
                            "SELECT attcompression FROM pg_attribute"
                            " WHERE attrelid = CAST(:table AS regclass) AND attname = :column"
                        ),
                        {"table": table, "column": column},
                    ).scalar_one()
                    for table, column in LARGE_BLOBS
                }

            assert methods() == ({"l"} if "lz4" in offered else {""})  # "" is the server's default, pglz
            connection.rollback()
            config = alembic_config(bootstrap.MIGRATIONS, database)
            command.downgrade(config, _before_compression(config))
            assert methods() <= {"p", ""}
    finally:
        database.dispose()


def _before_compression(config: Config) -> str:
    """The revision just before the one that compresses with lz4 (a later one may follow it)."""
    from alembic.script import ScriptDirectory

    for script in ScriptDirectory.from_config(config).walk_revisions():
        if 'compress_large_blobs("lz4")' in Path(script.path).read_text():
            assert isinstance(script.down_revision, str)
            return script.down_revision
    raise AssertionError("no migration compresses with lz4")
