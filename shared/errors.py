"""Domain errors and their gRPC form.

A service raises a `DomainError` (or one of its kinds) anywhere below the entry point; the
server interceptor turns it into a canonical status code with a `google.rpc.ErrorInfo` whose
`reason` is UPPER_SNAKE, plus `BadRequest` field violations for invalid arguments. On the calling
side `from_rpc_error` turns the status back into the same kind of `DomainError`, so a reason
crosses any number of hops intact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "loyalty.marketplace"

_REASON = re.compile(r"^[A-Z][A-Z0-9_]{0,62}[A-Z0-9]$")


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """A business-level failure with a stable, machine-readable reason."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        domain: str = ERROR_DOMAIN,
    ) -> None:
        if not _REASON.match(reason):
            raise ValueError(f"error reason must be UPPER_SNAKE, got {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.field_violations = tuple(field_violations)
        self.domain = domain

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.message!r})"


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    @classmethod
    def field(cls, field: str, description: str, reason: str = "INVALID_ARGUMENT") -> InvalidArgument:
        return cls(reason, f"{field}: {description}", field_violations=[FieldViolation(field, description)])


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Aborted(DomainError):
    code = grpc.StatusCode.ABORTED


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Unimplemented(DomainError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(DomainError):
    code = grpc.StatusCode.INTERNAL


class PeerUnavailable(DomainError):
    """A transport failure talking to a peer (UNAVAILABLE or DEADLINE_EXCEEDED): the effect may
    or may not have happened, so only an idempotent retry is safe."""

    code = grpc.StatusCode.UNAVAILABLE


class PeerDeadlineExceeded(PeerUnavailable):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class PeerUnanswered(PeerUnavailable):
    """The call ended without an answer of the peer's: the stream was cut (CANCELLED, or INTERNAL
    with no ErrorInfo, which is how the gRPC core reports a stream reset while the peer stops),
    or the peer's handler failed before it could answer (UNKNOWN: an unhandled exception, a
    database connection lost at commit). Every refusal of this project's services carries an
    ErrorInfo, so a bare status of these codes is not a refusal: the effect may or may not have
    happened, and only an idempotent replay tells. Not retried by `Peers.call` (like a missed
    deadline); a saga pauses on it instead of compensating, as the outbox relay retries it."""

    code = grpc.StatusCode.UNKNOWN


_KIND_BY_CODE: dict[grpc.StatusCode, type[DomainError]] = {
    kind.code: kind
    for kind in (
        InvalidArgument,
        NotFound,
        FailedPrecondition,
        AlreadyExists,
        Aborted,
        ResourceExhausted,
        PermissionDenied,
        Unauthenticated,
        Unimplemented,
        Internal,
        PeerUnavailable,
        PeerDeadlineExceeded,
        PeerUnanswered,
    )
}
# Codes that, arriving without an ErrorInfo, mean the call was cut or failed before an answer.
_UNANSWERED = frozenset({grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})


# The status travels in response headers, which clients cap (grpc's default is 8 KiB in all), and
# a refusal often quotes what the client sent: a 70,000-character id must not turn a clean
# NOT_FOUND into a transport error. So quoted text is clipped (in UTF-8 bytes).
MAX_MESSAGE_BYTES = 512
MAX_METADATA_BYTES = 128
MAX_VIOLATIONS = 5


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, on a character boundary, marked with an ellipsis."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "…"


def to_status(error: DomainError) -> grpc.Status:
    """The rich gRPC status for a domain error: code, message, ErrorInfo and field violations."""
    metadata = {clip(key, MAX_METADATA_BYTES): clip(value, MAX_METADATA_BYTES) for key, value in error.metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=error.domain, metadata=metadata)
    status = status_pb2.Status(code=error.code.value[0], message=clip(error.message, MAX_MESSAGE_BYTES))
    status.details.add().Pack(info)
    if error.field_violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=clip(v.field, MAX_METADATA_BYTES), description=clip(v.description, 2 * MAX_METADATA_BYTES)
                )
                for v in error.field_violations[:MAX_VIOLATIONS]
            ]
        )
        status.details.add().Pack(bad_request)
    rich: grpc.Status = rpc_status.to_status(status)
    return rich


def from_rpc_error(error: grpc.RpcError) -> DomainError:
    """Rebuild the domain error a peer raised; transport failures become `PeerUnavailable`."""
    call = error if isinstance(error, grpc.Call) else None
    code = call.code() if call is not None else grpc.StatusCode.UNKNOWN
    details = call.details() if call is not None else None
    message = details if details is not None else str(error)
    reason, domain = _default_reason(code), ERROR_DOMAIN
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    answered = False  # an ErrorInfo came with the status: the peer itself decided
    status = rpc_status.from_call(call) if call is not None else None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
                answered = True
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(FieldViolation(v.field, v.description) for v in bad_request.field_violations)
    if not answered and code in _UNANSWERED:
        return PeerUnanswered(reason, message, metadata=metadata, field_violations=violations, domain=domain)
    kind = _KIND_BY_CODE.get(code, Internal)
    return kind(reason, message, metadata=metadata, field_violations=violations, domain=domain)


def _default_reason(code: grpc.StatusCode) -> str:
    """A reason for statuses that came without ErrorInfo (transport errors, foreign servers)."""
    return code.name if code.name != "OK" else "UNKNOWN"


# Keep google.rpc.Code and grpc.StatusCode in step: grpc_status checks the integer code.
assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == code_pb2.INVALID_ARGUMENT


def status_code_of(context: Any) -> grpc.StatusCode | None:
    """The status code a servicer context holds (set by `abort`, `abort_with_status` or
    `set_code`), or None when it holds none or cannot say (the typing stubs and grpc_testing's
    contexts do not offer `code()`)."""
    code = getattr(context, "code", None)
    if not callable(code):
        return None
    try:
        value = code()
    except Exception:
        return None
    return value if isinstance(value, grpc.StatusCode) else None
