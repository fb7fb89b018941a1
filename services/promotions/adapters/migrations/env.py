"""Alembic environment of the Promotions database."""

from services.promotions.adapters.tables import metadata
from shared.migrations import run_env

run_env(metadata)
