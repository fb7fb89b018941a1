"""Requests carrying a NUL character are refused up front, naming the field; the check first
looks for a zero byte in the wire form and walks the fields only when there is one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from loyalty.points.v1 import points_pb2

from shared.errors import InvalidArgument
from shared.server import _refuse_nul, nul_field

texts = st.text(alphabet=st.sampled_from(["a", "я", "\x00", "0", " ", "\x01"]), max_size=6)
credits = st.builds(
    points_pb2.CreditPointsRequest,
    request_id=texts,
    customer_id=texts,
    points=st.integers(min_value=0, max_value=2**40),
    reference=texts,
    reason=texts,
)
batches = st.builds(points_pb2.BatchCreditPointsRequest, request_id=texts, requests=st.lists(credits, max_size=4))


@given(batches)
def test_a_request_is_refused_exactly_when_one_of_its_strings_holds_a_nul(
    request: points_pb2.BatchCreditPointsRequest,
) -> None:
    strings = [request.request_id] + [
        value for item in request.requests for value in (item.request_id, item.customer_id, item.reference, item.reason)
    ]
    holds_nul = any("\x00" in value for value in strings)
    assert (nul_field(request) is not None) == holds_nul
    if not holds_nul:
        _refuse_nul(request)  # nothing raised
        return
    with pytest.raises(InvalidArgument) as refused:
        _refuse_nul(request)
    assert refused.value.reason == "INVALID_CHARACTERS"
    assert refused.value.field_violations[0].field == nul_field(request)
    assert b"\x00" in request.SerializeToString()  # the fast look never misses one


def test_the_refusal_names_the_nested_field() -> None:
    request = points_pb2.BatchCreditPointsRequest(
        request_id="batch",
        requests=[points_pb2.CreditPointsRequest(request_id="ok"), points_pb2.CreditPointsRequest(reason="bad\x00")],
    )
    with pytest.raises(InvalidArgument) as refused:
        _refuse_nul(request)
    assert refused.value.field_violations[0].field == "requests[1].reason"
