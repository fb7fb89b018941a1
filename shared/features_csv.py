"""Customer features from CSV, streamed to ExperimentsService.ImportCustomerFeatures: the one
reader behind the gateway's `POST /v1/admin/customer-features/import` and `loyalty features
import`.

The header names each of `CSV_COLUMNS` once, in any order. Rows are parsed as they are read and
sent in messages of up to 10,000; a row that cannot be carried (`WRONG_COLUMN_COUNT`,
`INVALID_AS_OF`, `INVALID_<COLUMN>`) is counted here and not sent, the rows the service's rules
refuse are counted by the service. A file that cannot be read to the end cancels the stream, and
the import, one transaction in the service, stores nothing (`MALFORMED_CSV`).
"""

from __future__ import annotations

import csv
import io
import re
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

from loyalty.promotions.v1 import experiments_pb2 as pb
from loyalty.promotions.v1 import promotions_pb2

from shared.errors import DomainError, InvalidArgument
from shared.protoconv import money, to_timestamp
from shared.validation import MAX_CUSTOMER_ID

CSV_COLUMNS = (
    "customer_id",
    "as_of",
    "average_order_value_minor",
    "order_count",
    "lookback_days",
    "uses_financial_products",
    "takes_part_in_points_activities",
)
BATCH_ROWS = 10_000  # the most ImportCustomerFeatures takes in one message
MAX_ERRORS = 100
PROGRESS_EVERY_ROWS = 1_000
_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1
_INTEGER = re.compile(r"^-?[0-9]{1,19}$")
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
_RANGES = {"average_order_value_minor": _INT64_MAX, "order_count": _INT64_MAX, "lookback_days": _INT32_MAX}


@dataclass(frozen=True)
class RowError:
    line: int  # the row's line in the file; the header is line 1
    customer_id: str
    reason: str


@dataclass
class ImportSummary:
    rows_received: int
    rows_imported: int
    rows_rejected: int
    errors: list[RowError] = field(default_factory=list)  # the first 100 rejected rows, by line


class RowRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_header(first_line: str) -> dict[str, int]:
    """The position of each column, or INVALID_CSV_HEADER naming what is missing or unknown."""
    names = [name.strip() for name in next(csv.reader([first_line.lstrip("\ufeff")]), [])]
    missing = [c for c in CSV_COLUMNS if c not in names]
    unknown = [n for n in names if n not in CSV_COLUMNS]
    if missing or unknown or len(set(names)) != len(names):
        raise InvalidArgument.field(
            "header",
            f"must name the columns {', '.join(CSV_COLUMNS)} once each"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(n[:64] for n in unknown[:10])}" if unknown else ""),
            "INVALID_CSV_HEADER",
        )
    return {name: names.index(name) for name in CSV_COLUMNS}


def parse_row(columns: dict[str, int], row: list[str]) -> promotions_pb2.CustomerFeatures:
    """One CSV row as CustomerFeatures. Only what cannot be carried is refused here; the rules
    (a customer id, non-negative amounts, ...) are the service's."""
    if len(row) != len(columns):
        raise RowRefused("WRONG_COLUMN_COUNT")
    value = {name: row[index].strip() for name, index in columns.items()}
    features = promotions_pb2.CustomerFeatures(customer_id=value["customer_id"])
    for name, limit in _RANGES.items():
        text = value[name]
        if not _INTEGER.match(text) or not -limit - 1 <= int(text) <= limit:
            raise RowRefused(f"INVALID_{name.upper()}")
    features.average_order_value.CopyFrom(money(int(value["average_order_value_minor"])))
    features.order_count = int(value["order_count"])
    features.lookback_days = int(value["lookback_days"])
    for name in ("uses_financial_products", "takes_part_in_points_activities"):
        flag = _BOOLEANS.get(value[name].lower())
        if flag is None:
            raise RowRefused(f"INVALID_{name.upper()}")
        setattr(features, name, flag)
    if value["as_of"]:  # an empty one is the service's AS_OF_REQUIRED
        try:
            as_of = datetime.fromisoformat(value["as_of"])
            if as_of.tzinfo is None:
                raise ValueError("no offset")
            features.as_of.CopyFrom(to_timestamp(as_of))
        except (ValueError, OverflowError):
            raise RowRefused("INVALID_AS_OF") from None
    return features


