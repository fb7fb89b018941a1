"""Operator: experiments on wallet mechanics (ExperimentsService, served by Promotions) and
customer features (CSV import, look-up)."""

from __future__ import annotations

import codecs
import tempfile
from datetime import datetime
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from loyalty.common.v1 import mechanic_pb2
from loyalty.promotions.v1 import experiments_pb2 as pb
from loyalty.promotions.v1 import promotions_pb2
from pydantic import BaseModel, Field, model_validator

from gateway.auth import Operator
from gateway.backends import Backends
from gateway.convert import (
    INT32_MAX,
    Body,
    Instant,
    MechanicOut,
    Name,
    NonNegativeInt32,
    NonNegativeInt64,
    Page,
    Text,
    enum_name,
    enum_value,
    instant,
    mechanic_out,
    minor,
    text_fault,
    timestamp,
)
from gateway.deps import Api, OptionalIdempotencyKey, PageSize, PageToken, request_id
from gateway.problems import PROBLEM_MEDIA_TYPE, Problem, problem_response
from shared.errors import DomainError, InvalidArgument
from shared.features_csv import FeatureImport, parse_header
from shared.validation import MAX_CUSTOMER_ID

router = APIRouter(prefix="/v1/admin")
# The one streamed upload; it has its own body limit (GATEWAY_MAX_IMPORT_BODY_BYTES).
IMPORT_PATH = "/v1/admin/customer-features/import"
TAG = "admin: experiments"

ExperimentId = Annotated[str, Path(min_length=1, max_length=64, description="The experiment.")]
CustomerId = Annotated[str, Path(min_length=1, max_length=MAX_CUSTOMER_ID, description="The customer.")]
ShortId = Annotated[str, Field(min_length=1, max_length=64)]
Status = Literal["DRAFT", "SAMPLED", "RUNNING", "ENDED", "ROLLED_OUT"]


def _set_time(message: object, field: str, value: datetime | None, name: str) -> None:
    if value is not None:
        getattr(message, field).CopyFrom(timestamp(value, name))


# --- definitions ---------------------------------------------------------------------------------


class CashbackTierIn(Body):
    min_balance_minor: NonNegativeInt64
    rate_bps: NonNegativeInt32


class MechanicIn(Body):
    """A wallet mechanic: interest in points (`apr_bps`, at most 1800) or cashback tiers."""

    code: ShortId
    name: Name
    kind: Literal["INTEREST", "CASHBACK"]
    apr_bps: NonNegativeInt32 | None = Field(None, description="For INTEREST.")
    basis: Literal["AVERAGE_DAILY", "MINIMUM_DAILY"] = "AVERAGE_DAILY"
    cashback_tiers: list[CashbackTierIn] = Field(default_factory=list, max_length=20, description="For CASHBACK.")
    monthly_cap_points: NonNegativeInt64 = 0

    @model_validator(mode="after")
    def _kind_fields(self) -> MechanicIn:
        if self.kind == "INTEREST" and self.apr_bps is None:
            raise ValueError("an INTEREST mechanic needs apr_bps")
        if self.kind == "CASHBACK" and self.apr_bps is not None:
            raise ValueError("a CASHBACK mechanic takes cashback_tiers, not apr_bps")
        return self

    def proto(self) -> mechanic_pb2.Mechanic:
        mechanic = mechanic_pb2.Mechanic(code=self.code, name=self.name)
        if self.kind == "INTEREST":
            mechanic.interest.apr_bps = self.apr_bps or 0
            mechanic.interest.basis = enum_value(mechanic_pb2.BalanceBasis, self.basis, "BALANCE_BASIS_")
        else:
            mechanic.cashback.tiers.extend(
                mechanic_pb2.CashbackTier(min_balance_minor=t.min_balance_minor, rate_bps=t.rate_bps)
                for t in self.cashback_tiers
            )
            mechanic.cashback.monthly_cap_points = self.monthly_cap_points
        return mechanic


