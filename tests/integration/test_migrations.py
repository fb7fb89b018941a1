"""Each service's migrations build exactly the schema its tables declare, and can be undone."""

from __future__ import annotations

import importlib

import pytest
from alembic.autogenerate import compare_metadata
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
