"""Alembic environment of the Checkout database."""

from services.checkout.adapters.tables import metadata
from shared.migrations import run_env

run_env(metadata)
