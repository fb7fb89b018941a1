"""`loyalty features ...` and `loyalty experiments ...`: ExperimentsService (served by the
Promotions process at PROMOTIONS_TARGET)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from google.protobuf.json_format import ParseDict, ParseError
from loyalty.common.v1 import mechanic_pb2
from loyalty.promotions.v1 import experiments_pb2 as pb
from loyalty.promotions.v1 import experiments_pb2_grpc
from rich import box
from rich.table import Table

from loyalty_cli.common import CHECK_FAILED, EXIT_CODES, USAGE, Cli, Failure, aware, refused, request_id, scaled
from shared.errors import DomainError
from shared.features_csv import FeatureImport, read_header
from shared.protoconv import to_timestamp

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
SERVICE = "promotions"  # ExperimentsService is served by the Promotions process
STUB = experiments_pb2_grpc.ExperimentsServiceStub
SHOWN_ERRORS = 20
STATUSES = ("DRAFT", "SAMPLED", "RUNNING", "ENDED", "ROLLED_OUT")

# metric: (label, exponent of its micro value to the shown unit, decimals, unit)
METRICS = {
    "WALLET_ADOPTION": ("wallet adoption", 4, 2, "%"),
    "NET_DEPOSITS": ("net deposits", 8, 2, "RUB"),
    "AVERAGE_BALANCE": ("average balance", 8, 2, "RUB"),
    "ORDERS": ("orders", 6, 3, ""),
    "GMV": ("GMV", 8, 2, "RUB"),
    "POINTS_COST": ("points cost", 6, 2, "points"),
}


def metric_name(value: int) -> str:
    return pb.ExperimentMetric.Name(value).removeprefix("EXPERIMENT_METRIC_")  # type: ignore[arg-type]


def status_name(value: int) -> str:
    return pb.ExperimentStatus.Name(value).removeprefix("EXPERIMENT_STATUS_")  # type: ignore[arg-type]


def shown(metric: str, micro: int) -> str:
    """A metric's micro value in its shown unit (roubles, per cent, orders, points), exactly."""
    _label, exponent, places, _unit = METRICS.get(metric, (metric, 6, 3, ""))
    return scaled(micro, exponent, places)


def labelled(metric: str) -> str:
    label, _exponent, _places, unit = METRICS.get(metric, (metric, 6, 3, ""))
    return f"{label}, {unit}" if unit else label


# --- features -----------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT, epilog=EXIT_CODES)
def features() -> None:
    """Customer features (the input of experiment sampling)."""


@features.command("import", epilog=EXIT_CODES)
@click.argument("csv_file", metavar="FILE.csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--request-id", "request_id_", help="Idempotency key: the same key replays the first import's summary.")
@click.pass_obj
def import_features(cli: Cli, csv_file: Path, request_id_: str | None) -> None:
    """Import customer features from a CSV file, streamed in messages of 10,000 rows with a
    progress bar. Header: customer_id, as_of, average_order_value_minor, order_count,
    lookback_days, uses_financial_products, takes_part_in_points_activities (any order).

    Rows that cannot be read or that the service refuses are counted and listed; the others are
    imported (exit 1 when any row was refused). A file that cannot be read to the end stores
    nothing (exit 2)."""
    key = request_id(request_id_, "features")
    size = os.path.getsize(csv_file)
    with csv_file.open("rb") as source:
        try:
            columns = read_header(source)
        except DomainError as error:
            raise refused(error) from None
        with cli.working(f"importing {csv_file.name}", total=size) as advance:
            importer = FeatureImport(source, columns, key, progress=lambda _rows, position: advance(position))
            with cli.peers(SERVICE) as peers:
                try:
                    answer = peers.call(
                        importer.caller(peers.stub(SERVICE, STUB).ImportCustomerFeatures), None, idempotent=True
                    )
                except DomainError as error:
                    raise refused(importer.refusal(error), service=SERVICE, target=cli.target(SERVICE)) from None
    summary = importer.summary(answer)
    if cli.as_json:
        cli.emit(
            {
                "request_id": key,
                "rows_received": summary.rows_received,
                "rows_imported": summary.rows_imported,
                "rows_rejected": summary.rows_rejected,
                "errors": [vars(e) for e in summary.errors],
            }
        )
    else:
        cli.out.print(
            f"{summary.rows_received:,} rows read, {summary.rows_imported:,} imported, "
            f"{summary.rows_rejected:,} refused (request id {key})"
        )
        if summary.errors:
            table = Table(title="refused rows", title_justify="left")
            for column in ("line", "customer_id", "reason"):
                table.add_column(column)
            for e in summary.errors[:SHOWN_ERRORS]:
                table.add_row(str(e.line), e.customer_id, e.reason)
            cli.out.print(table)
            if len(summary.errors) > SHOWN_ERRORS:
                cli.out.print(f"... {len(summary.errors) - SHOWN_ERRORS} more (see --json)")
    if summary.rows_rejected:
        raise click.exceptions.Exit(CHECK_FAILED)


