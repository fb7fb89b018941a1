"""The PointsService servicer: turns requests into use cases and results into responses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.points.v1 import points_pb2, points_pb2_grpc

from services.points.adapters.repository import PointsRepository
from services.points.adapters.tables import HistoryLine, Lot
from services.points.domain.history import EntryType
from services.points.domain.lots import CreditRequest, LotStatus, PointsSource, validate_credit
from services.points.domain.spending import HoldStatus
from services.points.service_layer.book import HoldView, Settlement
from services.points.service_layer.ledger import Ledger, NewLot
from shared.db import UnitOfWork
from shared.errors import AlreadyExists, DomainError, InvalidArgument
from shared.idempotency import Idempotency, Stored, request_fingerprint, validate_request_id
from shared.metrics import Metrics
from shared.protoconv import enum_from_proto, enum_to_proto, from_duration, optional_timestamp, to_timestamp

R = TypeVar("R", bound=Message)

SERVICE_NAME = points_pb2.DESCRIPTOR.services_by_name["PointsService"].full_name
MAX_BATCH = 1000
CREDIT_SCOPE = "PointsService/CreditPoints"  # one key space for single and batch credits


class _LotConversions:
    """Timestamps and enums of lots converted once per distinct value: the lots of a batch share
    their creation time and mostly their source and expiry, and converting them lot by lot was a
    quarter of BatchCreditPoints."""

    def __init__(self) -> None:
        self._stamps: dict[datetime, Timestamp] = {}
        self._sources: dict[str, Any] = {}
        self._statuses: dict[str, Any] = {}

    def stamp(self, instant: datetime) -> Timestamp:
        found = self._stamps.get(instant)
        if found is None:
            found = self._stamps[instant] = to_timestamp(instant)
        return found

    def source(self, value: str) -> Any:
        found = self._sources.get(value)
        if found is None:
            found = self._sources[value] = enum_to_proto(points_pb2.PointsSource, PointsSource(value))
        return found

    def status(self, value: str) -> Any:
        found = self._statuses.get(value)
        if found is None:
            found = self._statuses[value] = enum_to_proto(points_pb2.LotStatus, LotStatus(value))
        return found


def lot_to_proto(lot: Lot | NewLot, convert: _LotConversions | None = None) -> points_pb2.Lot:
    message = points_pb2.Lot()
    fill_lot(message, lot, convert or _LotConversions())
    return message


def fill_lot(message: points_pb2.Lot, lot: Lot | NewLot, convert: _LotConversions) -> None:
    """`lot_to_proto` into a message that already sits in its answer (no copy)."""
    message.lot_id = lot.lot_id
    message.customer_id = lot.customer_id
    message.amount = lot.amount
    message.remaining = lot.remaining
    message.held = lot.held
    message.source = convert.source(lot.source)
    message.reference = lot.reference
    message.create_time.CopyFrom(convert.stamp(lot.created_at))
    message.status = convert.status(lot.status)
    message.reason = lot.reason
    message.operator_id = lot.operator_id
    if lot.available_at is not None:
        message.available_at.CopyFrom(convert.stamp(lot.available_at))
    if lot.expires_at is not None:
        message.expires_at.CopyFrom(convert.stamp(lot.expires_at))


# `CreditPointsResponse` is one field, the lot: its wire form is that field's tag, the lot's length
# and the lot, so a batch stores each credit's answer from the lot already in the batch's answer.
_CREDIT_LOT = points_pb2.CreditPointsResponse.DESCRIPTOR.fields_by_name["lot"]
assert len(points_pb2.CreditPointsResponse.DESCRIPTOR.fields) == 1, "credit_answer writes the lot field only"
_CREDIT_LOT_TAG = bytes([_CREDIT_LOT.number << 3 | 2])  # wire type 2: length-delimited


def credit_answer(lot: points_pb2.Lot) -> bytes:
    """`CreditPointsResponse(lot=lot).SerializeToString(deterministic=True)`, without building
    the response (which copies the lot)."""
    body = lot.SerializeToString(deterministic=True)
    size = len(body)
    length = bytearray()
    while size > 0x7F:
        length.append(size & 0x7F | 0x80)
        size >>= 7
    length.append(size)
    return _CREDIT_LOT_TAG + bytes(length) + body


def hold_to_proto(view: HoldView) -> points_pb2.Hold:
    hold = view.hold
    return points_pb2.Hold(
        hold_id=hold.hold_id,
        customer_id=hold.customer_id,
        reference=hold.reference,
        points=hold.points,
        captured=hold.captured,
        returned=hold.returned,
        status=enum_to_proto(points_pb2.HoldStatus, HoldStatus(hold.status)),
        allocations=[
            points_pb2.HoldAllocation(lot_id=a.lot_id, points=a.points, expires_at=to_timestamp(expires_at))
            for a, expires_at in view.allocations
        ],
        expire_time=to_timestamp(hold.expire_time),
        create_time=to_timestamp(hold.created_at),
        update_time=to_timestamp(hold.updated_at),
    )


def history_to_proto(line: HistoryLine) -> points_pb2.HistoryEntry:
    source = points_pb2.POINTS_SOURCE_UNSPECIFIED
    if line.source:
        source = enum_to_proto(points_pb2.PointsSource, PointsSource(line.source))
    return points_pb2.HistoryEntry(
        entry_id=str(line.id),
        customer_id=line.customer_id,
        type=enum_to_proto(points_pb2.HistoryEntryType, EntryType(line.type)),
        available_delta=line.available_delta,
        pending_delta=line.pending_delta,
        held_delta=line.held_delta,
        lot_id=line.lot_id,
        hold_id=line.hold_id,
        source=source,
        reference=line.reference,
        description=line.description,
        unrecovered_points=line.unrecovered_points,
        operator_id=line.operator_id,
        create_time=to_timestamp(line.created_at),
    )


def expiring_to_proto(day: str, earliest: datetime, points: int) -> points_pb2.ExpiringPoints:
    return points_pb2.ExpiringPoints(points=points, expires_at=to_timestamp(earliest), date=day)


def credit_from_proto(request: points_pb2.CreditPointsRequest) -> CreditRequest:
    if request.source == points_pb2.POINTS_SOURCE_UNSPECIFIED:
        raise InvalidArgument.field("source", "is required", "SOURCE_REQUIRED")
    return CreditRequest(
        customer_id=request.customer_id,
        points=request.points,
        source=enum_from_proto(points_pb2.PointsSource, request.source, PointsSource, "source"),
        reference=request.reference,
        pending=request.pending,
        expires_at=optional_timestamp(request, "expires_at"),
        reason=request.reason,
        operator_id=request.operator_id,
    )


def optional_ttl(request: points_pb2.HoldPointsRequest) -> timedelta | None:
    if not request.HasField("ttl"):
        return None
    return from_duration(request.ttl, "ttl")


class PointsServicer(points_pb2_grpc.PointsServiceServicer):
    def __init__(self, ledger: Ledger, idempotency: Idempotency, metrics: Metrics | None = None) -> None:
        self._ledger = ledger
        self._idempotency = idempotency
        self._metrics = metrics or Metrics.noop()

    def _run(self, method: str, request: Message, response: type[R], effect: Callable[[UnitOfWork], R]) -> R:
        return self._idempotency.run(f"PointsService/{method}", request, response, effect)

    @staticmethod
    def _hold(uow: UnitOfWork, view: HoldView) -> points_pb2.Hold:
        uow.flush()
        return hold_to_proto(view)

    # --- credits --------------------------------------------------------------------------

    def _credit_effect(self, credit: CreditRequest) -> Callable[[UnitOfWork], points_pb2.CreditPointsResponse]:
        def effect(uow: UnitOfWork) -> points_pb2.CreditPointsResponse:
            lot = self._ledger.credit(uow, credit)
            uow.on_commit(
                lambda: self._metrics.points_credited(credit.points, source=credit.source.name, pending=credit.pending)
            )
            return points_pb2.CreditPointsResponse(lot=lot_to_proto(lot))

        return effect

    def CreditPoints(
        self, request: points_pb2.CreditPointsRequest, context: grpc.ServicerContext
    ) -> points_pb2.CreditPointsResponse:
        effect = self._credit_effect(credit_from_proto(request))
        return self._idempotency.run(CREDIT_SCOPE, request, points_pb2.CreditPointsResponse, effect)

    def BatchCreditPoints(
        self, request: points_pb2.BatchCreditPointsRequest, context: grpc.ServicerContext
    ) -> points_pb2.BatchCreditPointsResponse:
        if not request.requests:
            raise InvalidArgument.field("requests", "must hold at least one credit", "BATCH_EMPTY")
        if len(request.requests) > MAX_BATCH:
            raise InvalidArgument.field("requests", f"must hold at most {MAX_BATCH} credits", "BATCH_TOO_LARGE")

        def effect(uow: UnitOfWork) -> points_pb2.BatchCreditPointsResponse:
            response = points_pb2.BatchCreditPointsResponse()
            self._batch_credit(uow, list(request.requests), response)
            return response

        return self._run("BatchCreditPoints", request, points_pb2.BatchCreditPointsResponse, effect)

    def _batch_credit(
        self,
        uow: UnitOfWork,
        items: list[points_pb2.CreditPointsRequest],
        response: points_pb2.BatchCreditPointsResponse,
    ) -> None:
        """Each item as `CreditPoints` would answer it, in one transaction. Available credits of
        customers with nothing due are written set-based (their keys with their answers in one
        statement, then `Ledger.write_credits`: lots, lines and balances); pending credits, and
        customers with something due, go through their `Book` one by one under a savepoint. Every
        customer's account is locked first, in customer order, so concurrent batches cannot
        deadlock. The results are written into `response` in place: a lot is built once, where
        the answer holds it, and each credit's stored answer is serialized from there."""
        results = [response.results.add(request_id=item.request_id) for item in items]

        def refuse(index: int, error: DomainError) -> None:
            results[index].ClearField("lot")
            results[index].error_code = error.code.value[0]
            results[index].error_reason = error.reason
            results[index].error_message = error.message

        credits: dict[int, CreditRequest] = {}
        for index, item in enumerate(items):
            try:
                validate_request_id(item.request_id)
                credit = credit_from_proto(item)
                validate_credit(credit, self._ledger.now())
            except DomainError as error:
                refuse(index, error)
                continue
            credits[index] = credit
        # The same request id twice in one batch: the first occurrence decides, the others replay it.
        first: dict[str, int] = {}
        repeats: list[int] = []
        for index in credits:
            if items[index].request_id in first:
                repeats.append(index)
            else:
                first[items[index].request_id] = index
        # Credits made before are not looked for first: a new batch has none, and a credit that
        # has a key meets it when the keys are inserted (then it is answered from it, below).
        # Every account is locked up front, in customer order; a missing one is created then only
        # for a pending credit (its `Book` needs it), else with its credits by `write_credits`.
        due = self._ledger.lock_customers(
            uow,
            sorted({credits[i].customer_id for i in first.values()}),
            create={credits[i].customer_id for i in first.values() if credits[i].pending},
        )
        fast: list[int] = []
        slow: list[int] = []
        for index in first.values():
            if credits[index].pending or credits[index].customer_id in due:
                slow.append(index)
            else:
                fast.append(index)
        lots = self._ledger.new_lots([credits[i] for i in fast])
        convert = _LotConversions()
        for i, lot in zip(fast, lots, strict=True):
            fill_lot(results[i].lot, lot, convert)
        claimed = self._idempotency.claim_many(
            uow,
            CREDIT_SCOPE,
            [(items[i].request_id, request_fingerprint(items[i]), credit_answer(results[i].lot)) for i in fast],
        )
        self._ledger.write_credits(
            uow, [lot for i, lot in zip(fast, lots, strict=True) if items[i].request_id in claimed]
        )
        late = [i for i in fast if items[i].request_id not in claimed]  # made before, or by a concurrent attempt
        late_stored = self._idempotency.stored_many(uow, CREDIT_SCOPE, [items[i].request_id for i in late])
        for index in fast:
            if index in late:
                if items[index].request_id in late_stored:
                    self._answer(results, index, items[index], late_stored[items[index].request_id], refuse)
                else:
                    slow.append(index)
        for index in sorted(slow, key=lambda i: credits[i].customer_id):
            try:
                answer = self._idempotency.run_nested(
                    uow,
                    CREDIT_SCOPE,
                    items[index],
                    points_pb2.CreditPointsResponse,
                    self._credit_effect(credits[index]),
                )
                results[index].lot.CopyFrom(answer.lot)
            except DomainError as error:
                refuse(index, error)
        for index in repeats:
            origin = results[first[items[index].request_id]]
            if request_fingerprint(items[index]) != request_fingerprint(items[first[items[index].request_id]]):
                refuse(
                    index,
                    AlreadyExists(
                        "IDEMPOTENCY_KEY_REUSED",
                        f"request_id {items[index].request_id!r} was already used for a different request",
                        metadata={"request_id": items[index].request_id},
                    ),
                )
            else:
                results[index].CopyFrom(origin)

    def _answer(
        self,
        results: list[points_pb2.BatchCreditPointsResult],
        index: int,
        item: points_pb2.CreditPointsRequest,
        stored: Stored,
        refuse: Callable[[int, DomainError], None],
    ) -> None:
        try:
            results[index].lot.CopyFrom(self._idempotency.answer(stored, item, points_pb2.CreditPointsResponse).lot)
        except DomainError as error:
            refuse(index, error)

    # --- pending points -------------------------------------------------------------------

    def ActivatePendingPoints(
        self, request: points_pb2.ActivatePendingPointsRequest, context: grpc.ServicerContext
    ) -> points_pb2.ActivatePendingPointsResponse:
        at = optional_timestamp(request, "available_at")

        def effect(uow: UnitOfWork) -> points_pb2.ActivatePendingPointsResponse:
            activated, scheduled, lots = self._ledger.activate(uow, request.customer_id, request.reference, at)
            uow.flush()
            return points_pb2.ActivatePendingPointsResponse(
                points_activated=activated, points_scheduled=scheduled, lots=[lot_to_proto(lot) for lot in lots]
            )

        return self._run("ActivatePendingPoints", request, points_pb2.ActivatePendingPointsResponse, effect)

    def CancelPendingPoints(
        self, request: points_pb2.CancelPendingPointsRequest, context: grpc.ServicerContext
    ) -> points_pb2.CancelPendingPointsResponse:
        def effect(uow: UnitOfWork) -> points_pb2.CancelPendingPointsResponse:
            points, lots = self._ledger.cancel(uow, request.customer_id, request.reference, request.reason)
            uow.flush()
            return points_pb2.CancelPendingPointsResponse(
                points_cancelled=points, lots=[lot_to_proto(lot) for lot in lots]
            )

        return self._run("CancelPendingPoints", request, points_pb2.CancelPendingPointsResponse, effect)

    # --- holds ----------------------------------------------------------------------------

    def HoldPoints(
        self, request: points_pb2.HoldPointsRequest, context: grpc.ServicerContext
    ) -> points_pb2.HoldPointsResponse:
        ttl = optional_ttl(request)

        def effect(uow: UnitOfWork) -> points_pb2.HoldPointsResponse:
            view = self._ledger.hold(uow, request.customer_id, request.points, request.reference, ttl)
            return points_pb2.HoldPointsResponse(hold=self._hold(uow, view))

        return self._run("HoldPoints", request, points_pb2.HoldPointsResponse, effect)

    def CaptureHold(
        self, request: points_pb2.CaptureHoldRequest, context: grpc.ServicerContext
    ) -> points_pb2.CaptureHoldResponse:
        def effect(uow: UnitOfWork) -> points_pb2.CaptureHoldResponse:
            captured = self._hold(uow, self._ledger.capture(uow, request.hold_id, request.points))
            uow.on_commit(lambda: self._metrics.points_spent(captured.captured))
            return points_pb2.CaptureHoldResponse(hold=captured)

        return self._run("CaptureHold", request, points_pb2.CaptureHoldResponse, effect)

    def ReleaseHold(
        self, request: points_pb2.ReleaseHoldRequest, context: grpc.ServicerContext
    ) -> points_pb2.ReleaseHoldResponse:
        def effect(uow: UnitOfWork) -> points_pb2.ReleaseHoldResponse:
            view, expired = self._ledger.release(uow, request.hold_id, request.reason)
            return points_pb2.ReleaseHoldResponse(hold=self._hold(uow, view), points_expired=expired)

        return self._run("ReleaseHold", request, points_pb2.ReleaseHoldResponse, effect)

    def GetHold(self, request: points_pb2.GetHoldRequest, context: grpc.ServicerContext) -> points_pb2.GetHoldResponse:
        return points_pb2.GetHoldResponse(hold=hold_to_proto(self._ledger.get_hold(request.hold_id)))

    def ReturnPoints(
        self, request: points_pb2.ReturnPointsRequest, context: grpc.ServicerContext
    ) -> points_pb2.ReturnPointsResponse:
        def effect(uow: UnitOfWork) -> points_pb2.ReturnPointsResponse:
            returned, view = self._ledger.return_points(
                uow, request.hold_id, request.points, request.reference, request.reason
            )
            return points_pb2.ReturnPointsResponse(
                points_returned=returned.points,
                points_expired=returned.expired,
                allocations=[
                    points_pb2.HoldAllocation(lot_id=take.lot_id, points=take.points, expires_at=to_timestamp(at))
                    for take, at in returned.takes
                ],
                hold=self._hold(uow, view),
            )

        return self._run("ReturnPoints", request, points_pb2.ReturnPointsResponse, effect)

    def ReversePoints(
        self, request: points_pb2.ReversePointsRequest, context: grpc.ServicerContext
    ) -> points_pb2.ReversePointsResponse:
        def effect(uow: UnitOfWork) -> points_pb2.ReversePointsResponse:
            plan = self._ledger.reverse(uow, request.customer_id, request.reference, request.points, request.reason)
            return points_pb2.ReversePointsResponse(
                points_from_pending=plan.points_from_pending,
                points_from_available=plan.points_from_available,
                points_unrecovered=plan.unrecovered,
            )

        return self._run("ReversePoints", request, points_pb2.ReversePointsResponse, effect)

    # --- jobs -----------------------------------------------------------------------------

    def _job(
        self,
        method: str,
        request: Message,
        response: type[R],
        find: Callable[..., list[str]],
        answer: Callable[[Settlement], R],
    ) -> R:
        return self._idempotency.run_job(
            f"PointsService/{method}", request, response, lambda: answer(self._ledger.run_due(find))
        )

    def ActivateDuePoints(
        self, request: points_pb2.ActivateDuePointsRequest, context: grpc.ServicerContext
    ) -> points_pb2.ActivateDuePointsResponse:
        return self._job(
            "ActivateDuePoints",
            request,
            points_pb2.ActivateDuePointsResponse,
            PointsRepository.customers_with_due_activations,
            lambda done: points_pb2.ActivateDuePointsResponse(
                lots_activated=done.lots_activated, points_activated=done.points_activated
            ),
        )

    def ReleaseExpiredHolds(
        self, request: points_pb2.ReleaseExpiredHoldsRequest, context: grpc.ServicerContext
    ) -> points_pb2.ReleaseExpiredHoldsResponse:
        return self._job(
            "ReleaseExpiredHolds",
            request,
            points_pb2.ReleaseExpiredHoldsResponse,
            PointsRepository.customers_with_expired_holds,
            lambda done: points_pb2.ReleaseExpiredHoldsResponse(
                holds_released=done.holds_released, points_released=done.points_released
            ),
        )

    def ExpirePoints(
        self, request: points_pb2.ExpirePointsRequest, context: grpc.ServicerContext
    ) -> points_pb2.ExpirePointsResponse:
        def expire() -> points_pb2.ExpirePointsResponse:
            done = self._ledger.expire_due()
            return points_pb2.ExpirePointsResponse(lots_expired=done.lots_expired, points_expired=done.points_expired)

        return self._idempotency.run_job("PointsService/ExpirePoints", request, points_pb2.ExpirePointsResponse, expire)

    # --- views ----------------------------------------------------------------------------

    def GetBalance(
        self, request: points_pb2.GetBalanceRequest, context: grpc.ServicerContext
    ) -> points_pb2.GetBalanceResponse:
        balance = self._ledger.balance(request.customer_id, request.expiring_within_days)
        return points_pb2.GetBalanceResponse(
            customer_id=request.customer_id,
            available=balance.available,
            pending=balance.pending,
            held=balance.held,
            expiring=[expiring_to_proto(*group) for group in balance.expiring],
        )

    def ListExpiringPoints(
        self, request: points_pb2.ListExpiringPointsRequest, context: grpc.ServicerContext
    ) -> points_pb2.ListExpiringPointsResponse:
        groups, token = self._ledger.expiring(
            request.customer_id, request.within_days, request.page_size, request.page_token
        )
        return points_pb2.ListExpiringPointsResponse(
            expiring=[expiring_to_proto(*group) for group in groups], next_page_token=token
        )

    def ListLots(
        self, request: points_pb2.ListLotsRequest, context: grpc.ServicerContext
    ) -> points_pb2.ListLotsResponse:
        statuses = [enum_from_proto(points_pb2.LotStatus, value, LotStatus, "statuses") for value in request.statuses]
        lots, token = self._ledger.lots(request.customer_id, statuses, request.page_size, request.page_token)
        return points_pb2.ListLotsResponse(lots=[lot_to_proto(lot) for lot in lots], next_page_token=token)

    def ListHistory(
        self, request: points_pb2.ListHistoryRequest, context: grpc.ServicerContext
    ) -> points_pb2.ListHistoryResponse:
        lines, token = self._ledger.history(
            request.customer_id,
            request.page_size,
            request.page_token,
            optional_timestamp(request, "start_time"),
            optional_timestamp(request, "end_time"),
        )
        return points_pb2.ListHistoryResponse(entries=[history_to_proto(line) for line in lines], next_page_token=token)

    def ListPointsStatistics(
        self, request: points_pb2.ListPointsStatisticsRequest, context: grpc.ServicerContext
    ) -> points_pb2.ListPointsStatisticsResponse:
        rows, token = self._ledger.statistics(
            optional_timestamp(request, "start_time"),
            optional_timestamp(request, "end_time"),
            list(request.customer_ids),
            request.page_size,
            request.page_token,
        )
        return points_pb2.ListPointsStatisticsResponse(
            statistics=[
                points_pb2.PointsStatistics(
                    customer_id=row.customer_id,
                    credited_by_source=[
                        points_pb2.SourceTotal(
                            source=enum_to_proto(points_pb2.PointsSource, PointsSource(source)), points=points
                        )
                        for source, points in sorted(row.credited_by_source.items())
                        if points
                    ],
                    points_spent=row.spent,
                    points_expired=row.expired,
                    points_reversed=row.reversed,
                    activity_credits=row.activity_credits,
                )
                for row in rows
            ],
            next_page_token=token,
        )
