"""Pure wallet rules: card numbers, limits, ledger legs, end-of-day balances, the calendar."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.wallet.domain.balances import end_of_day_balances
from services.wallet.domain.cards import looks_like_card_number, validate_card_token
from services.wallet.domain.ledger import Leg, customer_delta, holds_account, postings_of, wallet_account
from services.wallet.domain.limits import Limits
from shared.calendar import Month, ProgrammeCalendar
from shared.errors import FailedPrecondition, InvalidArgument


@pytest.mark.parametrize(
    "value",
    [
        "4242424242424242",  # Luhn-valid VISA
        "4242424242424241",  # not Luhn-valid: refused all the same
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        "tok_5555555555554444",
        "1234567890123",  # 13 digits
        "1234567890123456789",  # 19 digits
    ],
)
def test_anything_that_looks_like_a_card_number_is_refused_without_echoing_it(value: str) -> None:
    assert looks_like_card_number(value)
    with pytest.raises(InvalidArgument) as raised:
        validate_card_token(value)
    assert raised.value.reason == "CARD_NUMBER_NOT_ALLOWED"
    assert value not in raised.value.message and value not in str(raised.value.field_violations)


@pytest.mark.parametrize("value", ["tok_ok", "tok_timeout", "card_123456789012", "424242424242"])
def test_tokens_and_short_digit_runs_are_accepted(value: str) -> None:
    assert validate_card_token(value) == value


LIMITS = Limits(
    min_top_up_minor=10_000,
    max_top_up_minor=15_000_000,
    daily_top_up_minor=30_000_000,
    max_balance_minor=60_000_000,
    hold_ttl=timedelta(minutes=15),
)


@pytest.mark.parametrize(
    ("amount", "used", "balance", "reason"),
    [
        (9_999, 0, 0, "TOP_UP_BELOW_MINIMUM"),
        (15_000_001, 0, 0, "TOP_UP_LIMIT_EXCEEDED"),
        (10_000_000, 20_000_001, 0, "DAILY_TOP_UP_LIMIT_EXCEEDED"),
        (10_000_000, 0, 50_000_001, "BALANCE_LIMIT_EXCEEDED"),
    ],
)
def test_each_limit_has_its_own_reason(amount: int, used: int, balance: int, reason: str) -> None:
    with pytest.raises(FailedPrecondition) as raised:
        LIMITS.check_top_up(amount, used, balance)
    assert raised.value.reason == reason


def test_allowance_is_the_least_of_the_three_ceilings() -> None:
    assert LIMITS.allowance(0, 0) == 15_000_000
    assert LIMITS.allowance(25_000_000, 0) == 5_000_000
    assert LIMITS.allowance(0, 59_000_000) == 1_000_000
    assert LIMITS.allowance(0, 61_000_000) == 0


accounts = st.sampled_from(["wallet:w", "holds:w", "card-clearing", "merchant"])


@given(st.lists(st.tuples(accounts, accounts, st.integers(min_value=1, max_value=10**12)), min_size=1, max_size=8))
def test_the_postings_of_any_transfer_sum_to_zero(raw: list[tuple[str, str, int]]) -> None:
    legs = [Leg(a, b, n) for a, b, n in raw if a != b]
    if not legs:
        return
    postings = postings_of(legs)
    assert sum(amount for _, amount in postings) == 0
    assert len(postings) == 2 * len(legs)
    moved_between_own_accounts = customer_delta(
        [p for p in postings if p[0] in (wallet_account("w"), holds_account("w"))], "w"
    )
    assert customer_delta(postings, "w") == moved_between_own_accounts


def test_a_leg_moves_a_positive_amount_between_two_accounts() -> None:
    with pytest.raises(ValueError):
        Leg("merchant", "merchant", 1)
    with pytest.raises(ValueError):
        Leg("merchant", "card-clearing", 0)


def test_end_of_day_balances_take_the_last_change_before_each_day_end() -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    day_ends = [t0 + timedelta(days=n) for n in (1, 2, 3)]
    changes = [(t0 + timedelta(hours=1), 500), (t0 + timedelta(hours=2), 300), (t0 + timedelta(days=2, hours=5), 0)]
    assert end_of_day_balances(100, changes, day_ends) == [300, 300, 0]
    assert end_of_day_balances(100, [], day_ends) == [100, 100, 100]


def _end_of_day_balances_by_definition(
    opening: int, changes: list[tuple[datetime, int]], day_ends: list[datetime]
) -> list[int]:
    """Each day end in turn: apply the changes, in booking order, while they are before it."""
    balances, balance, index = [], opening, 0
    for end in day_ends:
        while index < len(changes) and changes[index][0] < end:
            balance = changes[index][1]
            index += 1
        balances.append(balance)
    return balances


_T0 = datetime(2026, 3, 1, tzinfo=UTC)


@given(
    opening=st.integers(min_value=0, max_value=10**9),
    # Minutes from the month's start, a few before it and after it; booking order need not
    # follow time (a transaction can commit after a later-stamped one), and times repeat.
    changes=st.lists(
        st.tuples(st.integers(min_value=-600, max_value=32 * 1440), st.integers(min_value=0, max_value=10**9)),
        max_size=40,
    ),
    days=st.integers(min_value=1, max_value=31),
    end_minute=st.integers(min_value=0, max_value=1439),
)
def test_end_of_day_balances_are_the_day_by_day_definition(
    opening: int, changes: list[tuple[int, int]], days: int, end_minute: int
) -> None:
    day_ends = [_T0 + timedelta(days=day, minutes=end_minute) for day in range(days)]
    timed = [(_T0 + timedelta(minutes=minute), balance) for minute, balance in changes]
    assert end_of_day_balances(opening, timed, day_ends) == _end_of_day_balances_by_definition(opening, timed, day_ends)


def test_a_change_booked_with_an_earlier_time_counts_from_the_day_of_the_one_before_it() -> None:
    day_ends = [_T0 + timedelta(days=n) for n in (1, 2, 3)]
    late_stamp_first = [(_T0 + timedelta(days=1, hours=3), 700), (_T0 + timedelta(hours=5), 200)]
    assert end_of_day_balances(100, late_stamp_first, day_ends) == [100, 200, 200]


def test_months_and_local_days_of_the_programme_calendar() -> None:
    calendar = ProgrammeCalendar("Europe/Moscow")
    assert Month.parse("2026-02").days()[-1] == date(2026, 2, 28)
    assert str(Month(2026, 12).next()) == "2027-01"
    assert calendar.month_start(Month(2026, 2)) == datetime(2026, 1, 31, 21, tzinfo=UTC)
    assert calendar.local_date(datetime(2026, 1, 31, 21, 30, tzinfo=UTC)) == date(2026, 2, 1)
    for bad in ("2026-13", "2026-1", "26-01", "", "2026-00"):
        with pytest.raises(InvalidArgument) as raised:
            Month.parse(bad)
        assert raised.value.reason == "INVALID_MONTH"
