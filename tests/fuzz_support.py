"""Hypothesis strategies for any protobuf message, built from its descriptor, and a cheap
fingerprint of a service database.

`Messages(known).of(descriptor, plausible=...)` walks the message's fields and draws every kind of value a
client could send: integers at and beyond their type's limits (negative, zero, huge), strings that
are empty, very long, astral, right-to-left, combining or carrying a NUL, enums with numbers the
contract does not know, repeated fields empty or long, nested messages, oneofs, Timestamps and
Durations far outside what protobuf allows, Money in the wrong currency, FieldMasks naming fields
that do not exist. To reach past validation, an id field (`customer_id`, `order_id`, `sku`,
`hold_id`, ...) is drawn most of the time from `Known`, the ids that exist on the platform under
test (seeded, and grown from every answer by `Known.harvest`), and `request_id` is usually fresh.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st
from sqlalchemy import Boolean, Integer, String, Text, func, literal, select, union_all
from sqlalchemy.engine import Engine
from sqlalchemy.schema import MetaData, Table

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

# The valid range of google.protobuf.Timestamp seconds (0001-01-01 .. 9999-12-31) and of Duration.
TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
DURATION_SECONDS = 315_576_000_000

# Text nobody means but anyone can send.
NASTY_TEXT = [
    "",
    " ",
    "\t\n",
    "\x00",
    "a\x00b",
    "😀" * 3,  # astral plane
    "\U0001d518\U0001d52b\U0001d526",  # mathematical fraktur
    "\u202eevil\u202c",  # right-to-left override
    "עברית",
    "مرحبا",
    "e\u0301\u0301\u0301",  # combining marks
    "\ufeffbom",
    "\ud7ff\ue000\uffff",
    "Ω≈ç√∫",
    "Robert'); DROP TABLE orders;--",
    "%s%n{0}",
    "../../etc/passwd",
    "x" * 129,
    "y" * 4096,
    "z" * 70_000,  # very long
]

# Field name -> the attribute of `Known` that holds existing values for it.
KNOWN_FIELDS = {
    "customer_id": "customers",
    "customer_ids": "customers",
    "wallet_id": "wallets",
    "hold_id": "holds",
    "top_up_id": "top_ups",
    "order_id": "orders",
    "sku": "skus",
    "category": "categories",
    "categories": "categories",
    "campaign_id": "campaigns",
    "rule_id": "rules",
    "code": "codes",
    "promo_code": "codes",
    "reservation_id": "reservations",
    "experiment_id": "experiments",
    "variant_id": "variants",
    "rolled_out_variant_id": "variants",
    "card_token": "card_tokens",
    "month": "months",
    "start_month": "months",
    "currency_code": "currencies",
    "line_id": "skus",
    "survey_id": "surveys",
}


@dataclass
class Known:
    """Values that exist on the platform under test, so generated requests reach deep code."""

    customers: list[str] = field(default_factory=list)
    wallets: list[str] = field(default_factory=list)
    holds: list[str] = field(default_factory=list)
    top_ups: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    skus: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    campaigns: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    reservations: list[str] = field(default_factory=list)
    experiments: list[str] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)
    card_tokens: list[str] = field(default_factory=lambda: ["tok_ok", "tok_mastercard", "tok_declined"])
    months: list[str] = field(default_factory=lambda: ["2026-01", "2026-02", "2025-12", "2026-13", "0000-00"])
    currencies: list[str] = field(default_factory=lambda: ["RUB", "RUB", "RUB", "USD", "rub", "EUR", "XXX"])
    surveys: list[str] = field(default_factory=lambda: ["survey-1", "survey-2"])
    request_ids: list[str] = field(default_factory=lambda: ["fuzz-reused-request-id"])

    def add(self, pool: str, value: str, limit: int = 200) -> None:
        values: list[str] = getattr(self, pool)
        if value and value not in values and len(values) < limit:
            values.append(value)

    def harvest(self, message: Message) -> None:
        """Remember every id an answer carries (an order the fuzzer placed can then be cancelled)."""
        for descriptor, value in message.ListFields():
            if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
                if _is_map(descriptor):
                    continue
                for item in value if _repeated(descriptor) else [value]:
                    self.harvest(item)
            elif descriptor.type == FieldDescriptor.TYPE_STRING and descriptor.name in KNOWN_FIELDS:
                pool = KNOWN_FIELDS[descriptor.name]
                if pool in ("currencies", "months", "card_tokens", "surveys"):
                    continue
                for item in value if _repeated(descriptor) else [value]:
                    if "\x00" not in item and len(item) <= 128:
                        self.add(pool, item)


def _type(descriptor: FieldDescriptor) -> Descriptor:
    message_type = descriptor.message_type
    assert message_type is not None, descriptor.full_name
    return message_type


def _is_map(descriptor: FieldDescriptor) -> bool:
    return descriptor.message_type is not None and bool(descriptor.message_type.GetOptions().map_entry)


def _repeated(descriptor: FieldDescriptor) -> bool:
    return bool(descriptor.is_repeated)


def _bounded(low: int, high: int) -> st.SearchStrategy[int]:
    specials = [
        v for v in (low, low + 1, -1, 0, 1, 2, 99, 100, 101, 9_999, 1_000_000, high - 1, high) if low <= v <= high
    ]
    return st.one_of(
        st.sampled_from(specials),
        st.integers(min_value=max(low, 0), max_value=min(high, 200_000)),  # plausible
        st.integers(min_value=low, max_value=high),
    )


INTEGERS: dict[int, st.SearchStrategy[int]] = {
    FieldDescriptor.TYPE_INT32: _bounded(*INT32),
    FieldDescriptor.TYPE_SINT32: _bounded(*INT32),
    FieldDescriptor.TYPE_SFIXED32: _bounded(*INT32),
    FieldDescriptor.TYPE_INT64: _bounded(*INT64),
    FieldDescriptor.TYPE_SINT64: _bounded(*INT64),
    FieldDescriptor.TYPE_SFIXED64: _bounded(*INT64),
    FieldDescriptor.TYPE_UINT32: _bounded(*UINT32),
    FieldDescriptor.TYPE_FIXED32: _bounded(*UINT32),
    FieldDescriptor.TYPE_UINT64: _bounded(*UINT64),
    FieldDescriptor.TYPE_FIXED64: _bounded(*UINT64),
}

# Field name fragment -> values a client would plausibly send (the first match wins).
PLAUSIBLE_NUMBERS: dict[str, st.SearchStrategy[int]] = {
    "page_size": st.integers(0, 20),
    "quantity": st.integers(1, 3),
    "months": st.integers(1, 12),
    "days": st.integers(1, 90),
    "bps": st.sampled_from([100, 500, 1200, 1800, 9500]),
    "points": st.integers(1, 500),
    "minor": st.integers(100, 200_000),
    "count": st.integers(0, 20),
    "size": st.integers(1, 10),
    "weight": st.integers(1, 3),
}

ANY_TEXT = st.one_of(
    st.sampled_from(NASTY_TEXT),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=300),
)


class Messages:
    """Strategies for messages of any type, with `known` values mixed into id fields."""

    def __init__(self, known: Known, *, now_seconds: int = 1_773_000_000, max_depth: int = 4, many: int = 40) -> None:
        self.known = known
        self.now_seconds = now_seconds
        self.max_depth = max_depth
        self.many = many

    # -- scalars ---------------------------------------------------------------------------

    def _text(self, name: str) -> st.SearchStrategy[str]:
        if name == "request_id":
            fresh = st.uuids().map(lambda u: f"fuzz-{u.hex}")
            return st.one_of(fresh, fresh, fresh, st.sampled_from(self.known.request_ids), ANY_TEXT)
        pool = KNOWN_FIELDS.get(name)
        values: list[str] = getattr(self.known, pool) if pool else []
        if name == "paths":
            return ANY_TEXT  # FieldMask paths get their own strategy in `_field_mask`
        if values:
            plausible = st.sampled_from(list(values))
            return st.one_of(plausible, plausible, plausible, ANY_TEXT)
        if name.endswith("_id") or name in ("reference", "name", "title", "reason", "salt"):
            return st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), ANY_TEXT)
        return ANY_TEXT

    def _enum(self, enum: EnumDescriptor) -> st.SearchStrategy[int]:
        numbers = [value.number for value in enum.values]
        return st.one_of(
            st.sampled_from(numbers),
            st.sampled_from(numbers),
            st.sampled_from([max(numbers) + 1, 99, -1, INT32[1], INT32[0]]),  # numbers the contract does not know
        )

    def _scalar(self, descriptor: FieldDescriptor) -> st.SearchStrategy[Any]:
        kind = descriptor.type
        if kind in INTEGERS:
            return INTEGERS[kind]
        if kind == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if kind == FieldDescriptor.TYPE_STRING:
            return self._text(descriptor.name)
        if kind == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=64)
        if kind == FieldDescriptor.TYPE_ENUM:
            assert descriptor.enum_type is not None
            return self._enum(descriptor.enum_type)
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return st.floats(
                allow_nan=True, allow_infinity=True, width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64
            )
        raise AssertionError(f"no strategy for field type {kind} of {descriptor.full_name}")

    # -- messages --------------------------------------------------------------------------

    def of(self, descriptor: Descriptor, *, plausible: bool) -> st.SearchStrategy[Message]:
        """Plausible: nearly every field set to a likely value, ids that exist (to get past
        validation into the business rules). Wild: anything the wire can carry."""
        return self._message(descriptor, 0, plausible)

    def _message(self, descriptor: Descriptor, depth: int, plausible: bool) -> st.SearchStrategy[Message]:
        special = self._well_known(descriptor, plausible)
        if special is not None:
            return special
        cls = GetMessageClass(descriptor)
        if depth >= self.max_depth:
            return st.just(cls())
        fields = [self._field(f, depth, plausible) for f in descriptor.fields]

        def build(values: list[tuple[str, Any] | None]) -> Message:
            message = cls()
            for item in values:
                if item is None:
                    continue
                name, value = item
                target = descriptor.fields_by_name[name]
                if target.type == FieldDescriptor.TYPE_MESSAGE:
                    if _is_map(target):
                        continue
                    if _repeated(target):
                        getattr(message, name).extend(value)
                    else:
                        getattr(message, name).CopyFrom(value)
                elif _repeated(target):
                    getattr(message, name).extend(value)
                else:
                    setattr(message, name, value)  # the last of a oneof wins, as on the wire
            return message

        return st.tuples(*fields).map(lambda values: build(list(values))) if fields else st.just(cls())

    def _field(
        self, descriptor: FieldDescriptor, depth: int, plausible: bool
    ) -> st.SearchStrategy[tuple[str, Any] | None]:
        if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            if _is_map(descriptor):
                return st.none()
            if _type(descriptor).full_name == "google.protobuf.FieldMask":
                single: st.SearchStrategy[Any] = self._field_mask(descriptor)
            else:
                single = st.deferred(lambda: self._message(_type(descriptor), depth + 1, plausible))
        else:
            single = self._plausible(descriptor) if plausible else self._scalar(descriptor)
        if _repeated(descriptor):
            values: st.SearchStrategy[Any] = (
                st.lists(single, min_size=1, max_size=3)
                if plausible
                else st.one_of(
                    st.lists(single, max_size=3),
                    st.lists(single, max_size=3),
                    st.lists(single, min_size=self.many // 2, max_size=self.many),
                )
            )
        else:
            values = single
        value = values.map(lambda v: (descriptor.name, v))
        if plausible:
            return value  # always set (of a oneof the last one set wins, as on the wire)
        return st.one_of(value, st.none())

    def _plausible(self, descriptor: FieldDescriptor) -> st.SearchStrategy[Any]:
        """A value a well-behaved client would send."""
        kind, name = descriptor.type, descriptor.name
        if kind in INTEGERS:
            for hint, values in PLAUSIBLE_NUMBERS.items():
                if hint in name:
                    return values
            return st.integers(1, 1_000)
        if kind == FieldDescriptor.TYPE_STRING:
            if name == "request_id":
                return st.uuids().map(lambda u: f"fuzz-{u.hex}")
            pool = KNOWN_FIELDS.get(name)
            known: list[str] = [v for v in getattr(self.known, pool) if v] if pool else []
            if pool in ("months", "currencies"):
                known = known[:2] if pool == "months" else ["RUB"]
            if known:
                return st.sampled_from(known)
            if name == "page_token":
                return st.just("")
            return st.from_regex(r"[a-z][a-z0-9-]{2,12}", fullmatch=True)
        if kind == FieldDescriptor.TYPE_ENUM:
            assert descriptor.enum_type is not None
            numbers = [v.number for v in descriptor.enum_type.values if v.number != 0] or [0]
            return st.sampled_from(numbers)
        return self._scalar(descriptor)

    def _field_mask(self, descriptor: FieldDescriptor) -> st.SearchStrategy[Message]:
        container = descriptor.containing_type
        assert container is not None
        # The mask usually names fields of the message it updates (its sibling field).
        names = sorted(
            {
                inner.name
                for sibling in container.fields
                if sibling.type == FieldDescriptor.TYPE_MESSAGE and sibling is not descriptor
                for inner in _type(sibling).fields
            }
        ) or ["name"]
        cls = GetMessageClass(_type(descriptor))
        path = st.one_of(st.sampled_from(names), st.sampled_from(names), ANY_TEXT)
        return st.lists(path, max_size=4).map(lambda paths: cls(paths=paths))

    def _well_known(self, descriptor: Descriptor, plausible: bool = False) -> st.SearchStrategy[Message] | None:
        name = descriptor.full_name
        cls = GetMessageClass(descriptor)
        if plausible and name == "google.protobuf.Timestamp":
            return st.integers(-86_400, 60 * 86_400).map(lambda s: cls(seconds=self.now_seconds + s))
        if plausible and name == "google.protobuf.Duration":
            return st.integers(1, 86_400).map(lambda s: cls(seconds=s))
        if plausible and name == "loyalty.common.v1.Money":
            return st.integers(100, 200_000).map(lambda amount: cls(amount_minor=amount, currency_code="RUB"))
        if name == "google.protobuf.Timestamp":
            seconds = st.one_of(
                st.integers(1_700_000_000, 1_900_000_000),  # around now
                st.sampled_from([0, -1, *TIMESTAMP_SECONDS, TIMESTAMP_SECONDS[0] - 1, TIMESTAMP_SECONDS[1] + 1]),
                INTEGERS[FieldDescriptor.TYPE_INT64],
            )
            nanos = st.one_of(
                st.just(0), st.sampled_from([-1, 999_999_999, 1_000_000_000]), INTEGERS[FieldDescriptor.TYPE_INT32]
            )
            return st.builds(lambda s, n: cls(seconds=s, nanos=n), seconds, nanos)
        if name == "google.protobuf.Duration":
            seconds = st.one_of(
                st.integers(0, 90 * 86_400),
                st.sampled_from([0, -1, DURATION_SECONDS, -DURATION_SECONDS, DURATION_SECONDS + 1]),
                INTEGERS[FieldDescriptor.TYPE_INT64],
            )
            nanos = st.one_of(
                st.just(0), st.sampled_from([-1, 999_999_999, 1_000_000_000]), INTEGERS[FieldDescriptor.TYPE_INT32]
            )
            return st.builds(lambda s, n: cls(seconds=s, nanos=n), seconds, nanos)
        if name == "loyalty.common.v1.Money":
            return st.builds(
                lambda amount, currency: cls(amount_minor=amount, currency_code=currency),
                INTEGERS[FieldDescriptor.TYPE_INT64],
                self._text("currency_code"),
            )
        return None


# -- database fingerprints ---------------------------------------------------------------------


def _mod(column: Any) -> Any:
    # Sums stay far from overflow on SQLite (which raises) however big the stored values are.
    return func.coalesce(func.sum(column % 1_000_000_007), 0)


class Fingerprint:
    """A digest of every table of a database: row counts, sums of integer and boolean columns,
    total lengths of text columns. One query per database, so cheap enough to take around every
    call; blind only to a change that keeps every count, sum and length (a timestamp alone)."""

    def __init__(self, engine: Engine, *, exclude: Iterable[str] = ()) -> None:
        self.engine = engine
        metadata = MetaData()
        metadata.reflect(engine)
        skipped = set(exclude)
        parts = []
        for table in sorted(metadata.tables.values(), key=lambda t: t.name):
            if table.name in skipped:
                continue
            parts.append(self._aggregate(table))
        self.tables = [t.name for t in sorted(metadata.tables.values(), key=lambda t: t.name) if t.name not in skipped]
        self._query = union_all(*parts)

    @staticmethod
    def _aggregate(table: Table) -> Any:
        numbers = [c for c in table.columns if isinstance(c.type, Integer | Boolean)]
        texts = [c for c in table.columns if isinstance(c.type, String | Text)]
        # "count|sums of integer columns|lengths of text columns", so the sums alone can be compared.
        groups: list[list[Any]] = [
            [func.count()],
            [_mod(c if not isinstance(c.type, Boolean) else c.cast(Integer)) for c in numbers],
            [func.coalesce(func.sum(func.length(c)), 0) for c in texts],
        ]
        joined: Any = literal("")
        for index, group in enumerate(groups):
            for position, term in enumerate(group):
                joined = joined.concat("," if position else ("|" if index else "")).concat(term.cast(String))
            if not group:
                joined = joined.concat("|")
        return select(literal(table.name).label("t"), joined.label("v")).select_from(table)

    def take(self) -> dict[str, str]:
        with self.engine.connect() as connection:
            return {str(name): str(value) for name, value in connection.execute(self._query)}


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


# Another system's table (the acquirer simulator keeps what it was asked, refused or not) and
# Alembic's: left out of fingerprints.
EXTERNAL = {"acquirer_simulator_operations", "alembic_version"}

# The tables that hold balances of money and points (and campaign budgets, promo code usage). A
# compensated saga leaves its trail in the journals (a points hold and its release in `history`,
# a released card hold in `holds`, the FAILED order), but not one of these may differ.
BALANCES = {
    "wallet": {"wallets", "ledger_accounts"},
    "points": {"accounts", "lots"},
    "promotions": {"campaigns", "promo_codes", "cashback_months"},
    "checkout": set(),
}


def _sums(value: str | None) -> str | None:
    return value.split("|")[1] if value is not None else None


def refusal_changes(service: str, before: dict[str, str], after: dict[str, str], *, deliberate: bool) -> list[str]:
    """The tables of `service` a refusal changed and should not have: any table; or for a refusal
    that records itself on purpose (`deliberate`), a balance table whose sums moved (a first
    top-up declined leaves the wallet it opened, empty: new rows, the same sums)."""
    moved = changed(before, after)
    if not deliberate:
        return moved
    return [t for t in moved if t in BALANCES[service] and _sums(before.get(t)) != _sums(after.get(t))]


def digest(values: dict[str, dict[str, str]]) -> str:
    return hashlib.sha256(repr(sorted((k, sorted(v.items())) for k, v in values.items())).encode()).hexdigest()


def fresh_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


Call = Callable[..., Any]
