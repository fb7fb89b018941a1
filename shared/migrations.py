"""Alembic, once for every service.

Each service keeps its revisions in `services/<name>/adapters/migrations/`; its `env.py` only
hands its metadata to `run_env`. `upgrade()` applies them: on start in dev (`DB_AUTO_MIGRATE`)
and through `python -m services.<name> migrate` in production.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData

from shared.db import Database


def alembic_config(script_location: Path, database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", database.url.replace("%", "%%"))
    config.attributes["engine"] = database.engine
    return config


def upgrade(database: Database, script_location: Path, revision: str = "head") -> None:
    command.upgrade(alembic_config(script_location, database), revision)


def run_env(target_metadata: MetaData) -> None:
    """The body of every service's alembic `env.py` (online mode only)."""
    engine = context.config.attributes["engine"]
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
