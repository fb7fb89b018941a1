"""Scheduled jobs: `python -m shared.jobs <job>` calls one job RPC and reports its answer.

The Kubernetes CronJobs (k8s/base/jobs) run this. Every job RPC is idempotent by its request id,
so the id is derived from the *scheduled* time of the run, not from the moment the pod starts: a
pod that the Job controller retries, or a second pod of the same schedule, sends the same id and
gets the first run's answer instead of running the job twice. The scheduled time comes from
`--scheduled-at`, else from the name of the Job a CronJob created (`<cronjob>-<minutes since the
epoch>`, read from `JOB_NAME`), else it is the current minute (a manual run).

The run is traced: the RPC's server span is a child of this runner's `job <name>` span, so a
job's trace starts at its trigger, and the outbox messages it writes link back to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from loyalty.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from loyalty.promotions.v1 import promotions_pb2, promotions_pb2_grpc
from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from opentelemetry import trace

from shared.calendar import ProgrammeCalendar
from shared.errors import DomainError
from shared.logs import configure_logging
from shared.peers import Peers
from shared.settings import Env, SettingsError
from shared.telemetry import Telemetry

log = logging.getLogger("shared.jobs")


@dataclass(frozen=True)
class Run:
    """What a job needs to build its request."""

    request_id: str
    scheduled_at: datetime
    env: Env
    month: str = ""


@dataclass(frozen=True)
class Job:
    service: str
    stub: Callable[[Any], Any]
    method: str
    request: Callable[[Run], Message]
    help: str


def _previous_month(run: Run) -> str:
    """The month that ended before the scheduled time, in the wallet's programme time zone."""
    if run.month:
        return run.month
    calendar = ProgrammeCalendar(run.env.text("WALLET_TIME_ZONE"), setting="WALLET_TIME_ZONE")
    return str(calendar.month_of(run.scheduled_at).previous())


JOBS: dict[str, Job] = {
    "post-monthly-interest": Job(
        "wallet",
        wallet_pb2_grpc.WalletServiceStub,
        "PostMonthlyInterest",
        lambda run: wallet_pb2.PostMonthlyInterestRequest(request_id=run.request_id, month=_previous_month(run)),
        "Wallet: post last month's interest as points (through the outbox to Points).",
    ),
    "release-expired-wallet-holds": Job(
        "wallet",
        wallet_pb2_grpc.WalletServiceStub,
        "ReleaseExpiredHolds",
        lambda run: wallet_pb2.ReleaseExpiredHoldsRequest(request_id=run.request_id),
        "Wallet: release money holds past their TTL.",
    ),
    "expire-points": Job(
        "points",
        points_pb2_grpc.PointsServiceStub,
        "ExpirePoints",
        lambda run: points_pb2.ExpirePointsRequest(request_id=run.request_id),
        "Points: write off lots past their expiry.",
    ),
    "activate-due-points": Job(
        "points",
        points_pb2_grpc.PointsServiceStub,
        "ActivateDuePoints",
        lambda run: points_pb2.ActivateDuePointsRequest(request_id=run.request_id),
        "Points: make pending lots whose activation time has come available.",
    ),
    "release-expired-points-holds": Job(
        "points",
        points_pb2_grpc.PointsServiceStub,
        "ReleaseExpiredHolds",
        lambda run: points_pb2.ReleaseExpiredHoldsRequest(request_id=run.request_id),
        "Points: release points holds past their TTL.",
    ),
    "release-expired-reservations": Job(
        "promotions",
        promotions_pb2_grpc.PromotionsServiceStub,
        "ReleaseExpiredReservations",
        lambda run: promotions_pb2.ReleaseExpiredReservationsRequest(request_id=run.request_id),
        "Promotions: free promo code reservations past their TTL.",
    ),
    "recover-orders": Job(
        "checkout",
        checkout_pb2_grpc.CheckoutServiceStub,
        "RecoverOrders",
        lambda run: checkout_pb2.RecoverOrdersRequest(request_id=run.request_id),
        "Checkout: drive stuck orders forward or compensate them.",
    ),
}

_CRONJOB_SUFFIX = re.compile(r"-(\d{7,})$")