@features.command("show", epilog=EXIT_CODES)
@click.argument("customer_id")
@click.pass_obj
def show_features(cli: Cli, customer_id: str) -> None:
    """A customer's latest features."""
    answer = cli.call(SERVICE, STUB, "GetCustomerFeatures", pb.GetCustomerFeaturesRequest(customer_id=customer_id))
    cli.emit(answer.features)


# --- experiments --------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT, epilog=EXIT_CODES)
def experiments() -> None:
    """Experiments on wallet mechanics: create, sample, start, results, rollout, end."""


def _variant(spec: str) -> pb.Variant:
    """`ID=APR_BPS[:WEIGHT]`: an interest variant (average daily balance)."""
    try:
        variant_id, rest = spec.split("=", 1)
        apr, _, weight = rest.partition(":")
        apr_bps, share = int(apr), int(weight or "1")
    except ValueError:
        raise click.BadParameter(f"expected ID=APR_BPS[:WEIGHT], e.g. apr-18=1800, got {spec!r}") from None
    mechanic = mechanic_pb2.Mechanic(
        code=variant_id,
        name=f"Interest {scaled(apr_bps, 2, 2)} %",
        interest=mechanic_pb2.InterestMechanic(apr_bps=apr_bps, basis=mechanic_pb2.BALANCE_BASIS_AVERAGE_DAILY),
    )
    return pb.Variant(variant_id=variant_id, name=mechanic.name, weight=share, mechanic=mechanic)


def _edges(value: str | None, option: str) -> list[int]:
    if not value:
        return []
    try:
        return [int(edge) for edge in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"comma-separated integers, got {value!r}", param_hint=option) from None


def _definition(file: Path | None, options: dict[str, Any]) -> pb.Experiment:
    if file is not None:
        try:
            return ParseDict(json.loads(file.read_text(encoding="utf-8")), pb.Experiment())
        except (ValueError, ParseError) as error:
            raise Failure(USAGE, f"{file}: not an Experiment in protobuf JSON: {error}") from None
    missing = [name for name in ("name", "salt", "sample_size") if options[name] in (None, "")]
    if missing or not options["variant"]:
        need = [f"--{name.replace('_', '-')}" for name in missing] + ([] if options["variant"] else ["--variant"])
        raise click.UsageError(f"give --file, or {', '.join(need)}")
    experiment = pb.Experiment(
        name=options["name"],
        description=options["description"] or "",
        salt=options["salt"],
        sample_size=options["sample_size"],
        lookback_days=options["lookback_days"],
        strata=pb.StrataDefinition(
            average_order_value_edges_minor=_edges(options["aov_edges"], "--aov-edges"),
            order_count_edges=_edges(options["order_edges"], "--order-edges"),
            by_financial_products=options["by_financial_products"],
            by_points_activities=options["by_points_activities"],
        ),
        variants=[
            pb.Variant(variant_id="control", name="Control", control=True, weight=options["control_weight"]),
            *(_variant(spec) for spec in options["variant"]),
        ],
    )
    end = aware(options["end_time"], "--end-time")
    if end is not None:
        experiment.end_time.CopyFrom(to_timestamp(end))
    return experiment


