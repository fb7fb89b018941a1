"""Errors as `application/problem+json` (RFC 9457) with the service's reason.

Every error the gateway answers goes through here: a `DomainError` (raised by a service and
rebuilt by `shared.errors.from_rpc_error`, or raised by the gateway itself for authentication,
authorisation and validation), a request FastAPI could not parse or validate, and an unknown
route or method. Only a bug in the gateway itself can still give a 500.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.errors import DomainError, FieldViolation

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

_STATUS_BY_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 422,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
}
# Reasons whose HTTP status is not the one of their gRPC code.
_STATUS_BY_REASON = {"CARD_DECLINED": 402}
# A backend failing in a way that is not the client's doing (INTERNAL, UNKNOWN, DATA_LOSS).
BAD_GATEWAY = 502

_TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    402: "Payment declined",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Refused",
    429: "Too many requests",
    501: "Not implemented",
    502: "Bad gateway",
    503: "Service unavailable",
}


class Violation(BaseModel):
    field: str
    description: str


class Problem(BaseModel):
    """An error (RFC 9457 problem details) with the machine-readable reason."""

    type: str = Field(description="URI naming the problem type: `urn:loyalty:problem:<REASON>`.")
    title: str
    status: int
    detail: str
    reason: str = Field(description="UPPER_SNAKE reason, e.g. INSUFFICIENT_FUNDS, TOKEN_EXPIRED, INVALID_ARGUMENT.")
    field_violations: list[Violation] = Field(default_factory=list)
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Extra facts, e.g. the order_id of a failed order."
    )


def status_of(error: DomainError) -> int:
    return _STATUS_BY_REASON.get(error.reason) or _STATUS_BY_CODE.get(error.code, BAD_GATEWAY)


def problem_response(
    status: int,
    reason: str,
    detail: str,
    *,
    violations: tuple[FieldViolation, ...] | list[FieldViolation] = (),
    metadata: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=f"urn:loyalty:problem:{reason}",
        title=_TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        reason=reason,
        field_violations=[Violation(field=v.field, description=v.description) for v in violations],
        metadata=metadata or {},
    )
    return JSONResponse(body.model_dump(), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def from_domain_error(error: DomainError) -> JSONResponse:
    status = status_of(error)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"' if error.reason != "TOKEN_MISSING" else "Bearer"
    if status in (429, 503):
        headers["Retry-After"] = error.metadata.get("retry_after_seconds", "1") if status == 429 else "1"
    if status == BAD_GATEWAY:
        log.error("backend failed", extra={"reason": error.reason, "detail": error.message})
    return problem_response(
        status, error.reason, error.message, violations=error.field_violations, metadata=error.metadata, headers=headers
    )


def _field_of(location: tuple[Any, ...]) -> str:
    """`("body", "lines", 0, "quantity")` -> `lines[0].quantity`; header and query names as sent."""
    parts = list(location[1:]) if location and location[0] in ("body", "query", "path", "header") else list(location)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or str(location[0] if location else "body")


def from_validation_error(error: RequestValidationError) -> JSONResponse:
    errors = list(error.errors())
    violations = [FieldViolation(_field_of(tuple(e.get("loc", ()))), str(e.get("msg", "is not valid"))) for e in errors]
    reason = "INVALID_ARGUMENT"
    for e in errors:
        location = tuple(e.get("loc", ()))
        if e.get("type") == "json_invalid":
            reason = "MALFORMED_JSON"
        elif location[:2] == ("header", "Idempotency-Key") and e.get("type") == "missing":
            reason = "IDEMPOTENCY_KEY_REQUIRED"
    detail = "; ".join(f"{v.field}: {v.description}" for v in violations) or "the request is not valid"
    return problem_response(400, reason, detail, violations=violations)


def install(app: FastAPI) -> None:
    async def on_domain_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, DomainError)
        return from_domain_error(error)

    async def on_validation_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return from_validation_error(error)

    async def on_http_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        reason = {404: "ROUTE_NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "BODY_TOO_LARGE"}.get(
            error.status_code, "HTTP_ERROR"
        )
        return problem_response(error.status_code, reason, str(error.detail), headers=dict(error.headers or {}))

    app.add_exception_handler(DomainError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)


def _documented(status: int, description: str) -> dict[str, Any]:
    return {
        "model": Problem,
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


# Documented on every operation (FastAPI then adds no HTTPValidationError 422 of its own).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented(400, "Malformed or invalid request (reason INVALID_ARGUMENT, MALFORMED_JSON, ...)"),
    401: _documented(401, "No, expired, unsigned or wrongly signed bearer token"),
    403: _documented(403, "The token lacks the role this endpoint needs"),
    404: _documented(404, "Not found (or not the caller's)"),
    409: _documented(409, "Idempotency-Key reused with another request, or the thing already exists"),
    422: _documented(422, "Refused by a business rule; `reason` says which"),
    413: _documented(413, "The request body is over the gateway's limit (BODY_TOO_LARGE)"),
    429: _documented(
        429, "Too many requests from this caller (RATE_LIMITED) or a backend is overloaded; see Retry-After"
    ),
    501: _documented(501, "The backend does not implement this yet"),
    502: _documented(502, "A backend failed"),
    503: _documented(503, "A backend is unavailable or timed out; retry with the same Idempotency-Key"),
}
PAYMENT_RESPONSES: dict[int | str, dict[str, Any]] = {402: _documented(402, "The card was declined (CARD_DECLINED)")}
