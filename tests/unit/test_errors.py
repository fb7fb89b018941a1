"""Domain errors become rich gRPC statuses and come back as the same kind with the same reason."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PeerUnanswered,
    PeerUnavailable,
    from_rpc_error,
    to_status,
)


class _FakeCall(grpc.RpcError, grpc.Call):
    """What a client sees: code, details and the trailing metadata that carries the status."""

    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> Any:
        return tuple(self._status.trailing_metadata)

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> Any:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


reasons = st.from_regex(r"[A-Z][A-Z0-9_]{0,30}[A-Z0-9]", fullmatch=True)
kinds = st.sampled_from([InvalidArgument, NotFound, FailedPrecondition, AlreadyExists])


@given(
    kind=kinds,
    reason=reasons,
    message=st.text(max_size=80),
    meta=st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=10), max_size=3),
)
def test_status_round_trip_keeps_kind_reason_message_and_metadata(
    kind: type[DomainError], reason: str, message: str, meta: dict[str, str]
) -> None:
    error = kind(reason, message, metadata=meta)
    back = from_rpc_error(_FakeCall(to_status(error)))
    assert type(back) is kind
    assert (back.reason, back.message, back.metadata) == (reason, message, meta)


def test_field_violations_travel_as_bad_request() -> None:
    error = InvalidArgument.field("points", "must be positive", "INVALID_POINTS")
    back = from_rpc_error(_FakeCall(to_status(error)))
    assert back.field_violations == (FieldViolation("points", "must be positive"),)
    assert to_status(error).code is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("reason", ["lower_case", "A", "TRAILING_", "WITH SPACE", ""])
def test_reasons_must_be_upper_snake(reason: str) -> None:
    with pytest.raises(ValueError, match="UPPER_SNAKE"):
        FailedPrecondition(reason, "x")


def test_a_status_without_error_info_gets_a_reason_from_its_code() -> None:
    status = grpc.Status()
    status.code, status.details, status.trailing_metadata = grpc.StatusCode.UNAVAILABLE, "connection refused", ()
    back = from_rpc_error(_FakeCall(status))
    assert isinstance(back, PeerUnavailable)
    assert back.reason == "UNAVAILABLE"


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (grpc.StatusCode.INTERNAL, "CANCELLED"),  # the core's report of a stream reset mid-call
        (grpc.StatusCode.CANCELLED, "Channel closed!"),  # the caller's own channel closed under it
        (grpc.StatusCode.UNKNOWN, "Exception calling application: connection lost"),  # died inside
    ],
)
def test_a_bare_cut_or_crash_status_is_unanswered_not_a_refusal(code: grpc.StatusCode, details: str) -> None:
    """Every refusal of this project carries an ErrorInfo; without one these codes say the call
    ended before the peer answered, so a saga must pause and replay, not compensate."""
    status = grpc.Status()
    status.code, status.details, status.trailing_metadata = code, details, ()
    back = from_rpc_error(_FakeCall(status))
    assert type(back) is PeerUnanswered and isinstance(back, PeerUnavailable)
    assert (back.reason, back.message) == (code.name, details)


def test_an_internal_refusal_with_error_info_stays_a_refusal() -> None:
    back = from_rpc_error(_FakeCall(to_status(Internal("LEDGER_BROKEN", "the ledger does not balance"))))
    assert type(back) is Internal and back.reason == "LEDGER_BROKEN"
    again = from_rpc_error(_FakeCall(to_status(PeerUnanswered("INTERNAL", "CANCELLED"))))
    assert type(again) is PeerUnanswered, "an unanswered call relayed by a hop stays unanswered"


def test_a_status_quoting_huge_client_text_stays_small() -> None:
    from shared.errors import InvalidArgument, NotFound, to_status

    huge = "\U0001f600" * 70_000
    status = to_status(NotFound("RULE_NOT_FOUND", f"rule {huge} not found", metadata={"rule_id": huge}))
    headers = dict(status.trailing_metadata)
    assert len(status.details.encode()) < 2048 and len(headers["grpc-status-details-bin"]) < 4096
    many = InvalidArgument("INVALID_ARGUMENT", "bad", field_violations=[FieldViolation(huge, huge)] * 50)
    assert len(dict(to_status(many).trailing_metadata)["grpc-status-details-bin"]) < 8192
