from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

import pytest
from hypothesis import given
from hypothesis import strategies as st
from loyalty.points.v1 import points_pb2

from services.points.domain.lots import PointsSource
from shared.errors import InvalidArgument
from shared.protoconv import enum_from_proto, enum_to_proto, from_duration, from_timestamp, method_path, to_timestamp


@given(st.sampled_from(list(PointsSource)))
def test_every_points_source_maps_both_ways(source: PointsSource) -> None:
    value = enum_to_proto(points_pb2.PointsSource, source)
    assert enum_from_proto(points_pb2.PointsSource, value, PointsSource, "source") is source


def test_unspecified_and_unknown_enum_values_are_invalid_arguments() -> None:
    with pytest.raises(InvalidArgument) as unspecified:
        enum_from_proto(points_pb2.PointsSource, 0, PointsSource, "source")
    assert unspecified.value.field_violations[0].field == "source"
    with pytest.raises(InvalidArgument, match="unknown value 999"):
        enum_from_proto(points_pb2.PointsSource, 999, PointsSource, "source")


def test_a_proto_value_the_domain_does_not_know_is_refused() -> None:
    class OnlyPurchase(StrEnum):
        PURCHASE = "PURCHASE"

    with pytest.raises(InvalidArgument, match="must be one of PURCHASE"):
        enum_from_proto(points_pb2.PointsSource, points_pb2.POINTS_SOURCE_SURVEY, OnlyPurchase, "source")


@given(st.sampled_from(list(points_pb2.PointsSource.values())))
def test_each_proto_value_maps_to_the_member_named_after_it(value: points_pb2.PointsSource.ValueType) -> None:
    name = points_pb2.PointsSource.Name(value).removeprefix("POINTS_SOURCE_")
    if name in PointsSource.__members__:
        assert enum_from_proto(points_pb2.PointsSource, value, PointsSource, "source") is PointsSource[name]
        assert enum_to_proto(points_pb2.PointsSource, PointsSource[name]) == value
    else:
        with pytest.raises(InvalidArgument, match="must be one of"):
            enum_from_proto(points_pb2.PointsSource, value, PointsSource, "source")


def test_a_domain_member_the_proto_does_not_know_cannot_be_sent() -> None:
    class Elsewhere(StrEnum):
        MARS = "MARS"

    with pytest.raises(ValueError, match="PointsSource has no value for"):
        enum_to_proto(points_pb2.PointsSource, Elsewhere.MARS)


# hypothesis takes naive bounds and attaches the zone itself
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))  # noqa: DTZ001
def test_timestamps_round_trip_to_the_microsecond(instant: datetime) -> None:
    assert from_timestamp(to_timestamp(instant)) == instant


def test_method_path_is_checked_against_the_descriptor() -> None:
    assert method_path(points_pb2.DESCRIPTOR, "PointsService", "CreditPoints") == (
        "/loyalty.points.v1.PointsService/CreditPoints"
    )
    with pytest.raises(KeyError):
        method_path(points_pb2.DESCRIPTOR, "PointsService", "CreditPoint")


@given(seconds=st.integers(-(2**63), 2**63 - 1), nanos=st.integers(-(2**31), 2**31 - 1))
def test_any_timestamp_on_the_wire_is_an_instant_or_an_invalid_argument(seconds: int, nanos: int) -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    try:
        instant = from_timestamp(Timestamp(seconds=seconds, nanos=nanos), "at")
    except InvalidArgument as error:
        assert (error.reason, error.field_violations[0].field) == ("INVALID_TIMESTAMP", "at")
    else:
        assert instant.tzinfo is UTC


@given(seconds=st.integers(-(2**63), 2**63 - 1), nanos=st.integers(-(2**31), 2**31 - 1))
def test_any_duration_on_the_wire_is_a_timedelta_or_an_invalid_argument(seconds: int, nanos: int) -> None:
    from google.protobuf.duration_pb2 import Duration

    try:
        span = from_duration(Duration(seconds=seconds, nanos=nanos), "ttl")
    except InvalidArgument as error:
        assert (error.reason, error.field_violations[0].field) == ("INVALID_DURATION", "ttl")
    else:
        assert abs(span.total_seconds()) <= 315_576_000_001
