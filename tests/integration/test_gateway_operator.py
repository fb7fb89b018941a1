"""Operator endpoints of the gateway through HTTP against the real services: points adjustments,
profile actions, earning rules, campaigns, promo codes and the jobs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from shared.clock import ManualClock
from tests.clients import PointsClient, eventually
from tests.harness import RunningService
from tests.integration.gateway_support import as_customer, as_operator, customer_id, gateway_client, key, problem


@pytest.fixture
def api(platform: dict[str, RunningService]) -> Iterator[TestClient]:
    with gateway_client(platform) as client:
        yield client


def available(api: TestClient, customer: str) -> int:
    value: int = api.get("/v1/points", headers=as_customer(customer)).json()["available"]
    return value


def test_points_adjustment_is_credited_audited_and_idempotent(api: TestClient) -> None:
    cust = customer_id()
    path = f"/v1/admin/customers/{cust}/points-adjustments"
    body = {"points": 250, "reason": "goodwill for a late delivery"}
    answer = api.post(path, json=body, headers=as_operator("op-anna", "adj-1"))
    assert answer.status_code == 201, answer.text
    lot = answer.json()
    assert (lot["points"], lot["source"], lot["status"], lot["operator_id"], lot["reason"]) == (
        250,
        "MANUAL_ADJUSTMENT",
        "AVAILABLE",
        "op-anna",
        "goodwill for a late delivery",
    )
    assert api.post(path, json=body, headers=as_operator("op-anna", "adj-1")).json() == lot  # replay
    assert available(api, cust) == 250
    history = api.get("/v1/points/history", headers=as_customer(cust)).json()["entries"]
    assert [(e["source"], e["available_delta"]) for e in history] == [("MANUAL_ADJUSTMENT", 250)]

    problem(api.post(path, json={"points": 0, "reason": "x"}, headers=as_operator(key=key())), 400, "INVALID_ARGUMENT")
    problem(api.post(path, json={"points": 5, "reason": ""}, headers=as_operator(key=key())), 400, "INVALID_ARGUMENT")
    problem(api.post(path, json=body, headers=as_operator()), 400, "IDEMPOTENCY_KEY_REQUIRED")
    problem(
        api.post(f"/v1/admin/customers/{'x' * 65}/points-adjustments", json=body, headers=as_operator(key=key())),
        400,
        "INVALID_ARGUMENT",
    )
    assert available(api, cust) == 250


def test_profile_actions_pay_once(api: TestClient) -> None:
    cust = customer_id()
    path = f"/v1/admin/customers/{cust}/profile-actions"
    first = api.post(path, json={"action": "PHOTO_ADDED"}, headers=as_operator(key=key()))
    assert first.json() == {"points_awarded": 50, "already_rewarded": False}, first.text
    again = api.post(path, json={"action": "PHOTO_ADDED"}, headers=as_operator(key=key()))
    assert again.json() == {"points_awarded": 0, "already_rewarded": True}
    survey = api.post(
        path, json={"action": "SURVEY_COMPLETED", "survey_id": "nps-2026"}, headers=as_operator(key=key())
    )
    assert survey.json()["points_awarded"] == 100
    problem(
        api.post(path, json={"action": "SURVEY_COMPLETED"}, headers=as_operator(key=key())), 400, "SURVEY_ID_REQUIRED"
    )
    problem(api.post(path, json={"action": "DANCED"}, headers=as_operator(key=key())), 400, "INVALID_ARGUMENT")
    assert eventually(lambda: available(api, cust) == 150)


def test_earning_rules_create_list_end(api: TestClient) -> None:
    created = api.post(
        "/v1/admin/earning-rules",
        json={"name": "Electronics 3 %", "type": "CATEGORY_RATE", "category": "electronics", "rate_bps": 300},
        headers=as_operator(),
    )
    assert created.status_code == 201, created.text
    rule = created.json()
    assert (rule["type"], rule["category"], rule["rate_bps"], rule["status"]) == (
        "CATEGORY_RATE",
        "electronics",
        300,
        "ACTIVE",
    )
    listed = api.get("/v1/admin/earning-rules?status=ACTIVE", headers=as_operator()).json()
    assert rule["rule_id"] in [r["rule_id"] for r in listed["rules"]]
    ended = api.post(f"/v1/admin/earning-rules/{rule['rule_id']}/end", headers=as_operator())
    assert ended.json()["status"] == "ENDED", ended.text
    problem(
        api.post(f"/v1/admin/earning-rules/{rule['rule_id']}/end", headers=as_operator()), 422, "EARNING_RULE_ENDED"
    )
    problem(api.post("/v1/admin/earning-rules/nope/end", headers=as_operator()), 404, "EARNING_RULE_NOT_FOUND")
    problem(
        api.post(
            "/v1/admin/earning-rules",
            json={"name": "bad", "type": "CATEGORY_RATE", "category": "", "rate_bps": 100},
            headers=as_operator(),
        ),
        400,
        "CATEGORY_REQUIRED",
    )
    problem(
        api.post("/v1/admin/earning-rules", json={"name": "x", "type": "GOLD", "rate_bps": 1}, headers=as_operator()),
        400,
        "INVALID_ARGUMENT",
    )
    problem(api.get("/v1/admin/earning-rules?status=SLEEPING", headers=as_operator()), 400, "INVALID_ARGUMENT")


def test_campaigns_create_list_end(api: TestClient, clock: ManualClock) -> None:
    start, end = clock.now(), clock.now() + timedelta(days=30)
    body = {
        "name": "Double points on books",
        "start_time": start.isoformat(),
        "end_time": end.isoformat(),
        "categories": ["books"],
        "multiplier_bps": 20000,
        "budget_points": 10000,
        "customer_ids": ["c-1", "c-2"],
        "points_lifetime_days": 60,
    }
    created = api.post("/v1/admin/campaigns", json=body, headers=as_operator(key="camp-1"))
    assert created.status_code == 201, created.text
    campaign = created.json()
    assert (campaign["multiplier_bps"], campaign["bonus_points"], campaign["budget_points"]) == (20000, None, 10000)
    assert (campaign["customer_ids"], campaign["points_lifetime_days"], campaign["status"]) == (
        ["c-1", "c-2"],
        60,
        "ACTIVE",
    )
    assert api.post("/v1/admin/campaigns", json=body, headers=as_operator(key="camp-1")).json() == campaign
    listed = api.get("/v1/admin/campaigns", headers=as_operator()).json()["campaigns"]
    assert [c["campaign_id"] for c in listed] == [campaign["campaign_id"]]
    ended = api.post(f"/v1/admin/campaigns/{campaign['campaign_id']}/end", json={}, headers=as_operator())
    assert ended.json()["status"] == "ENDED", ended.text

    both = {**body, "bonus_points": 100}
    problem(api.post("/v1/admin/campaigns", json=both, headers=as_operator()), 400, "INVALID_ARGUMENT")
    neither = {k: v for k, v in body.items() if k != "multiplier_bps"}
    problem(api.post("/v1/admin/campaigns", json=neither, headers=as_operator()), 400, "REWARD_REQUIRED")
    backwards = {**body, "end_time": (start - timedelta(days=1)).isoformat()}
    problem(api.post("/v1/admin/campaigns", json=backwards, headers=as_operator()), 400, "WINDOW_ENDS_BEFORE_START")
    naive = {**body, "start_time": "2026-01-01T00:00:00"}
    problem(api.post("/v1/admin/campaigns", json=naive, headers=as_operator()), 400, "INVALID_ARGUMENT")
    for edge in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):  # beyond what protobuf holds
        beyond = {**body, "start_time": edge}
        answer = problem(api.post("/v1/admin/campaigns", json=beyond, headers=as_operator()), 400, "INVALID_TIME")
        assert answer["field_violations"][0]["field"] == "start_time"


def test_promo_codes_create_list_end(api: TestClient, clock: ManualClock) -> None:
    body = {
        "code": "spring26",
        "fixed_points": 300,
        "start_time": clock.now().isoformat(),
        "end_time": (clock.now() + timedelta(days=10)).isoformat(),
        "per_customer_limit": 1,
        "usage_limit": 1000,
        "budget_points": 300000,
    }
    created = api.post("/v1/admin/promo-codes", json=body, headers=as_operator())
    assert created.status_code == 201, created.text
    code = created.json()
    assert (code["code"], code["fixed_points"], code["percent_bps"], code["status"]) == (
        "SPRING26",
        300,
        None,
        "ACTIVE",
    )
    problem(api.post("/v1/admin/promo-codes", json=body, headers=as_operator()), 409, "PROMO_CODE_EXISTS")
    listed = api.get("/v1/admin/promo-codes?page_size=10", headers=as_operator()).json()
    assert [p["code"] for p in listed["promo_codes"]] == ["SPRING26"]
    ended = api.post("/v1/admin/promo-codes/spring26/end", headers=as_operator())
    assert ended.json()["status"] == "ENDED", ended.text
    problem(api.post("/v1/admin/promo-codes/NOPE/end", headers=as_operator()), 404, "PROMO_CODE_NOT_FOUND")


def test_post_monthly_interest_job(api: TestClient, clock: ManualClock) -> None:
    cust = customer_id()
    top_up = api.post(
        "/v1/wallet/top-ups",
        json={"amount_minor": 5_000_000, "card_token": "tok_ok"},
        headers=as_customer(cust, key()),
    )
    assert top_up.status_code == 201
    path = "/v1/admin/jobs/post-monthly-interest"
    problem(api.post(path, json={"month": "2026-01"}, headers=as_operator(key=key())), 422, "MONTH_NOT_ENDED")
    clock.advance(timedelta(days=32))
    run = api.post(path, json={"month": "2026-01"}, headers=as_operator(key="interest-2026-01"))
    assert run.json() == {
        "month": "2026-01",
        "wallets_posted": 1,
        "wallets_already_posted": 0,
        "wallets_not_on_interest": 0,
        "points_posted": 500,
    }, run.text
    assert api.post(path, json={"month": "2026-01"}, headers=as_operator(key="interest-2026-01")).json() == run.json()
    assert (
        api.post(path, json={"month": "2026-01"}, headers=as_operator(key=key())).json()["wallets_already_posted"] == 1
    )
    assert eventually(lambda: available(api, cust) == 500)
    problem(api.post(path, json={"month": "January"}, headers=as_operator(key=key())), 400, "INVALID_ARGUMENT")
    problem(api.post(path, json={}, headers=as_operator(key=key())), 400, "INVALID_ARGUMENT")


def test_points_jobs(api: TestClient, platform: dict[str, RunningService], clock: ManualClock) -> None:
    # One customer per job: any job settles everything due for the customers it touches.
    expiring, pending, holding = customer_id(), customer_id(), customer_id()
    points = PointsClient(platform["points"].channel())
    points.credit(expiring, 100, expires_at=clock.now() + timedelta(days=1))
    points.credit(pending, 40, "PURCHASE", reference="order-1", pending=True)
    points.activate(pending, "order-1", at=clock.now() + timedelta(days=3))
    points.credit(holding, 70)
    points.hold(holding, 70, "order-2", ttl=timedelta(hours=1))
    clock.advance(timedelta(days=4))

    activated = api.post("/v1/admin/jobs/activate-pending", headers=as_operator(key=key()))
    assert activated.json() == {"lots_activated": 1, "points_activated": 40}, activated.text
    expired = api.post("/v1/admin/jobs/expire-points", headers=as_operator(key=key()))
    assert expired.json() == {"lots_expired": 1, "points_expired": 100}, expired.text
    released = api.post("/v1/admin/jobs/release-expired-holds", headers=as_operator(key=key()))
    assert released.json() == {
        "wallet_holds_released": 0,
        "money_released_minor": 0,
        "points_holds_released": 1,
        "points_released": 70,
        "promo_code_reservations_released": 0,
    }, released.text
    assert [available(api, c) for c in (expiring, pending, holding)] == [0, 40, 70]
    problem(api.post("/v1/admin/jobs/expire-points", headers=as_operator()), 400, "IDEMPOTENCY_KEY_REQUIRED")
    problem(api.post("/v1/admin/jobs/defragment-disk", headers=as_operator(key=key())), 404, "ROUTE_NOT_FOUND")
