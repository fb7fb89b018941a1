"""Reconciliation: every service's ledger checked against itself, and the services against each
other. An operator command (`make reconcile`, `python -m shared.reconcile`), read-only.

Each service owns its checks (`services/<name>/adapters/reconcile.py`: `audit(database)`), which
read only that service's database and return findings and a few facts for the cross checks: what
Points captured per order, what Wallet captured per order, what Checkout says each order should
have captured, the interest Wallet posted and the WALLET_INTEREST points Points credited.
The report lists every mismatch; the exit code is 1 when there is any, 0 when clean, 2 when a
database cannot be read.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from shared.db import Database
from shared.settings import SERVICES, Env


@dataclass(frozen=True)
class Finding:
    service: str
    check: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.service}] {self.check}: {self.detail}"


@dataclass
class Audit:
    """What one service's checks found, and its facts for the cross checks."""

    service: str
    checked: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    # Fact name -> key -> amount (points or kopecks).
    facts: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, check: str, rows: int) -> None:
        self.checked[check] = self.checked.get(check, 0) + rows

    def mismatch(self, check: str, detail: str) -> None:
        self.findings.append(Finding(self.service, check, detail))


def totals(connection: Connection, sql: str) -> dict[str, int]:
    """A `SELECT key, amount` query (one row per key) as a dict of whole numbers."""
    return {str(key): int(amount) for key, amount in connection.execute(text(sql))}


def compare(
    name: str, expected: Mapping[str, int], actual: Mapping[str, int], *, expected_by: str, actual_by: str
) -> list[Finding]:
    """Every key where the two sides disagree (a key missing on one side counts as 0)."""
    found = []
    for key in sorted(set(expected) | set(actual)):
        want, have = expected.get(key, 0), actual.get(key, 0)
        if want != have:
            found.append(Finding("cross", name, f"{key}: {expected_by} says {want}, {actual_by} says {have}"))
    return found


def cross_checks(audits: Mapping[str, Audit]) -> tuple[dict[str, int], list[Finding]]:
    checked: dict[str, int] = {}
    findings: list[Finding] = []
    checkout, points, wallet = audits.get("checkout"), audits.get("points"), audits.get("wallet")
    if checkout and points:
        expected = checkout.facts["order_points_captured"]
        actual = {k: v for k, v in points.facts["points_captured_by_reference"].items() if k in expected}
        findings += compare("points captured per order", expected, actual, expected_by="checkout", actual_by="points")
        checked["points captured per order"] = len(expected)
    if checkout and wallet:
        expected = checkout.facts["order_money_captured"]
        actual = {k: v for k, v in wallet.facts["money_captured_by_reference"].items() if k in expected}
        findings += compare("money captured per order", expected, actual, expected_by="checkout", actual_by="wallet")
        checked["money captured per order"] = len(expected)
    if wallet and points:
        expected = wallet.facts["interest_posted"]
        actual = points.facts["wallet_interest_credited"]
        findings += compare(
            "interest postings vs WALLET_INTEREST credits", expected, actual, expected_by="wallet", actual_by="points"
        )
        checked["interest postings"] = len(expected)
    return checked, findings


def reconcile(databases: Mapping[str, Database]) -> tuple[list[Audit], dict[str, int], list[Finding]]:
    audits = {
        name: importlib.import_module(f"services.{name}.adapters.reconcile").audit(database)
        for name, database in databases.items()
    }
    checked, findings = cross_checks(audits)
    return list(audits.values()), checked, findings


def render(audits: Sequence[Audit], cross_checked: Mapping[str, int], cross: Sequence[Finding]) -> str:
    lines = ["Reconciliation report", ""]
    for audit in audits:
        state = "OK" if not audit.findings else f"{len(audit.findings)} MISMATCH(ES)"
        lines.append(f"{audit.service}: {state}")
        lines += [f"  checked {rows:>8}  {check}" for check, rows in sorted(audit.checked.items())]
        lines += [f"  ! {finding}" for finding in audit.findings]
    lines.append(f"cross-service: {'OK' if not cross else f'{len(cross)} MISMATCH(ES)'}")
    lines += [f"  checked {rows:>8}  {check}" for check, rows in sorted(cross_checked.items())]
    lines += [f"  ! {finding}" for finding in cross]
    total = sum(len(a.findings) for a in audits) + len(cross)
    lines += ["", "CLEAN" if total == 0 else f"{total} MISMATCH(ES) FOUND"]
    return "\n".join(lines)


def run(services: Sequence[str], env: Env) -> tuple[str, int]:
    """Check `services` on their configured databases: the report and the number of mismatches.
    Raises when a database cannot be read (that is not a clean report)."""
    return check({name: env.text(f"{name.upper()}_DATABASE_URL") for name in services})


def check(database_urls: Mapping[str, str]) -> tuple[str, int]:
    """Check the services' databases at these URLs (service name -> URL): the report and the
    number of mismatches."""
    databases = {name: Database(url) for name, url in database_urls.items()}
    try:
        audits, checked, cross = reconcile(databases)
    finally:
        for database in databases.values():
            database.dispose()
    return render(audits, checked, cross), sum(len(audit.findings) for audit in audits) + len(cross)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.reconcile", description=__doc__.split("\n\n")[0])
    parser.add_argument("services", nargs="*", default=list(SERVICES), help="services to check (default: all)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.services if name not in SERVICES]
    if unknown:
        print(f"unknown service(s): {', '.join(unknown)}", file=sys.stderr)  # noqa: T201
        return 2
    try:
        report, mismatches = run(args.services, Env())
    except Exception as error:  # a database that cannot be read is not a clean report
        print(f"reconciliation could not run: {error.__class__.__name__}: {error}", file=sys.stderr)  # noqa: T201
        return 2
    print(report)  # noqa: T201
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