class StrataIn(Body):
    """Buckets of the four features; edges `[a, b]` make `(-inf, a)`, `[a, b)`, `[b, +inf)`."""

    average_order_value_edges_minor: list[NonNegativeInt64] = Field(default_factory=list, max_length=20)
    order_count_edges: list[NonNegativeInt64] = Field(default_factory=list, max_length=20)
    by_financial_products: bool = False
    by_points_activities: bool = False


class ConditionIn(Body):
    """Lower bounds inclusive, upper bounds exclusive; an unset bound does not apply."""

    min_average_order_value_minor: NonNegativeInt64 | None = None
    max_average_order_value_minor: NonNegativeInt64 | None = None
    min_order_count: NonNegativeInt64 | None = None
    max_order_count: NonNegativeInt64 | None = None
    uses_financial_products: bool | None = None
    takes_part_in_points_activities: bool | None = None


class VariantIn(Body):
    variant_id: ShortId
    name: Name
    control: bool = False
    mechanic: MechanicIn | None = Field(None, description="Required except for control.")
    weight: NonNegativeInt32 = Field(description="Relative share of the sample, positive.")


class ExperimentIn(Body):
    name: Name
    description: Text = ""
    lookback_days: NonNegativeInt32 = Field(0, description="0 means 180.")
    strata: StrataIn = Field(default_factory=StrataIn)
    eligibility: ConditionIn | None = Field(None, description="Every customer with features when absent.")
    sample_size: NonNegativeInt64
    variants: list[VariantIn] = Field(max_length=50)
    salt: Annotated[str, Field(max_length=200)]
    end_time: Instant | None = Field(None, description="Planned end of the test period.")


class StrataOut(BaseModel):
    average_order_value_edges_minor: list[int]
    order_count_edges: list[int]
    by_financial_products: bool
    by_points_activities: bool


class ConditionOut(BaseModel):
    min_average_order_value_minor: int | None
    max_average_order_value_minor: int | None
    min_order_count: int | None
    max_order_count: int | None
    uses_financial_products: bool | None
    takes_part_in_points_activities: bool | None


class VariantOut(BaseModel):
    variant_id: str
    name: str
    control: bool
    mechanic: MechanicOut | None
    weight: int


class ExperimentOut(BaseModel):
    experiment_id: str
    name: str
    description: str
    lookback_days: int
    strata: StrataOut
    eligibility: ConditionOut
    sample_size: int
    variants: list[VariantOut]
    salt: str
    status: str = Field(description="DRAFT, SAMPLED, RUNNING, ENDED or ROLLED_OUT.")
    start_time: datetime | None
    end_time: datetime | None
    sampled_count: int
    rolled_out_variant_id: str
    created_at: datetime | None
    updated_at: datetime | None


_CONDITION_FIELDS = tuple(ConditionOut.model_fields)


def _condition_out(condition: Any) -> ConditionOut:
    values: dict[str, Any] = {}
    for name in _CONDITION_FIELDS:
        values[name] = getattr(condition, name) if condition.HasField(name) else None
    return ConditionOut(**values)


def experiment_out(e: pb.Experiment) -> ExperimentOut:
    return ExperimentOut(
        experiment_id=e.experiment_id,
        name=e.name,
        description=e.description,
        lookback_days=e.lookback_days,
        strata=StrataOut(
            average_order_value_edges_minor=list(e.strata.average_order_value_edges_minor),
            order_count_edges=list(e.strata.order_count_edges),
            by_financial_products=e.strata.by_financial_products,
            by_points_activities=e.strata.by_points_activities,
        ),
        eligibility=_condition_out(e.eligibility),
        sample_size=e.sample_size,
        variants=[
            VariantOut(
                variant_id=v.variant_id,
                name=v.name,
                control=v.control,
                mechanic=mechanic_out(v.mechanic) if v.HasField("mechanic") else None,
                weight=v.weight,
            )
            for v in e.variants
        ],
        salt=e.salt,
        status=enum_name(pb.ExperimentStatus, e.status, "EXPERIMENT_STATUS_"),
        start_time=instant(e, "start_time"),
        end_time=instant(e, "end_time"),
        sampled_count=e.sampled_count,
        rolled_out_variant_id=e.rolled_out_variant_id,
        created_at=instant(e, "create_time"),
        updated_at=instant(e, "update_time"),
    )


