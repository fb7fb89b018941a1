"""The ExperimentsService servicer (served by the Promotions process on its database)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from loyalty.promotions.v1 import experiments_pb2 as pb
from loyalty.promotions.v1 import experiments_pb2_grpc, promotions_pb2

from services.promotions.adapters.experiment_records import condition_of, strata_of, upsert_features, variants_of
from services.promotions.adapters.tables import AssignmentRow, CustomerFeaturesRow, ExperimentRow
from services.promotions.domain.experiments import DEFAULT_LOOKBACK_DAYS, ExperimentSpec, Status, Variant
from services.promotions.domain.sampling import Strata
from services.promotions.domain.segments import Condition
from services.promotions.domain.statistics import SrmResult, micro
from services.promotions.entrypoints.codec import CONDITION_FIELDS, mechanic_from_proto, mechanic_to_proto
from services.promotions.service_layer.experiments import DrawResult, Experiments, Metric, Results
from shared.clock import Clock
from shared.db import Database, UnitOfWork
from shared.errors import InvalidArgument
from shared.idempotency import Idempotency, validate_request_id
from shared.pagination import page_size
from shared.protoconv import enum_from_proto, enum_to_proto, from_timestamp, money, optional_timestamp, to_timestamp
from shared.validation import MAX_CUSTOMER_ID, validate_customer_id

R = TypeVar("R", bound=Message)
log = logging.getLogger(__name__)

MAX_IMPORT_BATCH = 10_000
MAX_REPORTED_ERRORS = 100
METRICS = {name: getattr(pb, f"EXPERIMENT_METRIC_{name}") for name in Metric.ALL}


# --- conversions ------------------------------------------------------------------------------


def spec_from(message: pb.Experiment) -> ExperimentSpec:
    s = message.strata
    variants = tuple(
        Variant(
            variant_id=v.variant_id,
            name=v.name or v.variant_id,
            control=v.control,
            mechanic=None
            if v.control or not v.HasField("mechanic")
            else mechanic_from_proto(v.mechanic, f"experiment.variants[{i}].mechanic"),
            weight=v.weight,
        )
        for i, v in enumerate(message.variants)
    )
    e = message.eligibility
    return ExperimentSpec(
        name=message.name,
        description=message.description,
        lookback_days=message.lookback_days or DEFAULT_LOOKBACK_DAYS,
        strata=Strata(
            tuple(s.average_order_value_edges_minor),
            tuple(s.order_count_edges),
            s.by_financial_products,
            s.by_points_activities,
        ),
        eligibility=Condition(
            **{name: getattr(e, name) if e.HasField(name) else None for name in CONDITION_FIELDS}  # type: ignore[arg-type]
        ),
        sample_size=message.sample_size,
        variants=variants,
        salt=message.salt,
    )


def experiment_to_proto(row: ExperimentRow) -> pb.Experiment:
    strata, condition = strata_of(row.strata), condition_of(row.eligibility)
    message = pb.Experiment(
        experiment_id=row.experiment_id,
        name=row.name,
        description=row.description,
        lookback_days=row.lookback_days,
        strata=pb.StrataDefinition(
            average_order_value_edges_minor=strata.aov_edges,
            order_count_edges=strata.order_edges,
            by_financial_products=strata.by_financial_products,
            by_points_activities=strata.by_points_activities,
        ),
        sample_size=row.sample_size,
        variants=[
            pb.Variant(
                variant_id=v.variant_id,
                name=v.name,
                control=v.control,
                weight=v.weight,
                mechanic=None if v.mechanic is None else mechanic_to_proto(v.mechanic),
            )
            for v in variants_of(row.variants)
        ],
        salt=row.salt,
        status=enum_to_proto(pb.ExperimentStatus, Status(row.status)),
        sampled_count=row.sampled_count,
        rolled_out_variant_id=row.rolled_out_variant_id,
        create_time=to_timestamp(row.created_at),
        update_time=to_timestamp(row.updated_at),
    )
    message.eligibility.SetInParent()
    for name in CONDITION_FIELDS:
        value = getattr(condition, name)
        if value is not None:
            setattr(message.eligibility, name, value)
    if row.start_at is not None:
        message.start_time.CopyFrom(to_timestamp(row.start_at))
    end = row.stopped_at or row.end_at
    if end is not None:
        message.end_time.CopyFrom(to_timestamp(end))
    return message


def srm_to_proto(srm: SrmResult, variant_ids: list[str]) -> pb.SrmCheck:
    return pb.SrmCheck(
        counts=[
            pb.VariantCount(variant_id=v, observed=o, expected_micro=micro(e))
            for v, o, e in zip(variant_ids, srm.observed, srm.expected, strict=True)
        ],
        chi_square_micro=micro(srm.chi_square),
        degrees_of_freedom=srm.degrees_of_freedom,
        p_value_micro=micro(srm.p_value),
        threshold_micro=micro(srm.threshold),
        passed=srm.passed,
    )


def draw_to_proto(drawn: DrawResult) -> pb.DrawSampleResponse:
    variant_ids = [v.variant_id for v in variants_of(drawn.row.variants)]
    return pb.DrawSampleResponse(
        experiment=experiment_to_proto(drawn.row),
        eligible_count=drawn.eligible,
        sampled_count=drawn.sampled,
        strata=[
            pb.StratumSummary(
                stratum=s.stratum,
                population=s.population,
                sampled=s.sampled,
                assigned=[pb.VariantCount(variant_id=v, observed=s.assigned.get(v, 0)) for v in variant_ids],
            )
            for s in drawn.strata
        ],
        srm=srm_to_proto(drawn.srm, variant_ids),
    )


def assignment_to_proto(row: AssignmentRow) -> pb.Assignment:
    return pb.Assignment(
        experiment_id=row.experiment_id,
        customer_id=row.customer_id,
        variant_id=row.variant_id,
        stratum=row.stratum,
        assign_time=to_timestamp(row.assigned_at),
    )


def features_to_proto(row: CustomerFeaturesRow) -> promotions_pb2.CustomerFeatures:
    return promotions_pb2.CustomerFeatures(
        customer_id=row.customer_id,
        average_order_value=money(row.average_order_value_minor),
        order_count=row.order_count,
        lookback_days=row.lookback_days,
        uses_financial_products=row.uses_financial_products,
        takes_part_in_points_activities=row.takes_part_in_points_activities,
        as_of=to_timestamp(row.as_of),
        source=getattr(promotions_pb2, f"FEATURE_SOURCE_{row.source}"),
    )


def results_to_proto(results: Results) -> pb.GetExperimentResultsResponse:
    variant_ids = [v.variant.variant_id for v in results.variants]
    variants = []
    for result in results.variants:
        message = pb.VariantResult(
            variant_id=result.variant.variant_id,
            control=result.variant.control,
            customers=result.samples[Metric.NET_DEPOSITS].n,
            metrics=[
                pb.MetricValue(
                    metric=METRICS[m],
                    mean_micro=micro(result.samples[m].mean),
                    standard_error_micro=micro(result.samples[m].standard_error),
                )
                for m in Metric.ALL
            ],
        )
        base = results.variants[0].samples
        for m, c in result.comparisons.items():
            control_mean = base[m].mean
            relative = micro(c.difference * 10_000 / control_mean / 1_000_000) if control_mean else 0  # whole bps
            message.comparisons.append(
                pb.MetricComparison(
                    metric=METRICS[m],
                    difference_micro=micro(c.difference),
                    ci_lower_micro=micro(c.ci_lower),
                    ci_upper_micro=micro(c.ci_upper),
                    p_value_micro=micro(c.p_value),
                    significant=c.significant,
                    relative_difference_bps=relative,
                )
            )
        if result.points_per_extra_balance_rouble is not None:
            message.points_per_extra_balance_rouble_micro = micro(result.points_per_extra_balance_rouble)
        variants.append(message)
    return pb.GetExperimentResultsResponse(
        experiment=experiment_to_proto(results.row),
        start_time=to_timestamp(results.start),
        end_time=to_timestamp(results.end),
        confidence_level_bps=results.confidence_bps,
        variants=variants,
        srm=srm_to_proto(results.srm, variant_ids),
        recommendation=pb.Recommendation(
            variant_id=results.recommendation.variant_id,
            rule=results.recommendation.rule,
            rationale=results.recommendation.rationale,
        ),
    )


# --- feature rows -------------------------------------------------------------------------------


def feature_row(message: promotions_pb2.CustomerFeatures) -> tuple[dict[str, Any] | None, str]:
    """A valid row to upsert, or None and the reason it was rejected."""
    if not message.customer_id.strip():
        return None, "CUSTOMER_ID_REQUIRED"
    if len(message.customer_id) > MAX_CUSTOMER_ID:
        return None, "INVALID_CUSTOMER_ID"
    if not message.HasField("as_of"):
        return None, "AS_OF_REQUIRED"
    if message.average_order_value.currency_code not in ("", "RUB"):
        return None, "UNSUPPORTED_CURRENCY"
    if message.average_order_value.amount_minor < 0:
        return None, "NEGATIVE_AVERAGE_ORDER_VALUE"
    if message.order_count < 0:
        return None, "NEGATIVE_ORDER_COUNT"
    if not 0 < message.lookback_days <= 3660:
        return None, "INVALID_LOOKBACK_DAYS"
    source = "COMPUTED" if message.source == promotions_pb2.FEATURE_SOURCE_COMPUTED else "IMPORTED"
    return {
        "customer_id": message.customer_id,
        "average_order_value_minor": message.average_order_value.amount_minor,
        "order_count": message.order_count,
        "lookback_days": message.lookback_days,
        "uses_financial_products": message.uses_financial_products,
        "takes_part_in_points_activities": message.takes_part_in_points_activities,
        "as_of": from_timestamp(message.as_of, "as_of"),
        "source": source,
    }, ""


# --- servicer ---------------------------------------------------------------------------------


class ExperimentsServicer(experiments_pb2_grpc.ExperimentsServiceServicer):
    def __init__(self, *, database: Database, clock: Clock, experiments: Experiments, idempotency: Idempotency) -> None:
        self._db = database
        self._clock = clock
        self._experiments = experiments
        self._idempotency = idempotency

    def _run(self, method: str, request: Message, response: type[R], effect: Callable[[UnitOfWork], R]) -> R:
        return self._idempotency.run(f"ExperimentsService/{method}", request, response, effect)

    # --- features ---

    def ImportCustomerFeatures(
        self, request_iterator: Iterator[pb.ImportCustomerFeaturesRequest], context: grpc.ServicerContext
    ) -> pb.ImportCustomerFeaturesResponse:
        """One transaction for the whole stream, so a refused stream changes nothing; the key is
        the request id with a digest of every message, so a replay answers the first summary."""
        scope = "ExperimentsService/ImportCustomerFeatures"
        digest = hashlib.sha256()
        request_id: str | None = None
        received = imported = 0
        errors: list[pb.FeatureRowError] = []
        with self._db.unit_of_work() as uow:
            for message in request_iterator:
                if request_id is None:
                    validate_request_id(message.request_id)
                    request_id = message.request_id
                elif message.request_id != request_id:
                    raise InvalidArgument.field(
                        "request_id", "must be the same in every message of the stream", "REQUEST_ID_MISMATCH"
                    )
                if len(message.features) > MAX_IMPORT_BATCH:
                    raise InvalidArgument.field(
                        "features", f"at most {MAX_IMPORT_BATCH} rows per message", "BATCH_TOO_LARGE"
                    )
                body = pb.ImportCustomerFeaturesRequest(features=message.features).SerializeToString(deterministic=True)
                digest.update(len(body).to_bytes(8, "big") + body)
                batch: dict[tuple[str, datetime], dict[str, Any]] = {}
                for features in message.features:
                    row, reason = feature_row(features)
                    if row is None:
                        if len(errors) < MAX_REPORTED_ERRORS:
                            errors.append(
                                pb.FeatureRowError(
                                    row_index=received,
                                    customer_id=features.customer_id[:MAX_CUSTOMER_ID],
                                    reason=reason,
                                )
                            )
                    else:
                        batch[(row["customer_id"], row["as_of"])] = row  # the last of duplicates wins
                        imported += 1
                    received += 1
                upsert_features(uow, list(batch.values()))
                log.info("feature import progress", extra={"rows_received": received})
            if request_id is None:
                raise InvalidArgument.field("request_id", "the stream carried no message", "REQUEST_ID_REQUIRED")
            summary = pb.ImportCustomerFeaturesResponse(
                rows_received=received, rows_imported=imported, rows_rejected=received - imported, errors=errors
            )
            # The request the key is checked against: the id and the digest of everything sent.
            fingerprint = pb.ImportCustomerFeaturesRequest(
                request_id=request_id, features=[promotions_pb2.CustomerFeatures(customer_id=digest.hexdigest())]
            )
            fresh = False

            def effect(_: UnitOfWork) -> pb.ImportCustomerFeaturesResponse:
                nonlocal fresh
                fresh = True
                return summary

            response = self._idempotency.run_nested(uow, scope, fingerprint, pb.ImportCustomerFeaturesResponse, effect)
            if fresh:
                uow.commit()  # a replay rolls back: the first import's data stays as it was
        return response

    def ComputeCustomerFeatures(
        self, request: pb.ComputeCustomerFeaturesRequest, context: grpc.ServicerContext
    ) -> pb.ComputeCustomerFeaturesResponse:
        def work() -> pb.ComputeCustomerFeaturesResponse:
            count, as_of = self._experiments.compute_features(
                request.lookback_days, optional_timestamp(request, "as_of")
            )
            return pb.ComputeCustomerFeaturesResponse(customers_computed=count, as_of=to_timestamp(as_of))

        return self._idempotency.run_job(
            "ExperimentsService/ComputeCustomerFeatures", request, pb.ComputeCustomerFeaturesResponse, work
        )

    def GetCustomerFeatures(
        self, request: pb.GetCustomerFeaturesRequest, context: grpc.ServicerContext
    ) -> pb.GetCustomerFeaturesResponse:
        validate_customer_id(request.customer_id)
        with self._db.unit_of_work() as uow:
            row = self._experiments.latest_features(uow, request.customer_id)
            return pb.GetCustomerFeaturesResponse(features=features_to_proto(row))

    # --- experiments ---

    def CreateExperiment(
        self, request: pb.CreateExperimentRequest, context: grpc.ServicerContext
    ) -> pb.CreateExperimentResponse:
        spec = spec_from(request.experiment)

        def effect(uow: UnitOfWork) -> pb.CreateExperimentResponse:
            row = self._experiments.create(uow, spec, optional_timestamp(request.experiment, "end_time"))
            return pb.CreateExperimentResponse(experiment=experiment_to_proto(row))

        return self._run("CreateExperiment", request, pb.CreateExperimentResponse, effect)

    def GetExperiment(
        self, request: pb.GetExperimentRequest, context: grpc.ServicerContext
    ) -> pb.GetExperimentResponse:
        with self._db.unit_of_work() as uow:
            return pb.GetExperimentResponse(
                experiment=experiment_to_proto(self._experiments.get(uow, request.experiment_id))
            )

    def ListExperiments(
        self, request: pb.ListExperimentsRequest, context: grpc.ServicerContext
    ) -> pb.ListExperimentsResponse:
        size = page_size(request.page_size)
        statuses = {enum_from_proto(pb.ExperimentStatus, s, Status, "statuses").value for s in request.statuses}
        with self._db.unit_of_work() as uow:
            rows, token = self._experiments.listing(uow, size, request.page_token, statuses)
            return pb.ListExperimentsResponse(experiments=[experiment_to_proto(r) for r in rows], next_page_token=token)

    def DrawSample(self, request: pb.DrawSampleRequest, context: grpc.ServicerContext) -> pb.DrawSampleResponse:
        def effect(uow: UnitOfWork) -> pb.DrawSampleResponse:
            return draw_to_proto(self._experiments.draw(uow, request.experiment_id))

        return self._run("DrawSample", request, pb.DrawSampleResponse, effect)

    def StartExperiment(
        self, request: pb.StartExperimentRequest, context: grpc.ServicerContext
    ) -> pb.StartExperimentResponse:
        def effect(uow: UnitOfWork) -> pb.StartExperimentResponse:
            row = self._experiments.start(
                uow, request.experiment_id, optional_timestamp(request, "start_time"),
                optional_timestamp(request, "end_time"),
            )  # fmt: skip
            return pb.StartExperimentResponse(experiment=experiment_to_proto(row))

        return self._run("StartExperiment", request, pb.StartExperimentResponse, effect)

    def GetAssignment(
        self, request: pb.GetAssignmentRequest, context: grpc.ServicerContext
    ) -> pb.GetAssignmentResponse:
        validate_customer_id(request.customer_id)
        with self._db.unit_of_work() as uow:
            row = self._experiments.assignment(uow, request.experiment_id, request.customer_id)
            return pb.GetAssignmentResponse(assignment=assignment_to_proto(row))

    def ListAssignments(
        self, request: pb.ListAssignmentsRequest, context: grpc.ServicerContext
    ) -> pb.ListAssignmentsResponse:
        size = page_size(request.page_size)
        with self._db.unit_of_work() as uow:
            rows, token = self._experiments.assignments(
                uow, request.experiment_id, size, request.page_token, request.variant_id, request.stratum
            )
            return pb.ListAssignmentsResponse(assignments=[assignment_to_proto(r) for r in rows], next_page_token=token)

    def GetExperimentResults(
        self, request: pb.GetExperimentResultsRequest, context: grpc.ServicerContext
    ) -> pb.GetExperimentResultsResponse:
        results = self._experiments.results(
            request.experiment_id, request.confidence_level_bps, optional_timestamp(request, "start_time"),
            optional_timestamp(request, "end_time"),
        )  # fmt: skip
        return results_to_proto(results)

    def RolloutExperiment(
        self, request: pb.RolloutExperimentRequest, context: grpc.ServicerContext
    ) -> pb.RolloutExperimentResponse:
        def effect(uow: UnitOfWork) -> pb.RolloutExperimentResponse:
            row, mechanic, effective = self._experiments.rollout(
                uow, request.experiment_id, request.variant_id, optional_timestamp(request, "effective_time"),
                request.reason, request.operator_id,
            )  # fmt: skip
            return pb.RolloutExperimentResponse(
                experiment=experiment_to_proto(row),
                default_mechanic=mechanic_to_proto(mechanic),
                effective_time=to_timestamp(effective),
            )

        return self._run("RolloutExperiment", request, pb.RolloutExperimentResponse, effect)

    def EndExperiment(
        self, request: pb.EndExperimentRequest, context: grpc.ServicerContext
    ) -> pb.EndExperimentResponse:
        def effect(uow: UnitOfWork) -> pb.EndExperimentResponse:
            return pb.EndExperimentResponse(
                experiment=experiment_to_proto(self._experiments.end(uow, request.experiment_id, request.reason))
            )

        return self._run("EndExperiment", request, pb.EndExperimentResponse, effect)