@experiments.command(
    epilog="Example: loyalty experiments create --name 'APR 18' --salt s1 --sample-size 1000 "
    "--variant apr-18=1800\n\n" + EXIT_CODES
)
@click.option(
    "--file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The definition as protobuf JSON (an Experiment of experiments.proto); or use the options below.",
)
@click.option("--name")
@click.option("--description")
@click.option("--salt", help="Seed of sampling and assignment.")
@click.option("--sample-size", type=click.IntRange(min=1))
@click.option("--lookback-days", type=click.IntRange(min=0), default=0, help="0 means 180.")
@click.option("--control-weight", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--variant", multiple=True, metavar="ID=APR_BPS[:WEIGHT]", help="An interest variant; repeatable.")
@click.option("--aov-edges", metavar="KOPECKS,...", help="Strata edges of the average order value.")
@click.option("--order-edges", metavar="N,...", help="Strata edges of the order count.")
@click.option("--by-financial-products", is_flag=True)
@click.option("--by-points-activities", is_flag=True)
@click.option("--end-time", metavar="ISO8601", help="Planned end, with an offset.")
@click.option("--request-id", "request_id_", help="Idempotency key.")
@click.pass_obj
def create(cli: Cli, /, file: Path | None, request_id_: str | None, **options: Any) -> None:
    """Create an experiment (DRAFT): a control group plus interest variants, or any definition
    from a JSON file."""
    experiment = _definition(file, options)
    answer = cli.call(
        SERVICE,
        STUB,
        "CreateExperiment",
        pb.CreateExperimentRequest(request_id=request_id(request_id_, "create"), experiment=experiment),
    )
    _show(cli, answer.experiment)


def _show(cli: Cli, experiment: pb.Experiment) -> None:
    if cli.as_json:
        cli.emit(experiment)
        return
    cli.out.print(
        f"{experiment.experiment_id}  {status_name(experiment.status)}  {experiment.name!r}  "
        f"sample {experiment.sample_size:,}, sampled {experiment.sampled_count:,}"
    )
    table = Table(show_header=True)
    for column in ("variant", "group", "weight", "mechanic"):
        table.add_column(column)
    for v in experiment.variants:
        table.add_row(
            v.variant_id, "control" if v.control else "treatment", str(v.weight), v.mechanic.name or "the default"
        )
    cli.out.print(table)


@experiments.command("list", epilog=EXIT_CODES)
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES), help="Only these; repeatable.")
@click.option("--page-size", type=click.IntRange(0, 1000), default=0, help="0 means 50.")
@click.pass_obj
def list_experiments(cli: Cli, statuses: tuple[str, ...], page_size: int) -> None:
    """Experiments, newest first."""
    request = pb.ListExperimentsRequest(
        page_size=page_size,
        statuses=[pb.ExperimentStatus.Value(f"EXPERIMENT_STATUS_{s}") for s in statuses],
    )
    answer = cli.call(SERVICE, STUB, "ListExperiments", request)
    if cli.as_json:
        cli.emit(answer)
        return
    table = Table()
    table.add_column("experiment_id", no_wrap=True)
    for column in ("status", "name", "sample", "sampled", "variants"):
        table.add_column(column)
    for e in answer.experiments:
        table.add_row(
            e.experiment_id,
            status_name(e.status),
            e.name,
            f"{e.sample_size:,}",
            f"{e.sampled_count:,}",
            ", ".join(v.variant_id for v in e.variants),
        )
    cli.out.print(table)


@experiments.command(epilog=EXIT_CODES)
@click.argument("experiment_id")
@click.pass_obj
def show(cli: Cli, experiment_id: str) -> None:
    """One experiment."""
    _show(
        cli, cli.call(SERVICE, STUB, "GetExperiment", pb.GetExperimentRequest(experiment_id=experiment_id)).experiment
    )