@router.post(
    "/experiments", response_model=ExperimentOut, status_code=201, tags=[TAG], summary="Define an experiment (DRAFT)"
)
def create_experiment(
    body: ExperimentIn, operator: Operator, api: Api, key: OptionalIdempotencyKey = None
) -> ExperimentOut:
    experiment = pb.Experiment(
        name=body.name,
        description=body.description,
        lookback_days=body.lookback_days,
        sample_size=body.sample_size,
        salt=body.salt,
        strata=pb.StrataDefinition(
            average_order_value_edges_minor=body.strata.average_order_value_edges_minor,
            order_count_edges=body.strata.order_count_edges,
            by_financial_products=body.strata.by_financial_products,
            by_points_activities=body.strata.by_points_activities,
        ),
    )
    if body.eligibility is not None:
        experiment.eligibility.SetInParent()
        for name, value in body.eligibility.model_dump(exclude_none=True).items():
            setattr(experiment.eligibility, name, value)
    for variant in body.variants:
        out = experiment.variants.add(
            variant_id=variant.variant_id, name=variant.name, control=variant.control, weight=variant.weight
        )
        if variant.mechanic is not None:
            out.mechanic.CopyFrom(variant.mechanic.proto())
    _set_time(experiment, "end_time", body.end_time, "end_time")
    answer = api.call(
        api.experiments.CreateExperiment,
        pb.CreateExperimentRequest(request_id=request_id(operator, key), experiment=experiment),
    )
    return experiment_out(answer.experiment)


class ExperimentsOut(Page):
    experiments: list[ExperimentOut]


