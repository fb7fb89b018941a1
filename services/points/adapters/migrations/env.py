"""Alembic environment of the Points database."""

from services.points.adapters.tables import metadata
from shared.migrations import run_env

run_env(metadata)
