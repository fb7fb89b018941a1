"""How experiments are stored: strata, eligibility and variants as JSON columns, features upserted
in sets, and the latest features of every customer read as a stream."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from services.promotions.adapters.tables import CustomerFeaturesRow
from services.promotions.domain.experiments import Variant
from services.promotions.domain.mechanics import Cashback, Interest, InterestBasis, Mechanic
from services.promotions.domain.sampling import Strata
from services.promotions.domain.segments import Condition, Features
from shared.db import UnitOfWork

FEATURE_COLUMNS = (
    "average_order_value_minor",
    "order_count",
    "lookback_days",
    "uses_financial_products",
    "takes_part_in_points_activities",
    "source",
)


def strata_json(strata: Strata) -> str:
    return json.dumps(
        {
            "aov": list(strata.aov_edges),
            "orders": list(strata.order_edges),
            "fin": strata.by_financial_products,
            "pts": strata.by_points_activities,
        }
    )


def strata_of(raw: str) -> Strata:
    data = json.loads(raw)
    return Strata(tuple(data["aov"]), tuple(data["orders"]), data["fin"], data["pts"])


def condition_json(condition: Condition) -> str:
    return json.dumps({k: v for k, v in vars(condition).items() if v is not None})


def condition_of(raw: str) -> Condition:
    return Condition(**json.loads(raw))


def _mechanic_dict(mechanic: Mechanic) -> dict[str, Any]:
    if isinstance(mechanic.kind, Interest):
        return {
            "code": mechanic.code,
            "name": mechanic.name,
            "interest": {"apr_bps": mechanic.kind.apr_bps, "basis": mechanic.kind.basis.value},
        }
    return {
        "code": mechanic.code,
        "name": mechanic.name,
        "cashback": {"tiers": [list(t) for t in mechanic.kind.tiers], "cap": mechanic.kind.monthly_cap_points},
    }


def _mechanic_of(data: dict[str, Any]) -> Mechanic:
    if "interest" in data:
        kind: Interest | Cashback = Interest(data["interest"]["apr_bps"], InterestBasis(data["interest"]["basis"]))
    else:
        kind = Cashback(tuple((int(m), int(r)) for m, r in data["cashback"]["tiers"]), data["cashback"]["cap"])
    return Mechanic(data["code"], data["name"], kind)


def variants_json(variants: Sequence[Variant]) -> str:
    return json.dumps(
        [
            {
                "id": v.variant_id,
                "name": v.name,
                "control": v.control,
                "weight": v.weight,
                "mechanic": None if v.mechanic is None else _mechanic_dict(v.mechanic),
            }
            for v in variants
        ]
    )


def variants_of(raw: str) -> tuple[Variant, ...]:
    return tuple(
        Variant(
            v["id"],
            v["name"],
            v["control"],
            None if v["mechanic"] is None else _mechanic_of(v["mechanic"]),
            v["weight"],
        )
        for v in json.loads(raw)
    )


def upsert_features(uow: UnitOfWork, rows: Sequence[dict[str, Any]]) -> None:
    """Insert or update rows keyed by (customer_id, as_of), as one set-based statement."""
    if not rows:
        return
    table = CustomerFeaturesRow.__table__  # type: ignore[attr-defined]
    dialect = uow.session.get_bind().dialect.name
    statement = pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)
    upsert = statement.on_conflict_do_update(
        index_elements=["customer_id", "as_of"], set_={c: statement.excluded[c] for c in FEATURE_COLUMNS}
    )
    uow.session.execute(upsert, list(rows))


_COLUMNS = (
    "customer_id, average_order_value_minor, order_count, uses_financial_products, takes_part_in_points_activities"
)
# The latest row of every customer. PostgreSQL walks the primary key once with DISTINCT ON (1.7 s
# for 1,000,000 customers with two rows each, against 6 s for a correlated max()); elsewhere
# NOT EXISTS, which any SQL database plans as an anti-join.
LATEST_FEATURES = {
    "postgresql": text(
        f"SELECT DISTINCT ON (customer_id) {_COLUMNS} FROM customer_features ORDER BY customer_id, as_of DESC"
    ),
    "other": text(
        f"SELECT {_COLUMNS} FROM customer_features f WHERE NOT EXISTS (SELECT 1 FROM customer_features g "
        "WHERE g.customer_id = f.customer_id AND g.as_of > f.as_of)"
    ),
}


def latest_features(uow: UnitOfWork) -> Iterator[tuple[str, Features]]:
    """Every customer's latest features, streamed (a server-side cursor on PostgreSQL)."""
    dialect = uow.session.get_bind().dialect.name
    query = LATEST_FEATURES["postgresql" if dialect == "postgresql" else "other"]
    result = uow.session.execute(query.execution_options(yield_per=10_000))
    for customer_id, aov, orders, fin, pts in result:
        yield customer_id, Features(int(aov), int(orders), bool(fin), bool(pts))
