"""The gateway's mapping of service errors to HTTP problems."""

from __future__ import annotations

import json

import grpc
import pytest

from gateway.problems import from_domain_error, status_of
from shared.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PeerDeadlineExceeded,
    PeerUnavailable,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unimplemented,
    from_rpc_error,
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidArgument("INVALID_ARGUMENT", "bad"), 400),
        (Unauthenticated("TOKEN_EXPIRED", "old"), 401),
        (FailedPrecondition("CARD_DECLINED", "declined"), 402),
        (PermissionDenied("OPERATOR_ROLE_REQUIRED", "no"), 403),
        (NotFound("ORDER_NOT_FOUND", "none"), 404),
        (AlreadyExists("IDEMPOTENCY_KEY_REUSED", "again"), 409),
        (Aborted("CONCURRENT_CHANGE", "try again"), 409),
        (FailedPrecondition("INSUFFICIENT_FUNDS", "poor"), 422),
        (ResourceExhausted("RESOURCE_EXHAUSTED", "busy"), 429),
        (Unimplemented("UNIMPLEMENTED", "later"), 501),
        (Internal("INTERNAL", "bug"), 502),
        (PeerUnavailable("UNAVAILABLE", "down"), 503),
        (PeerDeadlineExceeded("DEADLINE_EXCEEDED", "slow"), 503),
        (PeerUnavailable("ACQUIRER_TIMEOUT", "slow bank"), 503),
    ],
)
def test_each_kind_of_error_has_its_status(error: DomainError, status: int) -> None:
    assert status_of(error) == status


def test_the_problem_body_carries_reason_violations_and_metadata() -> None:
    error = InvalidArgument(
        "QUANTITY_NOT_POSITIVE",
        "lines[0].quantity: must be positive",
        field_violations=[FieldViolation("lines[0].quantity", "must be positive")],
        metadata={"sku": "A"},
    )
    response = from_domain_error(error)
    assert response.status_code == 400
    assert response.media_type == "application/problem+json"
    assert json.loads(bytes(response.body)) == {
        "type": "urn:loyalty:problem:QUANTITY_NOT_POSITIVE",
        "title": "Bad request",
        "status": 400,
        "detail": "lines[0].quantity: must be positive",
        "reason": "QUANTITY_NOT_POSITIVE",
        "field_violations": [{"field": "lines[0].quantity", "description": "must be positive"}],
        "metadata": {"sku": "A"},
    }


def test_unauthenticated_answers_carry_www_authenticate_and_overload_retry_after() -> None:
    assert from_domain_error(Unauthenticated("TOKEN_MISSING", "none")).headers["www-authenticate"] == "Bearer"
    assert "invalid_token" in from_domain_error(Unauthenticated("TOKEN_EXPIRED", "old")).headers["www-authenticate"]
    assert from_domain_error(ResourceExhausted("RESOURCE_EXHAUSTED", "busy")).headers["retry-after"] == "1"


class _Call(grpc.RpcError, grpc.Call):
    """A bare status from a foreign server: no ErrorInfo."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "foreign"

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.UNKNOWN, 502),
        (grpc.StatusCode.DATA_LOSS, 502),
        (grpc.StatusCode.OUT_OF_RANGE, 502),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 503),
    ],
)
def test_bare_transport_statuses_are_never_client_errors_or_500(code: grpc.StatusCode, status: int) -> None:
    assert status_of(from_rpc_error(_Call(code))) == status
