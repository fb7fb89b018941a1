"""Money limits of the wallet, each refused with its own reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from shared.errors import FailedPrecondition


@dataclass(frozen=True)
class Limits:
    min_top_up_minor: int
    max_top_up_minor: int
    daily_top_up_minor: int
    max_balance_minor: int
    hold_ttl: timedelta

    def __post_init__(self) -> None:
        if not 0 < self.min_top_up_minor <= self.max_top_up_minor:
            raise ValueError("the minimum top-up must be positive and not above the maximum")

    def allowance(self, used_today_minor: int, balance_minor: int) -> int:
        """What can still be topped up now: the least of the three ceilings, never negative."""
        return max(
            0,
            min(
                self.max_top_up_minor,
                self.daily_top_up_minor - used_today_minor,
                self.max_balance_minor - balance_minor,
            ),
        )

    def check_top_up(self, amount_minor: int, used_today_minor: int, balance_minor: int) -> None:
        """`used_today_minor` counts pending top-ups and `balance_minor` adds them too: a pending
        top-up may still succeed."""
        details = {"amount_minor": str(amount_minor)}
        if amount_minor < self.min_top_up_minor:
            raise FailedPrecondition(
                "TOP_UP_BELOW_MINIMUM",
                f"a top-up is at least {self.min_top_up_minor} kopecks",
                metadata={**details, "min_top_up_minor": str(self.min_top_up_minor)},
            )
        if amount_minor > self.max_top_up_minor:
            raise FailedPrecondition(
                "TOP_UP_LIMIT_EXCEEDED",
                f"a top-up is at most {self.max_top_up_minor} kopecks",
                metadata={**details, "max_top_up_minor": str(self.max_top_up_minor)},
            )
        if used_today_minor + amount_minor > self.daily_top_up_minor:
            raise FailedPrecondition(
                "DAILY_TOP_UP_LIMIT_EXCEEDED",
                f"top-ups today would exceed {self.daily_top_up_minor} kopecks",
                metadata={
                    **details,
                    "daily_top_up_limit_minor": str(self.daily_top_up_minor),
                    "used_today_minor": str(used_today_minor),
                },
            )
        if balance_minor + amount_minor > self.max_balance_minor:
            raise FailedPrecondition(
                "BALANCE_LIMIT_EXCEEDED",
                f"the balance would exceed {self.max_balance_minor} kopecks",
                metadata={**details, "max_balance_minor": str(self.max_balance_minor)},
            )