def read_header(source: IO[bytes]) -> dict[str, int]:
    """The columns of a seekable UTF-8 CSV (CSV_EMPTY when it has no header line)."""
    source.seek(0)
    text = io.TextIOWrapper(source, encoding="utf-8-sig", newline="")
    try:
        first_line = text.readline().strip("\r\n")
    except UnicodeDecodeError:
        raise InvalidArgument.field("body", "must be UTF-8 text") from None
    finally:
        text.detach()
    if not first_line.strip():
        raise InvalidArgument.field("body", "is empty: a header line and rows are expected", "CSV_EMPTY")
    return parse_header(first_line)


Progress = Callable[[int, int], None]  # (rows read so far, bytes read so far)


class FeatureImport:
    """Reads the seekable CSV once per attempt, sending batches of up to 10,000 parsed rows."""

    def __init__(
        self, source: IO[bytes], columns: dict[str, int], request_id: str, *, progress: Progress | None = None
    ) -> None:
        self.source, self.columns, self.request_id = source, columns, request_id
        self.progress = progress
        self.received = 0
        self.rejected = 0
        self.errors: list[RowError] = []
        self.lines = array("q")  # the CSV line of each row sent, by its position in the stream
        self.unreadable: str | None = None  # why the CSV could not be read to the end

    def batches(self) -> Iterator[pb.ImportCustomerFeaturesRequest]:
        self.received, self.rejected, self.errors, self.lines = 0, 0, [], array("q")
        self.unreadable = None
        self.source.seek(0)
        text = io.TextIOWrapper(self.source, encoding="utf-8-sig", newline="")
        try:
            reader = csv.reader(text)
            next(reader)  # the header, checked before the call
            batch: list[promotions_pb2.CustomerFeatures] = []
            sent = False
            for row in self._rows(reader):
                if not row:
                    continue
                self.received += 1
                try:
                    batch.append(parse_row(self.columns, row))
                    self.lines.append(reader.line_num)
                except RowRefused as refused:
                    self.rejected += 1
                    if len(self.errors) < MAX_ERRORS:
                        self.errors.append(RowError(reader.line_num, self._customer(row), refused.reason))
                if self.progress and self.received % PROGRESS_EVERY_ROWS == 0:
                    self.progress(self.received, self.source.tell())
                if len(batch) == BATCH_ROWS:
                    yield pb.ImportCustomerFeaturesRequest(request_id=self.request_id, features=batch)
                    batch, sent = [], True
            if batch or not sent:
                yield pb.ImportCustomerFeaturesRequest(request_id=self.request_id, features=batch)
            if self.progress:
                self.progress(self.received, self.source.tell())
        finally:
            text.detach()

    def _rows(self, reader: Iterator[list[str]]) -> Iterator[list[str]]:
        try:
            yield from reader
        except (csv.Error, UnicodeDecodeError) as error:  # e.g. a field beyond the csv module's limit
            self.unreadable = str(error)
            raise  # gRPC cancels the stream: the import is one transaction, so nothing is stored

    def _customer(self, row: list[str]) -> str:
        index = self.columns["customer_id"]
        return row[index].strip()[:MAX_CUSTOMER_ID] if index < len(row) else ""

    def caller(
        self, method: Callable[..., pb.ImportCustomerFeaturesResponse]
    ) -> Callable[..., pb.ImportCustomerFeaturesResponse]:
        """A unary-looking call for `Peers.call` (which retries UNAVAILABLE): each attempt
        streams the file again from its start."""

        def call(_request: object, **options: object) -> pb.ImportCustomerFeaturesResponse:
            return method(self.batches(), **options)

        return call

    def summary(self, answer: pb.ImportCustomerFeaturesResponse) -> ImportSummary:
        errors = self.errors + [
            RowError(self.lines[e.row_index] if 0 <= e.row_index < len(self.lines) else 0, e.customer_id, e.reason)
            for e in answer.errors
        ]
        return ImportSummary(
            rows_received=self.received,
            rows_imported=answer.rows_imported,
            rows_rejected=self.rejected + answer.rows_rejected,
            errors=sorted(errors, key=lambda e: e.line)[:MAX_ERRORS],
        )

    def refusal(self, error: DomainError) -> DomainError:
        """The error to report for a failed stream: MALFORMED_CSV when the file was the cause."""
        if self.unreadable is not None:
            return InvalidArgument.field("body", f"is not readable CSV: {self.unreadable}", "MALFORMED_CSV")
        return error
