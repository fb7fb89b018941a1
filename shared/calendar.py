"""The programme's calendar: calendar days and months in one configured time zone.

Daily limits, end-of-day balances and monthly jobs count days and months in the programme's time
zone (configured per service, Moscow by default), while every stored instant stays UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.errors import InvalidArgument
from shared.settings import SettingsError

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month, "YYYY-MM"."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str, *, field: str = "month", reason: str = "INVALID_MONTH") -> Month:
        match = _MONTH.match(text.strip())
        if match is None or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1970:
            raise InvalidArgument.field(field, f"must be a calendar month YYYY-MM, got {text!r}", reason)
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def of(cls, day: date) -> Month:
        return cls(day.year, day.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    def next(self) -> Month:
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    def previous(self) -> Month:
        return Month(self.year - 1, 12) if self.month == 1 else Month(self.year, self.month - 1)

    def days(self) -> list[date]:
        first, following = self.first_day, self.next().first_day
        return [first + timedelta(days=n) for n in range((following - first).days)]


class ProgrammeCalendar:
    """Local days and months of the programme, as UTC instants."""

    def __init__(self, time_zone: str, *, setting: str = "the time zone") -> None:
        try:
            self.zone = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(f"{setting} must be an IANA time zone, got {time_zone!r}") from None

    def local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def start_of_day(self, day: date) -> datetime:
        """The UTC instant at which the local `day` begins."""
        return datetime.combine(day, time(0), tzinfo=self.zone).astimezone(UTC)

    def end_of_day(self, day: date) -> datetime:
        """The UTC instant at which the local `day` ends (the next one begins)."""
        return self.start_of_day(day + timedelta(days=1))

    def month_start(self, month: Month) -> datetime:
        return self.start_of_day(month.first_day)

    def month_end(self, month: Month) -> datetime:
        return self.month_start(month.next())

    def month_of(self, instant: datetime) -> Month:
        return Month.of(self.local_date(instant))

    def days_between(self, start: datetime, end: datetime) -> Iterator[date]:
        """The local days that [start, end) touches."""
        day, last = self.local_date(start), self.local_date(end - timedelta(microseconds=1))
        while day <= last:
            yield day
            day += timedelta(days=1)