def _srm(cli: Cli, srm: pb.SrmCheck) -> None:
    table = Table(title="sample ratio check", title_justify="left")
    table.add_column("variant")
    for column in ("observed", "expected"):
        table.add_column(column, justify="right")
    for count in srm.counts:
        table.add_row(count.variant_id, f"{count.observed:,}", scaled(count.expected_micro, 6, 1))
    cli.out.print(table)
    cli.out.print(
        f"chi-square {scaled(srm.chi_square_micro, 6, 3)} (df {srm.degrees_of_freedom}), "
        f"p = {scaled(srm.p_value_micro, 6, 4)}: {'passed' if srm.passed else 'FAILED'} "
        f"(threshold {scaled(srm.threshold_micro, 6, 3)})"
    )


@experiments.command(epilog=EXIT_CODES)
@click.argument("experiment_id")
@click.option("--request-id", "request_id_", help="Idempotency key.")
@click.pass_obj
def sample(cli: Cli, experiment_id: str, request_id_: str | None) -> None:
    """Draw the stratified sample and assign the variants (DRAFT -> SAMPLED). Exit 1 when the
    sample ratio check fails."""
    request = pb.DrawSampleRequest(
        request_id=request_id(request_id_, "sample", experiment_id), experiment_id=experiment_id
    )
    with cli.working(f"drawing the sample of {experiment_id}"):
        answer = cli.call(SERVICE, STUB, "DrawSample", request)
    if cli.as_json:
        cli.emit(answer)
    else:
        cli.out.print(f"{answer.sampled_count:,} of {answer.eligible_count:,} eligible customers sampled")
        table = Table(title="strata", title_justify="left")
        table.add_column("stratum")
        table.add_column("population", justify="right")
        table.add_column("sampled", justify="right")
        table.add_column("per variant")
        for s in answer.strata:
            table.add_row(
                s.stratum,
                f"{s.population:,}",
                f"{s.sampled:,}",
                ", ".join(f"{a.variant_id} {a.observed}" for a in s.assigned),
            )
        cli.out.print(table)
        _srm(cli, answer.srm)
    if not answer.srm.passed:
        raise click.exceptions.Exit(CHECK_FAILED)


@experiments.command(epilog=EXIT_CODES)
@click.argument("experiment_id")
@click.option("--start-time", metavar="ISO8601", help="When the mechanics come into force; now when absent.")
@click.option("--end-time", metavar="ISO8601", help="Planned end.")
@click.option("--request-id", "request_id_", help="Idempotency key.")
@click.pass_obj
def start(cli: Cli, experiment_id: str, start_time: str | None, end_time: str | None, request_id_: str | None) -> None:
    """Start a sampled experiment (SAMPLED -> RUNNING)."""
    request = pb.StartExperimentRequest(
        request_id=request_id(request_id_, "start", experiment_id), experiment_id=experiment_id
    )
    for field, value, option in (("start_time", start_time, "--start-time"), ("end_time", end_time, "--end-time")):
        instant = aware(value, option)
        if instant is not None:
            getattr(request, field).CopyFrom(to_timestamp(instant))
    _show(cli, cli.call(SERVICE, STUB, "StartExperiment", request).experiment)


@experiments.command(epilog=EXIT_CODES)
@click.argument("experiment_id")
@click.option(
    "--confidence",
    type=click.IntRange(1, 9999),
    default=9500,
    show_default=True,
    help="Confidence level of the intervals, basis points.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also draw the differences against control with their intervals as a PNG.",
)
@click.pass_obj
def results(cli: Cli, experiment_id: str, confidence: int, plot: Path | None) -> None:
    """Each variant against control (Welch's t, exact intervals), the sample ratio check and the
    recommendation. Exit 1 when the sample ratio check fails (the results are not to be trusted)."""
    request = pb.GetExperimentResultsRequest(experiment_id=experiment_id, confidence_level_bps=confidence)
    with cli.working(f"computing the results of {experiment_id}"):
        answer = cli.call(SERVICE, STUB, "GetExperimentResults", request)
    if plot is not None:
        from loyalty_cli.plot import draw_results

        try:
            draw_results(answer, plot)
        except OSError as error:
            raise Failure(USAGE, f"cannot write {plot}: {error}") from None
    if cli.as_json:
        cli.emit(answer)
    else:
        _results_table(cli, answer)
        if plot is not None:
            cli.out.print(f"plot written to {plot}")
    if not answer.srm.passed:
        raise click.exceptions.Exit(CHECK_FAILED)


