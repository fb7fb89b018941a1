"""Row ids are version 7 UUIDs whose text sorts as their time does (shared/ids.py)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ids import ids_of, new_id, new_ids, unix_ms_of, uuid7, uuid7_text

millis = st.integers(min_value=0, max_value=(1 << 48) - 1)
randoms = st.integers(min_value=0, max_value=(1 << 80) - 1)


@given(ms=millis, bits=randoms)
def test_an_id_is_a_version_7_rfc_uuid_of_its_millisecond(ms: int, bits: int) -> None:
    made = uuid7(ms, bits)
    assert (made.version, made.variant) == (7, uuid.RFC_4122)
    text = str(made)
    assert len(text) == 36 and text == text.lower() and uuid.UUID(text) == made
    assert unix_ms_of(text) == ms
    assert uuid7_text(ms, bits) == text  # the text new_id gives, formatted without the UUID


@given(first=millis, second=millis, bits_first=randoms, bits_second=randoms)
def test_ids_of_different_milliseconds_sort_as_their_times_whatever_their_random_bits(
    first: int, second: int, bits_first: int, bits_second: int
) -> None:
    a, b = str(uuid7(first, bits_first)), str(uuid7(second, bits_second))
    if first != second:
        assert (a < b) == (first < second)


@given(ms=millis, bits=randoms, other=randoms)
def test_ids_of_one_millisecond_differ_exactly_when_their_random_bits_do(ms: int, bits: int, other: int) -> None:
    used = (1 << 74) - 1  # 12 bits after the version, 62 after the variant
    assert (uuid7(ms, bits) == uuid7(ms, other)) == (bits & used == other & used)


def test_new_ids_are_unique_and_now() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert unix_ms_of(ids[0]) <= unix_ms_of(ids[-1])


@given(ms=millis, pool=st.lists(randoms, max_size=20))
def test_ids_made_for_a_batch_are_those_uuid7_text_gives_for_their_bits(ms: int, pool: list[int]) -> None:
    drawn = b"".join(bits.to_bytes(10, "big") for bits in pool)
    assert ids_of(ms, drawn) == [uuid7_text(ms, bits) for bits in pool]


def test_a_batch_of_new_ids_is_unique_and_of_now() -> None:
    before = unix_ms_of(new_id())
    ids = new_ids(10_000)
    assert len(ids) == len(set(ids)) == 10_000
    assert {unix_ms_of(made) for made in ids} == {unix_ms_of(ids[0])} and unix_ms_of(ids[0]) >= before
    assert all(uuid.UUID(made).version == 7 and str(uuid.UUID(made)) == made for made in ids)
    assert new_ids(0) == []


@pytest.mark.parametrize("ms", [-1, 1 << 48])
def test_a_time_outside_48_bits_is_refused(ms: int) -> None:
    with pytest.raises(ValueError, match="48-bit"):
        uuid7(ms)
