"""JSON <-> protobuf: money as `*_minor` kopecks, enums as their short names, times as RFC 3339,
and the bounded integer types every request model uses (so nothing beyond int64 or int32 ever
reaches a protobuf field)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.common.v1 import mechanic_pb2, money_pb2
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from shared.errors import InvalidArgument
from shared.protoconv import from_timestamp, to_timestamp

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
CURRENCY = "RUB"

# JSON integers only (no strings, floats or booleans), within the protobuf field's range.
PositiveInt64 = Annotated[int, Field(strict=True, gt=0, le=INT64_MAX)]
NonNegativeInt64 = Annotated[int, Field(strict=True, ge=0, le=INT64_MAX)]
NonNegativeInt32 = Annotated[int, Field(strict=True, ge=0, le=INT32_MAX)]
PositiveInt32 = Annotated[int, Field(strict=True, gt=0, le=INT32_MAX)]
Text = Annotated[str, Field(max_length=500)]


def _rfc3339_text(value: Any) -> Any:
    # pydantic would also take a number as Unix seconds; the contract is RFC 3339 text only.
    if not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string with an offset")
    return value


# An instant in a request: RFC 3339 text with an offset (no numbers, no naive times).
Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


def text_fault(value: str) -> str | None:
    """Why a client's string cannot be passed on, or None. NUL characters are refused (PostgreSQL
    cannot store them) and so are lone surrogates (JSON can escape them, UTF-8 and so protobuf
    cannot carry them)."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (no unpaired surrogates)"
    return None


class Body(BaseModel):
    """A request body: unknown fields are refused rather than silently ignored, and every string
    must be text a service can store."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        for item in value if isinstance(value, list) else [value]:
            fault = text_fault(item) if isinstance(item, str) else None
            if fault:
                raise ValueError(fault)
        return value


def money(amount_minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount_minor, currency_code=CURRENCY)


def minor(value: money_pb2.Money) -> int:
    return int(value.amount_minor)


def enum_name(wrapper: Any, value: int, prefix: str) -> str:
    """`PAYMENT_METHOD_WALLET` -> `WALLET`; a value this gateway does not know -> `UNSPECIFIED`."""
    try:
        return str(wrapper.Name(value)).removeprefix(prefix)
    except ValueError:
        return "UNSPECIFIED"


def enum_value(wrapper: Any, name: str, prefix: str) -> Any:
    return wrapper.Value(prefix + name)


def timestamp(value: datetime, field: str) -> Timestamp:
    """An aware datetime as a Timestamp; one protobuf cannot hold is a 400, not a crash."""
    try:
        return to_timestamp(value)
    except (ValueError, OverflowError):  # in UTC it falls outside the years 1..9999
        raise InvalidArgument.field(field, "is outside the supported range of instants", "INVALID_TIME") from None


def instant(message: Any, field: str) -> datetime | None:
    return from_timestamp(getattr(message, field)) if message.HasField(field) else None


def days(count: int) -> Duration:
    return Duration(seconds=count * 86400)


def whole_days(message: Any, field: str) -> int | None:
    return int(getattr(message, field).seconds // 86400) if message.HasField(field) else None


class CashbackTierOut(BaseModel):
    min_balance_minor: int
    rate_bps: int


class MechanicOut(BaseModel):
    """How money kept in the wallet earns points."""

    code: str
    name: str
    kind: str = Field(description="INTEREST, CASHBACK, or NONE when the service sent none.")
    apr_bps: int | None = None
    basis: str | None = Field(None, description="AVERAGE_DAILY or MINIMUM_DAILY, for INTEREST.")
    cashback_tiers: list[CashbackTierOut] = Field(default_factory=list)
    monthly_cap_points: int | None = None


def mechanic_out(value: mechanic_pb2.Mechanic) -> MechanicOut:
    kind = value.WhichOneof("kind")
    if kind == "interest":
        return MechanicOut(
            code=value.code,
            name=value.name,
            kind="INTEREST",
            apr_bps=value.interest.apr_bps,
            basis=enum_name(mechanic_pb2.BalanceBasis, value.interest.basis, "BALANCE_BASIS_"),
        )
    if kind == "cashback":
        return MechanicOut(
            code=value.code,
            name=value.name,
            kind="CASHBACK",
            cashback_tiers=[
                CashbackTierOut(min_balance_minor=t.min_balance_minor, rate_bps=t.rate_bps)
                for t in value.cashback.tiers
            ],
            monthly_cap_points=value.cashback.monthly_cap_points,
        )
    return MechanicOut(code=value.code, name=value.name, kind="NONE")


class Page(BaseModel):
    next_page_token: str = Field(description="Pass as page_token for the next page; empty on the last page.")
