"""Alembic environment of the Wallet database."""

from services.wallet.adapters.tables import metadata
from shared.migrations import run_env

run_env(metadata)