@router.get("/experiments", response_model=ExperimentsOut, tags=[TAG], summary="List experiments, newest first")
def list_experiments(
    operator: Operator,
    api: Api,
    status: Annotated[list[Status] | None, Query(description="Only these statuses; all when absent.")] = None,
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> ExperimentsOut:
    statuses = [enum_value(pb.ExperimentStatus, name, "EXPERIMENT_STATUS_") for name in status or []]
    answer = api.call(
        api.experiments.ListExperiments,
        pb.ListExperimentsRequest(page_size=page_size, page_token=page_token, statuses=statuses),
    )
    return ExperimentsOut(
        experiments=[experiment_out(e) for e in answer.experiments], next_page_token=answer.next_page_token
    )


@router.get("/experiments/{experiment_id}", response_model=ExperimentOut, tags=[TAG], summary="One experiment")
def get_experiment(experiment_id: ExperimentId, operator: Operator, api: Api) -> ExperimentOut:
    answer = api.call(api.experiments.GetExperiment, pb.GetExperimentRequest(experiment_id=experiment_id))
    return experiment_out(answer.experiment)


# --- sample, start ---------------------------------------------------------------------------------


class VariantCountOut(BaseModel):
    variant_id: str
    observed: int
    expected_micro: int = Field(description="Customers expected from the weights, micro-customers.")


class SrmOut(BaseModel):
    """Sample-ratio-mismatch check (chi-square) of the realised assignment."""

    counts: list[VariantCountOut]
    chi_square_micro: int
    degrees_of_freedom: int
    p_value_micro: int
    threshold_micro: int
    passed: bool


class StratumOut(BaseModel):
    stratum: str
    population: int
    sampled: int
    assigned: list[VariantCountOut]


class SampleOut(BaseModel):
    experiment: ExperimentOut
    eligible_count: int
    sampled_count: int
    strata: list[StratumOut]
    srm: SrmOut


def _counts(counts: Any) -> list[VariantCountOut]:
    return [
        VariantCountOut(variant_id=c.variant_id, observed=c.observed, expected_micro=c.expected_micro) for c in counts
    ]


def srm_out(srm: pb.SrmCheck) -> SrmOut:
    return SrmOut(
        counts=_counts(srm.counts),
        chi_square_micro=srm.chi_square_micro,
        degrees_of_freedom=srm.degrees_of_freedom,
        p_value_micro=srm.p_value_micro,
        threshold_micro=srm.threshold_micro,
        passed=srm.passed,
    )


@router.post(
    "/experiments/{experiment_id}/sample",
    response_model=SampleOut,
    tags=[TAG],
    summary="Draw the stratified sample and assign the variants (DRAFT -> SAMPLED)",
)
def draw_sample(
    experiment_id: ExperimentId, operator: Operator, api: Api, key: OptionalIdempotencyKey = None
) -> SampleOut:
    answer = api.job(
        api.experiments.DrawSample,
        pb.DrawSampleRequest(request_id=request_id(operator, key), experiment_id=experiment_id),
    )
    return SampleOut(
        experiment=experiment_out(answer.experiment),
        eligible_count=answer.eligible_count,
        sampled_count=answer.sampled_count,
        strata=[
            StratumOut(stratum=s.stratum, population=s.population, sampled=s.sampled, assigned=_counts(s.assigned))
            for s in answer.strata
        ],
        srm=srm_out(answer.srm),
    )


class StartIn(Body):
    start_time: Instant | None = Field(None, description="When the mechanics come into force; now when absent.")
    end_time: Instant | None = Field(None, description="Planned end of the test period.")


@router.post(
    "/experiments/{experiment_id}/start",
    response_model=ExperimentOut,
    tags=[TAG],
    summary="Start a sampled experiment (SAMPLED -> RUNNING)",
)
def start_experiment(
    experiment_id: ExperimentId,
    operator: Operator,
    api: Api,
    body: StartIn | None = None,
    key: OptionalIdempotencyKey = None,
) -> ExperimentOut:
    request = pb.StartExperimentRequest(request_id=request_id(operator, key), experiment_id=experiment_id)
    if body is not None:
        _set_time(request, "start_time", body.start_time, "start_time")
        _set_time(request, "end_time", body.end_time, "end_time")
    return experiment_out(api.call(api.experiments.StartExperiment, request).experiment)


# --- results -------------------------------------------------------------------------------------


class MetricValueOut(BaseModel):
    metric: str = Field(description="WALLET_ADOPTION, NET_DEPOSITS, AVERAGE_BALANCE, ORDERS, GMV or POINTS_COST.")
    mean_micro: int
    standard_error_micro: int


class ComparisonOut(BaseModel):
    metric: str
    difference_micro: int
    ci_lower_micro: int
    ci_upper_micro: int
    p_value_micro: int
    significant: bool
    relative_difference_bps: int


class VariantResultOut(BaseModel):
    variant_id: str
    control: bool
    customers: int
    metrics: list[MetricValueOut]
    comparisons: list[ComparisonOut]
    points_per_extra_balance_rouble_micro: int


class RecommendationOut(BaseModel):
    variant_id: str = Field(description="Empty when no variant beats control.")
    rule: str
    rationale: str


class ResultsOut(BaseModel):
    experiment: ExperimentOut
    start_time: datetime | None
    end_time: datetime | None
    confidence_level_bps: int
    variants: list[VariantResultOut]
    srm: SrmOut
    recommendation: RecommendationOut


def _metric(value: int) -> str:
    return enum_name(pb.ExperimentMetric, value, "EXPERIMENT_METRIC_")


@router.get(
    "/experiments/{experiment_id}/results",
    response_model=ResultsOut,
    tags=[TAG],
    summary="Each variant against control (Welch), the SRM check and a recommendation",
)
def experiment_results(
    experiment_id: ExperimentId,
    operator: Operator,
    api: Api,
    confidence_level_bps: Annotated[int, Query(ge=0, le=INT32_MAX, description="0 means 9500 (95 %).")] = 0,
    start_time: Annotated[Instant | None, Query(description="Measurement start; the experiment's.")] = None,
    end_time: Annotated[Instant | None, Query(description="Measurement end; the experiment's or now.")] = None,
) -> ResultsOut:
    request = pb.GetExperimentResultsRequest(experiment_id=experiment_id, confidence_level_bps=confidence_level_bps)
    _set_time(request, "start_time", start_time, "start_time")
    _set_time(request, "end_time", end_time, "end_time")
    answer = api.job(api.experiments.GetExperimentResults, request)
    return ResultsOut(
        experiment=experiment_out(answer.experiment),
        start_time=instant(answer, "start_time"),
        end_time=instant(answer, "end_time"),
        confidence_level_bps=answer.confidence_level_bps,
        variants=[
            VariantResultOut(
                variant_id=v.variant_id,
                control=v.control,
                customers=v.customers,
                metrics=[
                    MetricValueOut(
                        metric=_metric(m.metric), mean_micro=m.mean_micro, standard_error_micro=m.standard_error_micro
                    )
                    for m in v.metrics
                ],
                comparisons=[
                    ComparisonOut(
                        metric=_metric(c.metric),
                        difference_micro=c.difference_micro,
                        ci_lower_micro=c.ci_lower_micro,
                        ci_upper_micro=c.ci_upper_micro,
                        p_value_micro=c.p_value_micro,
                        significant=c.significant,
                        relative_difference_bps=c.relative_difference_bps,
                    )
                    for c in v.comparisons
                ],
                points_per_extra_balance_rouble_micro=v.points_per_extra_balance_rouble_micro,
            )
            for v in answer.variants
        ],
        srm=srm_out(answer.srm),
        recommendation=RecommendationOut(
            variant_id=answer.recommendation.variant_id,
            rule=answer.recommendation.rule,
            rationale=answer.recommendation.rationale,
        ),
    )


# --- rollout, end ---------------------------------------------------------------------------------


class RolloutIn(Body):
    variant_id: ShortId
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    effective_time: Instant | None = Field(None, description="From when; now when absent.")


class RolloutOut(BaseModel):
    experiment: ExperimentOut
    default_mechanic: MechanicOut
    effective_time: datetime | None


@router.post(
    "/experiments/{experiment_id}/rollout",
    response_model=RolloutOut,
    tags=[TAG],
    summary="Make a variant's mechanic everyone's default and end the experiment (RUNNING -> ROLLED_OUT)",
)
def rollout_experiment(
    experiment_id: ExperimentId, body: RolloutIn, operator: Operator, api: Api, key: OptionalIdempotencyKey = None
) -> RolloutOut:
    request = pb.RolloutExperimentRequest(
        request_id=request_id(operator, key),
        experiment_id=experiment_id,
        variant_id=body.variant_id,
        reason=body.reason,
        operator_id=operator.sub,
    )
    _set_time(request, "effective_time", body.effective_time, "effective_time")
    answer = api.call(api.experiments.RolloutExperiment, request)
    return RolloutOut(
        experiment=experiment_out(answer.experiment),
        default_mechanic=mechanic_out(answer.default_mechanic),
        effective_time=instant(answer, "effective_time"),
    )


class EndExperimentIn(Body):
    reason: Text = ""


@router.post(
    "/experiments/{experiment_id}/end",
    response_model=ExperimentOut,
    tags=[TAG],
    summary="End an experiment without a rollout",
)
def end_experiment(
    experiment_id: ExperimentId,
    operator: Operator,
    api: Api,
    body: EndExperimentIn | None = None,
    key: OptionalIdempotencyKey = None,
) -> ExperimentOut:
    request = pb.EndExperimentRequest(
        request_id=request_id(operator, key), experiment_id=experiment_id, reason=body.reason if body else ""
    )
    return experiment_out(api.call(api.experiments.EndExperiment, request).experiment)


# --- customer features ---------------------------------------------------------------------------


class FeaturesOut(BaseModel):
    customer_id: str
    as_of: datetime | None
    average_order_value_minor: int
    order_count: int
    lookback_days: int
    uses_financial_products: bool
    takes_part_in_points_activities: bool
    source: str = Field(description="COMPUTED or IMPORTED.")


@router.get(
    "/customers/{customer_id}/features",
    response_model=FeaturesOut,
    tags=[TAG],
    summary="A customer's latest features",
)
def customer_features(customer_id: CustomerId, operator: Operator, api: Api) -> FeaturesOut:
    f = api.call(api.experiments.GetCustomerFeatures, pb.GetCustomerFeaturesRequest(customer_id=customer_id)).features
    return FeaturesOut(
        customer_id=f.customer_id,
        as_of=instant(f, "as_of"),
        average_order_value_minor=minor(f.average_order_value),
        order_count=f.order_count,
        lookback_days=f.lookback_days,
        uses_financial_products=f.uses_financial_products,
        takes_part_in_points_activities=f.takes_part_in_points_activities,
        source=enum_name(promotions_pb2.FeatureSource, f.source, "FEATURE_SOURCE_"),
    )


SPOOL_IN_MEMORY = 8 * 1024 * 1024  # larger bodies go to a temporary file


class RowErrorOut(BaseModel):
    line: int = Field(description="Line of the row in the CSV; the header is line 1.")
    customer_id: str
    reason: str = Field(description="e.g. INVALID_AS_OF, NEGATIVE_ORDER_COUNT, CUSTOMER_ID_REQUIRED.")


class ImportOut(BaseModel):
    rows_received: int
    rows_imported: int
    rows_rejected: int
    errors: list[RowErrorOut] = Field(description="The first 100 rejected rows, by line.")


def _run_import(importer: FeatureImport, api: Backends) -> ImportOut:
    try:
        answer = api.job(importer.caller(api.experiments.ImportCustomerFeatures), None)
    except DomainError as error:
        raise importer.refusal(error) from None
    summary = importer.summary(answer)
    return ImportOut(
        rows_received=summary.rows_received,
        rows_imported=summary.rows_imported,
        rows_rejected=summary.rows_rejected,
        errors=[RowErrorOut(line=e.line, customer_id=e.customer_id, reason=e.reason) for e in summary.errors],
    )


_CSV_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "text/csv": {
            "schema": {"type": "string"},
            "example": "customer_id,as_of,average_order_value_minor,order_count,lookback_days,"
            "uses_financial_products,takes_part_in_points_activities\n"
            "cust-1,2026-01-31T00:00:00+03:00,150000,3,180,true,false\n",
        }
    },
}
_UNSUPPORTED = {
    "model": Problem,
    "description": "The body is not text/csv",
    "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


@router.post(
    IMPORT_PATH.removeprefix(router.prefix),
    response_model=ImportOut,
    tags=[TAG],
    summary="Import customer features from CSV (upserts by customer and as_of; bad rows counted)",
    openapi_extra={"requestBody": _CSV_BODY},
    responses={415: _UNSUPPORTED},
)
async def import_customer_features(
    request: Request, operator: Operator, api: Api, key: OptionalIdempotencyKey = None
) -> Any:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "text/csv":
        return problem_response(415, "UNSUPPORTED_MEDIA_TYPE", "send the features as text/csv")
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        first_line = await _spool(request, spool)
        importer = FeatureImport(spool, parse_header(first_line), request_id(operator, key))
        result: ImportOut = await run_in_threadpool(_run_import, importer, api)
        return result


async def _spool(request: Request, spool: IO[bytes]) -> str:
    """Copy the body to the spool, checking it is UTF-8 text without NUL; the header line."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    head = ""
    try:
        async for chunk in request.stream():
            text = decoder.decode(chunk)
            fault = text_fault(text)
            if fault:
                raise InvalidArgument.field("body", fault)
            if "\n" not in head and len(head) < 4096:
                head += text
            spool.write(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise InvalidArgument.field("body", "must be UTF-8 text") from None
    first_line = head.lstrip("\ufeff").splitlines()[0] if head.strip() else ""
    if not first_line:
        raise InvalidArgument.field("body", "is empty: a header line and rows are expected", "CSV_EMPTY")
    return first_line