def _results_table(cli: Cli, answer: pb.GetExperimentResultsResponse) -> None:
    e = answer.experiment
    cli.out.print(
        f"{e.experiment_id}  {status_name(e.status)}  {e.name!r}; customers per variant in brackets; "
        f"measured {answer.start_time.ToDatetime():%Y-%m-%d %H:%M} to {answer.end_time.ToDatetime():%Y-%m-%d %H:%M} UTC"
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("variant", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    for column in ("mean", "s.e.", "vs control", f"{scaled(answer.confidence_level_bps, 2, 0)} % interval", "p"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    for v in answer.variants:
        comparisons = {metric_name(c.metric): c for c in v.comparisons}
        for index, m in enumerate(v.metrics):
            name = metric_name(m.metric)
            c = comparisons.get(name)
            table.add_row(
                f"{v.variant_id} ({v.customers:,})" if index == 0 else "",
                labelled(name),
                shown(name, m.mean_micro),
                shown(name, m.standard_error_micro),
                shown(name, c.difference_micro) if c else "",
                f"{shown(name, c.ci_lower_micro)} to {shown(name, c.ci_upper_micro)}" if c else "",
                scaled(c.p_value_micro, 6, 4) if c else "",
                "*" if c and c.significant else "",
                end_section=index == len(v.metrics) - 1,
            )
    cli.out.print(table)
    cli.out.print("* significant: the interval excludes zero")
    _srm(cli, answer.srm)
    r = answer.recommendation
    cli.out.print(f"recommendation: {r.variant_id or 'keep the default'}; {r.rationale}", markup=False)


@experiments.command(epilog=EXIT_CODES)
@click.argument("experiment_id")
@click.option("--variant", "variant_id", required=True, help="The variant whose mechanic becomes everyone's default.")
@click.option("--reason", required=True, help="Why (recorded with the rollout).")
@click.option("--effective-time", metavar="ISO8601", help="From when; now when absent.")
@click.option(
    "--operator",
    "operator_id",
    default=lambda: os.environ.get("USER", "operator"),
    show_default="$USER",
    help="Recorded as the operator.",
)
@click.option("--request-id", "request_id_", help="Idempotency key.")
@click.pass_obj
def rollout(
    cli: Cli,
    experiment_id: str,
    variant_id: str,
    reason: str,
    effective_time: str | None,
    operator_id: str,
    request_id_: str | None,
) -> None:
    """Make a variant's mechanic everyone's default and end the experiment (RUNNING -> ROLLED_OUT)."""
    request = pb.RolloutExperimentRequest(
        request_id=request_id(request_id_, "rollout", experiment_id),
        experiment_id=experiment_id,
        variant_id=variant_id,
        reason=reason,
        operator_id=operator_id,
    )
    instant = aware(effective_time, "--effective-time")
    if instant is not None:
        request.effective_time.CopyFrom(to_timestamp(instant))
    answer = cli.call(SERVICE, STUB, "RolloutExperiment", request)
    if cli.as_json:
        cli.emit(answer)
        return
    _show(cli, answer.experiment)
    cli.out.print(
        f"default mechanic from {answer.effective_time.ToDatetime():%Y-%m-%d %H:%M} UTC: {answer.default_mechanic.name}"
    )


@experiments.command(epilog=EXIT_CODES)
@click.argument("experiment_id")
@click.option("--reason", default="", help="Why.")
@click.option("--request-id", "request_id_", help="Idempotency key.")
@click.pass_obj
def end(cli: Cli, experiment_id: str, reason: str, request_id_: str | None) -> None:
    """End an experiment without a rollout."""
    request = pb.EndExperimentRequest(
        request_id=request_id(request_id_, "end", experiment_id), experiment_id=experiment_id, reason=reason
    )
    _show(cli, cli.call(SERVICE, STUB, "EndExperiment", request).experiment)
