"""Experiments: definitions, the stratified sample and assignment, the life cycle, results and
rollout, and the customer features they stand on."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from sqlalchemy import func, insert, text
from sqlmodel import col, select

from services.promotions.adapters.experiment_records import (
    condition_json,
    condition_of,
    latest_features,
    strata_json,
    strata_of,
    upsert_features,
    variants_json,
    variants_of,
)
from services.promotions.adapters.statistics_peers import PeerStatistics
from services.promotions.adapters.tables import AssignmentRow, CustomerFeaturesRow, ExperimentRow
from services.promotions.domain import sampling
from services.promotions.domain.experiments import (
    DEFAULT_LOOKBACK_DAYS,
    MAX_LOOKBACK_DAYS,
    ExperimentSpec,
    Recommendation,
    Status,
    Variant,
    VariantOutcome,
    recommend,
    validate,
)
from services.promotions.domain.segments import matches
from services.promotions.domain.statistics import Comparison, Sample, SrmResult, sample_ratio_check, welch
from services.promotions.service_layer.catalogue import page_of
from services.promotions.service_layer.mechanics import Mechanics
from shared.clock import Clock
from shared.db import Database, UnitOfWork
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from shared.ids import new_id
from shared.pagination import decode_token, encode_token

log = logging.getLogger(__name__)

INSERT_CHUNK = 10_000
FEATURE_BATCH = 10_000
ACTIVE = (Status.SAMPLED.value, Status.RUNNING.value)


class Metric:
    WALLET_ADOPTION = "WALLET_ADOPTION"
    NET_DEPOSITS = "NET_DEPOSITS"
    AVERAGE_BALANCE = "AVERAGE_BALANCE"
    ORDERS = "ORDERS"
    GMV = "GMV"
    POINTS_COST = "POINTS_COST"
    ALL = (WALLET_ADOPTION, NET_DEPOSITS, AVERAGE_BALANCE, ORDERS, GMV, POINTS_COST)


@dataclass(frozen=True)
class StratumSummary:
    stratum: str
    population: int
    sampled: int
    assigned: dict[str, int]


@dataclass(frozen=True)
class DrawResult:
    row: ExperimentRow
    eligible: int
    sampled: int
    strata: list[StratumSummary]
    srm: SrmResult


@dataclass(frozen=True)
class VariantResult:
    variant: Variant
    samples: dict[str, Sample]
    comparisons: dict[str, Comparison]
    points_per_extra_balance_rouble: Fraction | None


@dataclass(frozen=True)
class Results:
    row: ExperimentRow
    start: datetime
    end: datetime
    confidence_bps: int
    variants: list[VariantResult]
    srm: SrmResult
    recommendation: Recommendation


@dataclass
class _Accumulator:
    values: dict[str, list[int]] = field(default_factory=lambda: {m: [] for m in Metric.ALL})


def experiment_not_found(experiment_id: str) -> NotFound:
    return NotFound(
        "EXPERIMENT_NOT_FOUND", f"no experiment {experiment_id!r}", metadata={"experiment_id": experiment_id}
    )


class Experiments:
    def __init__(self, database: Database, mechanics: Mechanics, statistics: PeerStatistics, clock: Clock) -> None:
        self._db = database
        self._mechanics = mechanics
        self._statistics = statistics
        self._clock = clock

    # --- definitions ---------------------------------------------------------------------

    def create(self, uow: UnitOfWork, spec: ExperimentSpec, end_at: datetime | None) -> ExperimentRow:
        validate(spec)
        now = self._clock.now()
        row = ExperimentRow(
            experiment_id=new_id(),
            name=spec.name,
            description=spec.description,
            lookback_days=spec.lookback_days,
            strata=strata_json(spec.strata),
            eligibility=condition_json(spec.eligibility),
            sample_size=spec.sample_size,
            variants=variants_json(spec.variants),
            salt=spec.salt,
            status=Status.DRAFT.value,
            end_at=end_at,
            eligible_count=0,
            sampled_count=0,
            draw_summary="[]",
            rolled_out_variant_id="",
            end_reason="",
            created_at=now,
            updated_at=now,
        )
        uow.session.add(row)
        uow.flush()
        return row

    def get(self, uow: UnitOfWork, experiment_id: str, *, lock: bool = False) -> ExperimentRow:
        query = select(ExperimentRow).where(col(ExperimentRow.experiment_id) == experiment_id)
        if lock:
            query = query.with_for_update()
        row = uow.session.exec(query).first()
        if row is None:
            raise experiment_not_found(experiment_id)
        return row

    def listing(self, uow: UnitOfWork, size: int, token: str, statuses: set[str]) -> tuple[list[ExperimentRow], str]:
        return page_of(
            uow, ExperimentRow, "experiment_id", "experiments", size, token,
            lambda row: not statuses or row.status in statuses,
        )  # fmt: skip

    # --- sample and assignment -----------------------------------------------------------

    def draw(self, uow: UnitOfWork, experiment_id: str) -> DrawResult:
        row = self.get(uow, experiment_id, lock=True)
        if row.status != Status.DRAFT.value:
            raise FailedPrecondition(
                "EXPERIMENT_NOT_DRAFT", f"experiment {experiment_id} is {row.status}; a sample is drawn once, in DRAFT"
            )
        if uow.session.get_bind().dialect.name == "postgresql":
            # One draw at a time, so two experiments never take the same customer (SQLite's
            # transactions are serialised already).
            uow.session.execute(text("SELECT pg_advisory_xact_lock(hashtext('promotions.experiment-draw'))"))
        strata, condition, variants = strata_of(row.strata), condition_of(row.eligibility), variants_of(row.variants)
        busy = set(
            uow.session.execute(
                select(col(AssignmentRow.customer_id))
                .join(ExperimentRow, col(ExperimentRow.experiment_id) == col(AssignmentRow.experiment_id))
                .where(col(ExperimentRow.status).in_(ACTIVE), col(ExperimentRow.experiment_id) != experiment_id)
            ).scalars()
        )
        seen = 0
        population: list[tuple[str, str]] = []
        for customer_id, features in latest_features(uow):
            seen += 1
            if customer_id not in busy and matches(condition, features):
                population.append((customer_id, strata.key(features)))
        if seen == 0:
            raise FailedPrecondition(
                "CUSTOMER_FEATURES_MISSING", "no customer has features: import or compute them first"
            )
        if len(population) < row.sample_size:
            raise FailedPrecondition(
                "NOT_ENOUGH_ELIGIBLE_CUSTOMERS",
                f"{len(population)} eligible customers, sample size {row.sample_size}",
                metadata={"eligible": str(len(population)), "sample_size": str(row.sample_size)},
            )
        weights = [(v.variant_id, v.weight) for v in variants]
        drawn = sampling.draw(population, row.sample_size, weights, row.salt)
        now = self._clock.now()
        table = AssignmentRow.__table__  # type: ignore[attr-defined]
        chunk: list[dict[str, Any]] = []
        for customer_id, (stratum, variant_id) in drawn.assignments.items():
            chunk.append(
                {
                    "experiment_id": experiment_id,
                    "customer_id": customer_id,
                    "variant_id": variant_id,
                    "stratum": stratum,
                    "assigned_at": now,
                }
            )
            if len(chunk) == INSERT_CHUNK:
                uow.session.execute(insert(table), chunk)
                chunk = []
        if chunk:
            uow.session.execute(insert(table), chunk)
        summaries = [
            StratumSummary(s, drawn.population[s], sum(drawn.sampled[s].values()), drawn.sampled[s])
            for s in sorted(drawn.population)
        ]
        row.status = Status.SAMPLED.value
        row.eligible_count = len(population)
        row.sampled_count = len(drawn.assignments)
        row.draw_summary = json.dumps([[s.stratum, s.population, s.sampled, s.assigned] for s in summaries])
        row.updated_at = now
        uow.flush()
        return DrawResult(row, len(population), len(drawn.assignments), summaries, self.srm(uow, row))

    def srm(self, uow: UnitOfWork, row: ExperimentRow) -> SrmResult:
        variants = variants_of(row.variants)
        counts = self.counts(uow, row.experiment_id)
        return sample_ratio_check([counts.get(v.variant_id, 0) for v in variants], [v.weight for v in variants])

    def counts(self, uow: UnitOfWork, experiment_id: str) -> dict[str, int]:
        found = uow.session.execute(
            select(col(AssignmentRow.variant_id), func.count())
            .where(col(AssignmentRow.experiment_id) == experiment_id)
            .group_by(col(AssignmentRow.variant_id))
        ).all()
        return {variant_id: int(count) for variant_id, count in found}

    @staticmethod
    def summaries(row: ExperimentRow) -> list[StratumSummary]:
        return [StratumSummary(s, p, n, a) for s, p, n, a in json.loads(row.draw_summary)]

    # --- life cycle ------------------------------------------------------------------------

    def start(
        self, uow: UnitOfWork, experiment_id: str, start_at: datetime | None, end_at: datetime | None
    ) -> ExperimentRow:
        row = self.get(uow, experiment_id, lock=True)
        if row.status != Status.SAMPLED.value:
            raise FailedPrecondition(
                "EXPERIMENT_NOT_SAMPLED", f"experiment {experiment_id} is {row.status}; only a SAMPLED one starts"
            )
        now = self._clock.now()
        when = start_at or now
        if when < now:
            raise InvalidArgument.field("start_time", "must not be in the past", "START_TIME_IN_PAST")
        end = end_at or row.end_at
        if end is not None and end <= when:
            raise InvalidArgument.field("end_time", "must be after the start", "WINDOW_ENDS_BEFORE_START")
        row.status, row.start_at, row.end_at, row.updated_at = Status.RUNNING.value, when, end, now
        uow.flush()
        return row

    def end(self, uow: UnitOfWork, experiment_id: str, reason: str) -> ExperimentRow:
        row = self.get(uow, experiment_id, lock=True)
        if row.status in (Status.ENDED.value, Status.ROLLED_OUT.value):
            raise FailedPrecondition("EXPERIMENT_ALREADY_ENDED", f"experiment {experiment_id} is already {row.status}")
        if len(reason) > 2000:
            raise InvalidArgument.field("reason", "must be at most 2000 characters", "TEXT_TOO_LONG")
        now = self._clock.now()
        row.status, row.stopped_at, row.end_reason, row.updated_at = Status.ENDED.value, now, reason, now
        uow.flush()
        return row

    def rollout(
        self,
        uow: UnitOfWork,
        experiment_id: str,
        variant_id: str,
        effective_at: datetime | None,
        reason: str,
        operator_id: str,
    ) -> tuple[ExperimentRow, Any, datetime]:
        row = self.get(uow, experiment_id, lock=True)
        if row.status != Status.RUNNING.value:
            raise FailedPrecondition(
                "EXPERIMENT_NOT_RUNNING", f"experiment {experiment_id} is {row.status}; only a RUNNING one rolls out"
            )
        variant = next((v for v in variants_of(row.variants) if v.variant_id == variant_id), None)
        if variant is None:
            raise NotFound(
                "VARIANT_NOT_FOUND", f"experiment {experiment_id} has no variant {variant_id!r}",
                metadata={"variant_id": variant_id},
            )  # fmt: skip
        when = effective_at or self._clock.now()
        mechanic = variant.mechanic or self._mechanics.default_at(uow, when).mechanic
        default = self._mechanics.set_default(
            uow, mechanic, effective_at, reason, operator_id, experiment_id=experiment_id
        )
        row.status, row.stopped_at = Status.ROLLED_OUT.value, default.effective_at
        row.rolled_out_variant_id, row.end_reason, row.updated_at = variant_id, reason, self._clock.now()
        uow.flush()
        return row, mechanic, default.effective_at

    # --- assignments -------------------------------------------------------------------------

    def assignment(self, uow: UnitOfWork, experiment_id: str, customer_id: str) -> AssignmentRow:
        self.get(uow, experiment_id)
        found = uow.session.exec(
            select(AssignmentRow).where(
                col(AssignmentRow.experiment_id) == experiment_id, col(AssignmentRow.customer_id) == customer_id
            )
        ).first()
        if found is None:
            raise NotFound(
                "CUSTOMER_NOT_IN_EXPERIMENT", f"customer {customer_id!r} is not in experiment {experiment_id}",
                metadata={"customer_id": customer_id},
            )  # fmt: skip
        return found

    def assignments(
        self, uow: UnitOfWork, experiment_id: str, size: int, token: str, variant_id: str, stratum: str
    ) -> tuple[list[AssignmentRow], str]:
        self.get(uow, experiment_id)
        after = decode_token(f"assignments:{experiment_id}", token, (str,))
        query = select(AssignmentRow).where(col(AssignmentRow.experiment_id) == experiment_id)
        if variant_id:
            query = query.where(col(AssignmentRow.variant_id) == variant_id)
        if stratum:
            query = query.where(col(AssignmentRow.stratum) == stratum)
        if after is not None:
            query = query.where(col(AssignmentRow.customer_id) > after[0])
        rows = list(uow.session.exec(query.order_by(col(AssignmentRow.customer_id)).limit(size + 1)).all())
        if len(rows) <= size:
            return rows, ""
        return rows[:size], encode_token(f"assignments:{experiment_id}", [rows[size - 1].customer_id])

    # --- results -----------------------------------------------------------------------------

    def results(
        self, experiment_id: str, confidence_bps: int, start_at: datetime | None, end_at: datetime | None
    ) -> Results:
        confidence_bps = confidence_bps or 9500
        if not 5000 <= confidence_bps <= 9990:
            raise InvalidArgument.field(
                "confidence_level_bps", "must be 5000 to 9990 (0 means 9500)", "CONFIDENCE_LEVEL_INVALID"
            )
        with self._db.unit_of_work() as uow:
            row = self.get(uow, experiment_id)
            start = start_at or row.start_at
            if row.status == Status.DRAFT.value or start is None:
                raise FailedPrecondition(
                    "EXPERIMENT_NOT_STARTED",
                    f"experiment {experiment_id} is {row.status} and has no measurement period yet",
                )
            now = self._clock.now()
            end = end_at or min(row.stopped_at or row.end_at or now, now)  # never measure the future
            if end <= start:
                raise InvalidArgument.field("end_time", "must be after the start of the period", "INVALID_PERIOD")
            srm = self.srm(uow, row)
            members = list(
                uow.session.execute(
                    select(col(AssignmentRow.customer_id), col(AssignmentRow.variant_id))
                    .where(col(AssignmentRow.experiment_id) == experiment_id)
                    .order_by(col(AssignmentRow.customer_id))
                ).all()
            )
            uow.session.expunge(row)  # read after the read-only transaction rolls back
        variants = variants_of(row.variants)
        customers = [customer for customer, _ in members]
        wallets = self._statistics.wallets(customers, start, end)
        points = self._statistics.points(customers, start, end)
        orders = self._statistics.orders(customers, start, end)
        by_variant = {v.variant_id: _Accumulator() for v in variants}
        for customer, variant_id in members:
            w, p, o = wallets.get(customer), points.get(customer), orders.get(customer)
            values = by_variant[variant_id].values
            values[Metric.WALLET_ADOPTION].append(1 if w is not None and w.adopted else 0)
            values[Metric.NET_DEPOSITS].append(w.net_deposits_minor if w else 0)
            values[Metric.AVERAGE_BALANCE].append(w.average_balance_minor if w else 0)
            values[Metric.ORDERS].append(o.order_count if o else 0)
            values[Metric.GMV].append(o.gmv_minor if o else 0)
            values[Metric.POINTS_COST].append(p.mechanic_points if p else 0)
        samples = {
            variant_id: {m: Sample.of(acc.values[m]) for m in Metric.ALL} for variant_id, acc in by_variant.items()
        }
        control = next(v for v in variants if v.control)
        confidence = Fraction(confidence_bps, 10_000)
        results: list[VariantResult] = [VariantResult(control, samples[control.variant_id], {}, None)]
        outcomes: list[VariantOutcome] = []
        for variant in variants:
            if variant.control:
                continue
            own, base = samples[variant.variant_id], samples[control.variant_id]
            comparisons = {m: welch(own[m], base[m], confidence) for m in Metric.ALL}
            balance = comparisons[Metric.AVERAGE_BALANCE].difference
            cost = comparisons[Metric.POINTS_COST].difference
            per_rouble = cost / (balance / 100) if balance > 0 else None
            results.append(VariantResult(variant, own, comparisons, per_rouble))
            outcomes.append(VariantOutcome(variant.variant_id, comparisons[Metric.NET_DEPOSITS], per_rouble))
        return Results(row, start, end, confidence_bps, results, srm, recommend(outcomes, srm, confidence_bps))

    # --- features ----------------------------------------------------------------------------

    def latest_features(self, uow: UnitOfWork, customer_id: str) -> CustomerFeaturesRow:
        found = uow.session.exec(
            select(CustomerFeaturesRow)
            .where(col(CustomerFeaturesRow.customer_id) == customer_id)
            .order_by(col(CustomerFeaturesRow.as_of).desc())
            .limit(1)
        ).first()
        if found is None:
            raise NotFound(
                "CUSTOMER_FEATURES_NOT_FOUND", f"no features for customer {customer_id!r}",
                metadata={"customer_id": customer_id},
            )  # fmt: skip
        return found

    def compute_features(self, lookback_days: int, as_of: datetime | None) -> tuple[int, datetime]:
        """Features of every customer the peers know over the window, upserted in batches."""
        lookback_days = lookback_days or DEFAULT_LOOKBACK_DAYS
        if not 0 < lookback_days <= MAX_LOOKBACK_DAYS:
            raise InvalidArgument.field("lookback_days", f"must be 1 to {MAX_LOOKBACK_DAYS}", "LOOKBACK_INVALID")
        end = as_of or self._clock.now()
        start = end - timedelta(days=lookback_days)
        merged: dict[str, list[Any]] = {}  # customer -> [aov, orders, wallet orders, adopted, activity]

        def entry(customer_id: str) -> list[Any]:
            return merged.setdefault(customer_id, [0, 0, 0, False, 0])

        for customer_id, o in self._statistics.all_orders(start, end):
            e = entry(customer_id)
            e[0], e[1], e[2] = o.average_order_value_minor, o.order_count, o.wallet_order_count
        for customer_id, w in self._statistics.all_wallets(start, end):
            entry(customer_id)[3] = w.adopted
        for customer_id, p in self._statistics.all_points(start, end):
            entry(customer_id)[4] = p.activity_credits
        rows = (
            {
                "customer_id": customer_id,
                "average_order_value_minor": aov,
                "order_count": orders,
                "lookback_days": lookback_days,
                "uses_financial_products": bool(adopted or wallet_orders > 0),
                "takes_part_in_points_activities": activity > 0,
                "as_of": end,
                "source": "COMPUTED",
            }
            for customer_id, (aov, orders, wallet_orders, adopted, activity) in sorted(merged.items())
        )
        self._write_batches(rows)
        return len(merged), end

    def _write_batches(self, rows: Iterable[dict[str, Any]]) -> None:
        batch: list[dict[str, Any]] = []
        written = 0
        for row in rows:
            batch.append(row)
            if len(batch) == FEATURE_BATCH:
                written += self._write(batch)
                batch = []
        if batch:
            written += self._write(batch)

    def _write(self, batch: Sequence[dict[str, Any]]) -> int:
        with self._db.unit_of_work() as uow:
            upsert_features(uow, batch)
            uow.commit()
        log.info("customer features written", extra={"rows": len(batch)})
        return len(batch)
