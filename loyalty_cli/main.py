"""`loyalty`: the operator's command line. It talks to the services over gRPC at the
`<SERVICE>_TARGET` addresses (and reads the databases at `<SERVICE>_DATABASE_URL` for
`reconcile`), configured by the same environment variables as the services and
`python -m shared.jobs`."""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime

import click
from rich.table import Table

from gateway.auth import mint_token
from gateway.settings import GatewaySettings
from loyalty_cli import experiments
from loyalty_cli.common import CHECK_FAILED, EXIT_CODES, UNAVAILABLE, USAGE, Cli, Failure, refused
from shared.errors import DomainError
from shared.jobs import JOBS, run_job
from shared.reconcile import run as run_reconcile
from shared.settings import SERVICES, Env, SettingsError
from shared.telemetry import Telemetry
from shared.validation import MAX_CUSTOMER_ID

ROLES = ("customer", "operator")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


@click.group("loyalty", context_settings=CONTEXT, epilog=EXIT_CODES)
@click.option("--json", "as_json", is_flag=True, help="Print answers as JSON on stdout, no progress bars.")
@click.option(
    "--deadline-ms",
    type=click.IntRange(min=1),
    default=300_000,
    show_default=True,
    help="Deadline of each call to a service.",
)
@click.pass_context
def cli(ctx: click.Context, as_json: bool, deadline_ms: int) -> None:
    """The loyalty platform's operator command line: jobs, customer features, experiments,
    reconciliation and dev tokens.

    Services are reached at WALLET_TARGET, POINTS_TARGET, PROMOTIONS_TARGET and CHECKOUT_TARGET
    (defaults: 127.0.0.1:50051 to 50054, what `make run` starts)."""
    logging.getLogger().setLevel(logging.WARNING)
    ctx.obj = Cli(env=Env(dict(os.environ)), deadline_ms=deadline_ms, as_json=as_json)


cli.add_command(experiments.experiments)
cli.add_command(experiments.features)


# --- jobs ---------------------------------------------------------------------------------------


@cli.group(context_settings=CONTEXT, epilog=EXIT_CODES)
def jobs() -> None:
    """Run a scheduled job now (each is idempotent in its service)."""


def _run(cli_: Cli, name: str, request_id: str | None, month: str = "") -> None:
    job = JOBS[name]
    minute = datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")
    key = request_id or ":".join(filter(None, ["cli", name, month, minute]))
    telemetry = Telemetry("loyalty-cli", environ={**cli_.env.values, "OTEL_METRICS_EXPORTER": "none"})
    try:
        with cli_.working(f"{name}{' ' + month if month else ''} ({job.service})"):
            answer = run_job(
                name, env=cli_.env, telemetry=telemetry, request_id=key, month=month, deadline_ms=cli_.deadline_ms
            )
    except SettingsError as error:
        raise Failure(USAGE, f"configuration: {error}") from None
    except DomainError as error:
        raise refused(error, service=job.service, target=cli_.target(job.service)) from None
    finally:
        telemetry.shutdown()
    if cli_.as_json:
        cli_.emit(answer)
        return
    cli_.out.print(f"{name}: done (request id {key})")
    table = Table()
    table.add_column("result")
    table.add_column("value", justify="right")
    for field in answer.DESCRIPTOR.fields:
        value = getattr(answer, field.name)
        table.add_row(field.name, f"{value:,}" if isinstance(value, int) else str(value))
    cli_.out.print(table)


def _month(value: str) -> str:
    if not re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])", value):
        raise click.BadParameter(f"must be YYYY-MM, got {value!r}")
    return value


_REQUEST_ID = click.option(
    "--request-id", help="Idempotency key; the same key replays the first run. Default: the job and the minute."
)


@jobs.command(epilog=EXIT_CODES)
@click.option(
    "--month",
    required=True,
    help="The ended month to post, YYYY-MM.",
    callback=lambda _ctx, _param, value: _month(value),
)
@_REQUEST_ID
@click.pass_obj
def interest(cli_: Cli, month: str, request_id: str | None) -> None:
    """Post a month's wallet interest as points (Wallet.PostMonthlyInterest)."""
    _run(cli_, "post-monthly-interest", request_id, month)


