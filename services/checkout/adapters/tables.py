"""Tables of the Checkout database (its own metadata, apart from every other service).

Catalogue, quotes and orders arrive with the checkout issue; the runtime tables are here now.
"""

from __future__ import annotations

from sqlalchemy.orm import registry
from sqlmodel import SQLModel

from shared.runtime_tables import add_runtime_tables


class CheckoutTable(SQLModel, registry=registry()):
    pass


metadata = CheckoutTable.metadata
runtime_tables = add_runtime_tables(metadata)
