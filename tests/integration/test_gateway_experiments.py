"""The experiments operator API through HTTP against the real services: customer features from
CSV, an experiment's life cycle (create, sample, start, results, rollout, end), and the wallet
mechanic a customer sees changing with it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.clock import ManualClock
from tests.harness import Harness, RunningService, free_port
from tests.integration.experiments_support import ExperimentsClient
from tests.integration.gateway_support import as_customer, as_operator, gateway_client, key, problem

HEADER = (
    "customer_id,as_of,average_order_value_minor,order_count,lookback_days,"
    "uses_financial_products,takes_part_in_points_activities"
)
CSV = {"Content-Type": "text/csv"}


@pytest.fixture
def platform(harness: Harness) -> dict[str, RunningService]:
    """All four services, with Promotions wired to Wallet and Checkout too (its experiment results
    read their statistics), which `harness.start_all` cannot do as it starts Promotions first."""
    wallet_port, checkout_port = free_port(), free_port()
    peers = {"wallet": f"127.0.0.1:{wallet_port}", "checkout": f"127.0.0.1:{checkout_port}"}
    harness.start("points")
    harness.start("promotions", peers=peers)
    harness.start("wallet", WALLET_PORT=str(wallet_port))
    harness.start("checkout", CHECKOUT_PORT=str(checkout_port))
    return dict(harness.running)


@pytest.fixture
def api(platform: dict[str, RunningService]) -> Iterator[TestClient]:
    with gateway_client(platform) as client:
        yield client


def population(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{n:03d}" for n in range(count)]


def csv_of(customers: list[str]) -> str:
    rows = [
        f"{c},2025-12-31T00:00:00+03:00,{50_000 + 25_000 * (n % 8)},{n % 5},180,{'true' if n % 2 else 'false'},false"
        for n, c in enumerate(customers)
    ]
    return "\n".join([HEADER, *rows]) + "\n"


def import_csv(api: TestClient, body: str, idem: str | None = None) -> Any:
    return api.post(
        "/v1/admin/customer-features/import", content=body.encode(), headers={**as_operator(key=idem), **CSV}
    )


def definition(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Wallet mechanics pilot",
        "description": "Does 18 % a year keep more money in the wallet?",
        "sample_size": 10,
        "salt": "pilot-2026",
        "strata": {"average_order_value_edges_minor": [100_000], "by_financial_products": True},
        "eligibility": {"min_order_count": 0},
        "variants": [
            {"variant_id": "control", "name": "Control", "control": True, "weight": 1},
            {
                "variant_id": "apr-18",
                "name": "18 % a year",
                "weight": 1,
                "mechanic": {"code": "interest-18", "name": "Interest 18 %", "kind": "INTEREST", "apr_bps": 1800},
            },
        ],
    }
    body.update(overrides)
    return body


def wallet_apr(api: TestClient, customer: str) -> int:
    wallet = api.get("/v1/wallet", headers=as_customer(customer))
    assert wallet.status_code == 200, wallet.text
    apr: int = wallet.json()["mechanic"]["apr_bps"]
    return apr


def test_features_from_csv_are_imported_and_bad_rows_are_counted(api: TestClient) -> None:
    customers = population(f"f{uuid.uuid4().hex[:6]}", 3)
    bad = [
        f"{customers[0]}x,31.12.2025,100,1,180,true,false",  # line 5: not RFC 3339
        "neg-1,2025-12-31T00:00:00+03:00,100,-2,180,true,false",  # line 6: the service refuses it
        "short-1,2025-12-31T00:00:00+03:00,100",  # line 7
        "float-1,2025-12-31T00:00:00+03:00,1.5,1,180,true,false",  # line 8
        ",2025-12-31T00:00:00+03:00,100,1,180,true,false",  # line 9: the service refuses it
        "bool-1,2025-12-31T00:00:00+03:00,100,1,180,yes,false",  # line 10
    ]
    body = csv_of(customers) + "\n".join(bad) + "\n"
    answer = import_csv(api, body, idem="import-1")
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    assert (summary["rows_received"], summary["rows_imported"], summary["rows_rejected"]) == (9, 3, 6)
    assert [(e["line"], e["reason"]) for e in summary["errors"]] == [
        (5, "INVALID_AS_OF"),
        (6, "NEGATIVE_ORDER_COUNT"),
        (7, "WRONG_COLUMN_COUNT"),
        (8, "INVALID_AVERAGE_ORDER_VALUE_MINOR"),
        (9, "CUSTOMER_ID_REQUIRED"),
        (10, "INVALID_USES_FINANCIAL_PRODUCTS"),
    ]
    assert import_csv(api, body, idem="import-1").json() == summary  # a replay answers the first summary

    features = api.get(f"/v1/admin/customers/{customers[1]}/features", headers=as_operator())
    assert features.json() == {
        "customer_id": customers[1],
        "as_of": "2025-12-30T21:00:00Z",
        "average_order_value_minor": 75_000,
        "order_count": 1,
        "lookback_days": 180,
        "uses_financial_products": True,
        "takes_part_in_points_activities": False,
        "source": "IMPORTED",
    }, features.text
    problem(api.get("/v1/admin/customers/neg-1/features", headers=as_operator()), 404, "CUSTOMER_FEATURES_NOT_FOUND")

    # Whole-request faults are 400 (or 415) with the field named, and store nothing.
    refused = problem(import_csv(api, "customer_id,as_of\nzz-1,2025-12-31T00:00:00Z\n"), 400, "INVALID_CSV_HEADER")
    assert refused["field_violations"][0]["field"] == "header" and "order_count" in refused["detail"]
    assert problem(import_csv(api, ""), 400, "CSV_EMPTY")["field_violations"][0]["field"] == "body"
    problem(
        api.post("/v1/admin/customer-features/import", content=b"\xff\xfe", headers={**as_operator(), **CSV}),
        400,
        "INVALID_ARGUMENT",
    )
    problem(
        api.post("/v1/admin/customer-features/import", json={"rows": []}, headers=as_operator()),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    problem(api.get("/v1/admin/customers/zz-1/features", headers=as_operator()), 404, "CUSTOMER_FEATURES_NOT_FOUND")


def test_create_sample_start_results_rollout_changes_the_customer_s_wallet_mechanic(
    api: TestClient, platform: dict[str, RunningService], clock: ManualClock
) -> None:
    customers = population(f"e{uuid.uuid4().hex[:6]}", 20)
    assert import_csv(api, csv_of(customers)).json()["rows_imported"] == 20

    created = api.post("/v1/admin/experiments", json=definition(), headers=as_operator(key="exp-1"))
    assert created.status_code == 201, created.text
    experiment = created.json()
    eid = experiment["experiment_id"]
    assert (experiment["status"], experiment["sample_size"], experiment["salt"]) == ("DRAFT", 10, "pilot-2026")
    assert experiment["variants"][1]["mechanic"]["apr_bps"] == 1800 and experiment["variants"][0]["mechanic"] is None
    assert experiment["eligibility"]["min_order_count"] == 0 and experiment["eligibility"]["max_order_count"] is None
    again = api.post("/v1/admin/experiments", json=definition(), headers=as_operator(key="exp-1"))
    assert again.json()["experiment_id"] == eid  # the Idempotency-Key replays
    problem(
        api.post("/v1/admin/experiments", json=definition(salt="other"), headers=as_operator(key="exp-1")),
        409,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert api.get(f"/v1/admin/experiments/{eid}", headers=as_operator()).json() == experiment
    drafts = api.get("/v1/admin/experiments?status=DRAFT&page_size=1", headers=as_operator()).json()
    assert [e["experiment_id"] for e in drafts["experiments"]] == [eid] and drafts["next_page_token"] == ""
    problem(api.post(f"/v1/admin/experiments/{eid}/rollout", json={"variant_id": "apr-18", "reason": "x"},
                     headers=as_operator()), 422, "EXPERIMENT_NOT_RUNNING")  # fmt: skip

    sampled = api.post(f"/v1/admin/experiments/{eid}/sample", headers=as_operator(key="draw-1"))
    assert sampled.status_code == 200, sampled.text
    draw = sampled.json()
    assert (draw["experiment"]["status"], draw["eligible_count"], draw["sampled_count"]) == ("SAMPLED", 20, 10)
    assert draw["srm"]["passed"] and sum(c["observed"] for c in draw["srm"]["counts"]) == 10
    assert sum(s["sampled"] for s in draw["strata"]) == 10 and sum(s["population"] for s in draw["strata"]) == 20
    problem(api.get(f"/v1/admin/experiments/{eid}/results", headers=as_operator()), 422, "EXPERIMENT_NOT_STARTED")

    running = api.post(f"/v1/admin/experiments/{eid}/start", headers=as_operator())
    assert running.json()["status"] == "RUNNING", running.text
    problem(api.post(f"/v1/admin/experiments/{eid}/start", headers=as_operator()), 422, "EXPERIMENT_NOT_SAMPLED")

    assigned = {
        a.customer_id: a.variant_id for a in ExperimentsClient(platform["promotions"].channel()).assignments(eid)
    }
    treated = next(c for c, v in assigned.items() if v == "apr-18")
    control = next(c for c, v in assigned.items() if v == "control")
    outsider = next(c for c in customers if c not in assigned)
    clock.set(datetime(2026, 1, 5, tzinfo=UTC))
    for customer in (treated, control, outsider):
        top_up = api.post(
            "/v1/wallet/top-ups",
            json={"amount_minor": 100_000, "card_token": "tok_ok"},
            headers=as_customer(customer, key()),
        )
        assert top_up.status_code == 201, top_up.text
    assert [wallet_apr(api, c) for c in (treated, control, outsider)] == [1800, 1200, 1200]

    clock.set(datetime(2026, 1, 11, tzinfo=UTC))
    results = api.get(f"/v1/admin/experiments/{eid}/results?confidence_level_bps=9000", headers=as_operator())
    assert results.status_code == 200, results.text
    report = results.json()
    assert report["confidence_level_bps"] == 9000 and report["srm"]["passed"]
    assert [(v["variant_id"], v["control"], v["customers"]) for v in report["variants"]] == [
        ("control", True, 5),
        ("apr-18", False, 5),
    ]
    deposits = next(c for c in report["variants"][1]["comparisons"] if c["metric"] == "NET_DEPOSITS")
    assert deposits["ci_lower_micro"] <= deposits["difference_micro"] <= deposits["ci_upper_micro"]
    assert report["recommendation"]["rule"]
    problem(
        api.get(f"/v1/admin/experiments/{eid}/results?confidence_level_bps=100", headers=as_operator()),
        400,
        "CONFIDENCE_LEVEL_INVALID",
    )

    problem(
        api.post(f"/v1/admin/experiments/{eid}/rollout", json={"variant_id": "nope", "reason": "won"},
                 headers=as_operator()), 404, "VARIANT_NOT_FOUND",
    )  # fmt: skip
    rolled = api.post(
        f"/v1/admin/experiments/{eid}/rollout",
        json={"variant_id": "apr-18", "reason": "more money kept"},
        headers=as_operator("op-anna", key="roll-1"),
    )
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["experiment"]["status"] == "ROLLED_OUT"
    assert rolled.json()["experiment"]["rolled_out_variant_id"] == "apr-18"
    assert rolled.json()["default_mechanic"]["apr_bps"] == 1800
    assert [wallet_apr(api, c) for c in (treated, control, outsider)] == [1800, 1800, 1800]  # everyone's default
    problem(api.post(f"/v1/admin/experiments/{eid}/end", headers=as_operator()), 422, "EXPERIMENT_ALREADY_ENDED")

    other = api.post("/v1/admin/experiments", json=definition(name="Another"), headers=as_operator()).json()
    ended = api.post(f"/v1/admin/experiments/{other['experiment_id']}/end", json={"reason": "not needed"},
                     headers=as_operator())  # fmt: skip
    assert ended.json()["status"] == "ENDED", ended.text
    problem(api.get("/v1/admin/experiments/nope", headers=as_operator()), 404, "EXPERIMENT_NOT_FOUND")


def test_definitions_are_validated_with_field_names(api: TestClient) -> None:
    def refused(body: dict[str, Any], reason: str = "INVALID_ARGUMENT") -> list[str]:
        answer = problem(api.post("/v1/admin/experiments", json=body, headers=as_operator()), 400, reason)
        return [v["field"] for v in answer["field_violations"]]

    assert refused(definition(sample_size="ten")) == ["sample_size"]
    assert refused(definition(sample_size=2**63)) == ["sample_size"]
    assert refused(definition(colour="red")) == ["colour"]
    interest_without_apr = definition()
    interest_without_apr["variants"][1]["mechanic"].pop("apr_bps")
    assert refused(interest_without_apr) == ["variants[1].mechanic"]
    assert refused(definition(variants=[{"variant_id": "a", "name": "A", "weight": 1, "mechanic": {
        "code": "i", "name": "I", "kind": "INTEREST", "apr_bps": 1000}}]), "CONTROL_VARIANT_REQUIRED")  # fmt: skip
    assert refused(definition(salt=""), "SALT_REQUIRED")
    start = api.post(
        "/v1/admin/experiments/x1/start", json={"start_time": "2026-01-01T00:00:00"}, headers=as_operator()
    )
    assert [v["field"] for v in problem(start, 400, "INVALID_ARGUMENT")["field_violations"]] == ["start_time"]
    rollout = api.post("/v1/admin/experiments/x1/rollout", json={"variant_id": "a"}, headers=as_operator())
    assert [v["field"] for v in problem(rollout, 400, "INVALID_ARGUMENT")["field_violations"]] == ["reason"]


OPERATIONS = [
    ("POST", "/v1/admin/experiments"),
    ("GET", "/v1/admin/experiments"),
    ("GET", "/v1/admin/experiments/x1"),
    ("POST", "/v1/admin/experiments/x1/sample"),
    ("POST", "/v1/admin/experiments/x1/start"),
    ("GET", "/v1/admin/experiments/x1/results"),
    ("POST", "/v1/admin/experiments/x1/rollout"),
    ("POST", "/v1/admin/experiments/x1/end"),
    ("POST", "/v1/admin/customer-features/import"),
    ("GET", "/v1/admin/customers/x1/features"),
]


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_a_customer_token_is_refused(api: TestClient, method: str, path: str) -> None:
    answer = api.request(method, path, headers={**as_customer("cust-1", key()), **CSV}, content=f"{HEADER}\n".encode())
    problem(answer, 403, "OPERATOR_ROLE_REQUIRED")