def scheduled_time(scheduled_at: str | None, job_name: str | None, now: datetime) -> datetime:
    """The minute this run was scheduled for (UTC)."""
    if scheduled_at:
        try:
            instant = datetime.fromisoformat(scheduled_at)
        except ValueError:
            raise SettingsError(f"--scheduled-at must be an ISO 8601 time, got {scheduled_at!r}") from None
        if instant.tzinfo is None:
            raise SettingsError(f"--scheduled-at needs a UTC offset, got {scheduled_at!r}")
        return instant.astimezone(UTC).replace(second=0, microsecond=0)
    match = _CRONJOB_SUFFIX.search(job_name or "")
    if match:
        return datetime.fromtimestamp(int(match.group(1)) * 60, UTC)
    return now.astimezone(UTC).replace(second=0, microsecond=0)


def request_id_for(job: str, scheduled_at: datetime) -> str:
    """The idempotency key of one scheduled run: the job and its scheduled minute."""
    return f"job:{job}:{scheduled_at.astimezone(UTC):%Y-%m-%dT%H:%MZ}"


def run_job(
    name: str,
    *,
    env: Env,
    telemetry: Telemetry,
    request_id: str | None = None,
    scheduled_at: str | None = None,
    month: str = "",
    deadline_ms: int = 300_000,
    now: datetime | None = None,
) -> Message:
    """Call job `name` once (retrying UNAVAILABLE); returns its answer, raises DomainError."""
    job = JOBS[name]
    when = scheduled_time(scheduled_at, env.values.get("JOB_NAME"), now or datetime.now(UTC))
    run = Run(request_id=request_id or request_id_for(name, when), scheduled_at=when, env=env, month=month)
    request = job.request(run)
    peers = Peers(
        {job.service: env.text(f"{job.service.upper()}_TARGET")},
        deadline_ms=deadline_ms,
        retry_attempts=env.integer("PEER_RETRY_ATTEMPTS", minimum=1),
        wrap_channel=telemetry.intercept_channel,
    )
    try:
        with telemetry.tracer.start_as_current_span(
            f"job {name}",
            kind=trace.SpanKind.INTERNAL,
            attributes={
                "loyalty.job.name": name,
                "loyalty.job.request_id": run.request_id,
                "loyalty.job.scheduled_at": when.isoformat(),
            },
        ) as span:
            try:
                method = getattr(peers.stub(job.service, job.stub), job.method)
                response: Message = peers.call(method, request, idempotent=True)
            except DomainError as error:
                span.set_attribute("loyalty.rpc.reason", error.reason)
                span.set_status(trace.StatusCode.ERROR, error.reason)
                raise
        return response
    finally:
        peers.close()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.jobs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="jobs:\n" + "\n".join(f"  {name:<30} {job.help}" for name, job in JOBS.items()),
    )
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--request-id", help="idempotency key; default: derived from the scheduled time")
    parser.add_argument("--scheduled-at", help="ISO 8601 time the run was scheduled for (default: see above)")
    parser.add_argument("--month", default="", help="post-monthly-interest: YYYY-MM (default: the previous month)")
    parser.add_argument("--deadline-ms", type=int, default=300_000, help="deadline of the job RPC")
    args = parser.parse_args(argv)
    env = Env(dict(os.environ) if environ is None else environ)
    configure_logging("jobs", level=env.text("LOG_LEVEL").upper(), fmt=env.text("LOG_FORMAT").lower())
    try:
        telemetry = Telemetry("jobs", environ=env.values)
    except SettingsError as error:
        log.error("job configuration error", extra={"job": args.job, "error": str(error)})
        return 2
    try:
        response = run_job(
            args.job,
            env=env,
            telemetry=telemetry,
            request_id=args.request_id,
            scheduled_at=args.scheduled_at,
            month=args.month,
            deadline_ms=args.deadline_ms,
        )
    except SettingsError as error:
        log.error("job configuration error", extra={"job": args.job, "error": str(error)})
        return 2
    except DomainError as error:
        log.error(
            "job failed",
            extra={"job": args.job, "code": error.code.name, "reason": error.reason, "detail": error.message},
        )
        return 1
    finally:
        telemetry.shutdown()
    result = MessageToDict(response, preserving_proto_field_name=True)
    log.info("job done", extra={"job": args.job, "result": result})
    print(json.dumps({"job": args.job, "result": result}, sort_keys=True))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