@jobs.command(epilog=EXIT_CODES)
@_REQUEST_ID
@click.pass_obj
def expire(cli_: Cli, request_id: str | None) -> None:
    """Write off points past their expiry (Points.ExpirePoints)."""
    _run(cli_, "expire-points", request_id)


@jobs.command(epilog=EXIT_CODES)
@_REQUEST_ID
@click.pass_obj
def activate(cli_: Cli, request_id: str | None) -> None:
    """Make pending points whose time has come available (Points.ActivateDuePoints)."""
    _run(cli_, "activate-due-points", request_id)


@jobs.command("run", epilog="jobs: " + ", ".join(sorted(JOBS)) + ".\n\n" + EXIT_CODES)
@click.argument("name", type=click.Choice(sorted(JOBS)))
@click.option("--month", default="", help="post-monthly-interest: YYYY-MM.")
@_REQUEST_ID
@click.pass_obj
def run_any(cli_: Cli, name: str, month: str, request_id: str | None) -> None:
    """Run any scheduled job by its CronJob name (`python -m shared.jobs` names)."""
    if name == "post-monthly-interest" and not month:
        raise click.BadParameter("post-monthly-interest needs --month YYYY-MM", param_hint="--month")
    if month:
        _month(month)
    _run(cli_, name, request_id, month)


# --- reconcile ----------------------------------------------------------------------------------


@cli.command(epilog=EXIT_CODES)
@click.argument("services", nargs=-1, type=click.Choice(SERVICES))
@click.pass_obj
def reconcile(cli_: Cli, services: tuple[str, ...]) -> None:
    """Check every ledger and the services against each other, on the databases at
    <SERVICE>_DATABASE_URL (read-only). Exit 1 on any mismatch."""
    try:
        with cli_.working("reconciling " + ", ".join(services or SERVICES)):
            report, mismatches = run_reconcile(services or SERVICES, cli_.env)
    except SettingsError as error:
        raise Failure(USAGE, f"configuration: {error}") from None
    except Exception as error:  # a database that cannot be read is not a clean report
        raise Failure(UNAVAILABLE, f"a database cannot be read: {error.__class__.__name__}: {error}") from None
    if cli_.as_json:
        cli_.emit({"mismatches": mismatches, "report": report})
    else:
        cli_.out.print(report, markup=False)
    if mismatches:
        raise click.exceptions.Exit(CHECK_FAILED)


# --- token --------------------------------------------------------------------------------------


@cli.command(epilog=EXIT_CODES)
@click.option("--sub", required=True, help="Subject: the customer id, or the operator's id.")
@click.option("--roles", default="customer", show_default=True, help="Comma-separated: customer, operator.")
@click.option("--ttl-seconds", type=click.IntRange(min=1), default=12 * 3600, show_default=True)
@click.pass_obj
def token(cli_: Cli, sub: str, roles: str, ttl_seconds: int) -> None:
    """Print a bearer token for the gateway, signed with LOYALTY_JWT_SECRET (or the documented dev
    secret when LOYALTY_ENV=dev)."""
    names = [role.strip() for role in roles.split(",") if role.strip()]
    unknown = [role for role in names if role not in ROLES]
    if not names or unknown:
        raise click.BadParameter(f"roles are {' and '.join(ROLES)}; got {roles!r}", param_hint="--roles")
    if not sub.strip() or len(sub) > MAX_CUSTOMER_ID:
        raise click.BadParameter(f"1 to {MAX_CUSTOMER_ID} characters", param_hint="--sub")
    try:
        settings = GatewaySettings.from_env(cli_.env.values)
    except SettingsError as error:
        raise Failure(USAGE, f"configuration: {error}") from None
    click.echo(mint_token(settings.jwt_secret, sub, names, ttl_seconds=ttl_seconds))


def main() -> None:
    cli(prog_name="loyalty")


if __name__ == "__main__":
    main()
