"""The operator CLI (`loyalty`) against one module's real services: feature import, an
experiment from creation to rollout with its results table and plot, the jobs, reconciliation,
tokens; and the exit codes scripts rely on (bad input 2, a service down 3, a refusal 4, a failed
check 1)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner, Result

from loyalty_cli.main import cli
from shared.clock import ManualClock
from tests.harness import UNREACHABLE, Databases, Harness, RunningService, free_port
from tests.integration.experiments_support import ExperimentsClient
from tests.integration.wallet_support import WalletClient

HEADER = (
    "customer_id,as_of,average_order_value_minor,order_count,lookback_days,"
    "uses_financial_products,takes_part_in_points_activities"
)
SECRET = "cli-test-secret-that-is-at-least-32-bytes"


class Platform:
    def __init__(self, services: dict[str, RunningService], clock: ManualClock) -> None:
        self.services, self.clock = services, clock
        self.env = {
            "PEER_RETRY_ATTEMPTS": "1",
            "LOYALTY_ENV": "test",
            "LOYALTY_JWT_SECRET": SECRET,
            "OTEL_TRACES_EXPORTER": "none",
        }
        for name, svc in services.items():
            self.env[f"{name.upper()}_TARGET"] = svc.target
            self.env[f"{name.upper()}_DATABASE_URL"] = svc.database_url

    def run(self, *args: str, **env: str) -> Result:
        return CliRunner().invoke(cli, list(args), env={**self.env, **env}, catch_exceptions=False)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    databases = Databases(tmp_path_factory.mktemp("cli"))
    clock = ManualClock()
    harness = Harness(databases, clock)
    try:
        # Promotions computes experiment results from Wallet's and Checkout's statistics.
        wallet_port, checkout_port = free_port(), free_port()
        peers = {"wallet": f"127.0.0.1:{wallet_port}", "checkout": f"127.0.0.1:{checkout_port}"}
        harness.start("points")
        harness.start("promotions", peers=peers)
        harness.start("wallet", WALLET_PORT=str(wallet_port))
        harness.start("checkout", CHECKOUT_PORT=str(checkout_port))
        yield Platform(dict(harness.running), clock)
    finally:
        harness.close()
        databases.drop_all()


def features_csv(path: Path, customers: list[str], *extra: str) -> Path:
    rows = [
        f"{c},2025-12-31T00:00:00+03:00,{50_000 + 25_000 * (n % 8)},{n % 5},180,{'true' if n % 2 else 'false'},false"
        for n, c in enumerate(customers)
    ]
    path.write_text("\n".join([HEADER, *rows, *extra]) + "\n", encoding="utf-8")
    return path


def test_features_import_counts_bad_rows_and_refuses_unreadable_files(platform: Platform, tmp_path: Path) -> None:
    customers = [f"i{uuid.uuid4().hex[:6]}-{n}" for n in range(5)]
    good = platform.run("features", "import", str(features_csv(tmp_path / "good.csv", customers)))
    assert good.exit_code == 0, good.output
    assert "5 rows read, 5 imported, 0 refused" in good.stdout

    bad = features_csv(tmp_path / "bad.csv", customers[:2], "x-1,31.12.2025,100,1,180,true,false", "n-1,,1")
    answer = platform.run("--json", "features", "import", str(bad), "--request-id", "import-bad")
    assert answer.exit_code == 1, answer.output  # rows refused: a failed check, the others imported
    summary = json.loads(answer.stdout)
    assert (summary["rows_received"], summary["rows_imported"], summary["rows_rejected"]) == (4, 2, 2)
    assert [(e["line"], e["reason"]) for e in summary["errors"]] == [(4, "INVALID_AS_OF"), (5, "WRONG_COLUMN_COUNT")]
    assert json.loads(platform.run("--json", "features", "import", str(bad), "--request-id", "import-bad").stdout) == (
        summary
    )  # a replay answers the first summary

    header = tmp_path / "header.csv"
    header.write_text("customer_id,as_of\nz-1,2025-12-31T00:00:00Z\n")
    refused = platform.run("features", "import", str(header))
    assert refused.exit_code == 2 and "INVALID_CSV_HEADER" in refused.stderr and "order_count" in refused.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert platform.run("features", "import", str(empty)).exit_code == 2
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00junk")
    assert "UTF-8" in platform.run("features", "import", str(binary)).stderr
    missing = platform.run("features", "import", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def test_an_experiment_from_creation_to_rollout(platform: Platform, tmp_path: Path) -> None:
    customers = [f"x{uuid.uuid4().hex[:6]}-{n:02d}" for n in range(20)]
    assert platform.run("features", "import", str(features_csv(tmp_path / "f.csv", customers))).exit_code == 0
    created = platform.run(
        "--json", "experiments", "create", "--name", "APR 18 pilot", "--salt", "cli-1", "--sample-size", "10",
        "--variant", "apr-18=1800", "--aov-edges", "100000", "--by-financial-products",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    experiment = json.loads(created.stdout)
    eid = experiment["experiment_id"]
    assert experiment["status"] == "EXPERIMENT_STATUS_DRAFT"
    assert [v["variant_id"] for v in experiment["variants"]] == ["control", "apr-18"]
    assert experiment["variants"][1]["mechanic"]["interest"]["apr_bps"] == 1800

    listed = platform.run("experiments", "list", "--status", "DRAFT")
    assert listed.exit_code == 0 and eid in listed.stdout
    sampled = platform.run("experiments", "sample", eid)
    assert sampled.exit_code == 0, sampled.output
    assert "10 of " in sampled.stdout and "eligible customers sampled" in sampled.stdout  # the module's customers
    assert "passed" in sampled.stdout
    not_started = platform.run("experiments", "results", eid)
    assert not_started.exit_code == 4 and "EXPERIMENT_NOT_STARTED" in not_started.stderr
    started = platform.run("experiments", "start", eid)
    assert started.exit_code == 0 and "RUNNING" in started.stdout, started.output

    treated = next(
        a.customer_id
        for a in ExperimentsClient(platform.services["promotions"].channel()).assignments(eid)
        if a.variant_id == "apr-18"
    )
    platform.clock.set(datetime(2026, 1, 5, tzinfo=UTC))
    WalletClient(platform.services["wallet"]).top_up(treated, 100_000)
    platform.clock.set(datetime(2026, 1, 11, tzinfo=UTC))
    plot = tmp_path / "results.png"
    results = platform.run("experiments", "results", eid, "--confidence", "9000", "--plot", str(plot))
    assert results.exit_code == 0, results.output
    for text in ("apr-18", "control", "net deposits", "average balance", "points cost", "90 % interval"):
        assert text in results.stdout, text
    assert "recommendation:" in results.stdout and "passed" in results.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5_000

    unknown = platform.run("experiments", "rollout", eid, "--variant", "nope", "--reason", "won")
    assert unknown.exit_code == 4 and "VARIANT_NOT_FOUND" in unknown.stderr
    rolled = platform.run("experiments", "rollout", eid, "--variant", "apr-18", "--reason", "more money kept")
    assert rolled.exit_code == 0 and "ROLLED_OUT" in rolled.stdout, rolled.output
    assert "Interest 18.00 %" in rolled.stdout


def test_refusals_and_bad_input_have_their_exit_codes(platform: Platform, tmp_path: Path) -> None:
    missing = platform.run("experiments", "show", "nope")
    assert missing.exit_code == 4 and "EXPERIMENT_NOT_FOUND" in missing.stderr
    invalid = platform.run(
        "experiments", "create", "--name", "x", "--salt", "s", "--sample-size", "5", "--variant", "v=9999"
    )
    assert invalid.exit_code == 2 and "MECHANIC_APR_OUT_OF_RANGE" in invalid.stderr, invalid.output
    assert platform.run("experiments", "create", "--name", "x").exit_code == 2  # --salt ... missing
    assert platform.run("experiments", "create", "--variant", "no-equals-sign").exit_code == 2
    definition = tmp_path / "definition.json"
    definition.write_text(json.dumps({"name": "x", "unknown_field": 1}))
    assert platform.run("experiments", "create", "--file", str(definition)).exit_code == 2
    assert platform.run("experiments", "start", "e", "--start-time", "2026-01-01T00:00").exit_code == 2  # no offset
    assert platform.run("jobs", "interest", "--month", "2026-13").exit_code == 2
    assert platform.run("no-such-command").exit_code == 2


def test_a_service_that_cannot_be_reached_is_exit_3(platform: Platform) -> None:
    down = platform.run("experiments", "list", PROMOTIONS_TARGET=UNREACHABLE)
    assert down.exit_code == 3
    assert f"the promotions service at {UNREACHABLE} cannot be reached" in down.stderr
    job = platform.run("jobs", "expire", POINTS_TARGET=UNREACHABLE)
    assert job.exit_code == 3 and "points service" in job.stderr
    database = platform.run("reconcile", "wallet", WALLET_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    assert database.exit_code == 3 and "cannot be read" in database.stderr


def test_jobs_and_reconciliation(platform: Platform) -> None:
    customer = f"j{uuid.uuid4().hex[:6]}"
    platform.clock.set(datetime(2026, 1, 12, tzinfo=UTC))
    WalletClient(platform.services["wallet"]).top_up(customer, 1_000_000)
    platform.clock.set(datetime(2026, 2, 3, tzinfo=UTC))
    posted = platform.run("--json", "jobs", "interest", "--month", "2026-01", "--request-id", "cli-interest-1")
    assert posted.exit_code == 0, posted.output
    answer = json.loads(posted.stdout)
    assert answer["month"] == "2026-01" and int(answer["wallets_posted"]) >= 1 and int(answer["points_posted"]) > 0
    again = platform.run("jobs", "interest", "--month", "2026-01", "--request-id", "cli-interest-1")
    assert again.exit_code == 0 and "wallets_posted" in again.stdout  # the replay shows the first run
    reused = platform.run("jobs", "interest", "--month", "2025-12", "--request-id", "cli-interest-1")
    assert reused.exit_code == 4 and "IDEMPOTENCY_KEY_REUSED" in reused.stderr
    for job in ("expire", "activate"):
        done = platform.run("jobs", job)
        assert done.exit_code == 0 and "done" in done.stdout, done.output
    assert platform.run("jobs", "run", "release-expired-wallet-holds").exit_code == 0
    for service in platform.services.values():
        service.app.runtime.relay.deliver_due()  # the interest reaches Points before the cross check

    clean = platform.run("reconcile")
    assert clean.exit_code == 0, clean.output
    assert clean.stdout.rstrip().endswith("CLEAN") and "interest postings" in clean.stdout


def test_tokens(platform: Platform) -> None:
    minted = platform.run("token", "--sub", "anna", "--roles", "operator,customer", "--ttl-seconds", "60")
    assert minted.exit_code == 0, minted.output
    claims = jwt.decode(minted.stdout.strip(), SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["roles"], claims["exp"] - claims["iat"]) == ("anna", ["operator", "customer"], 60)
    assert platform.run("token", "--sub", "anna", "--roles", "admin").exit_code == 2
    no_secret = platform.run("token", "--sub", "anna", LOYALTY_JWT_SECRET="")
    assert no_secret.exit_code == 2 and "LOYALTY_JWT_SECRET" in no_secret.stderr
    dev = platform.run("token", "--sub", "anna", LOYALTY_ENV="dev", LOYALTY_JWT_SECRET="")
    assert dev.exit_code == 0 and dev.stdout.count(".") == 2
