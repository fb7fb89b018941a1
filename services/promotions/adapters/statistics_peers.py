"""What experiments ask of Checkout, Wallet and Points: per-customer statistics over a period.

Each peer answers up to 1000 customers per call (or everyone, page by page); every call goes
through `shared.peers.Peers` with its deadline, and is retried on UNAVAILABLE (reads are
idempotent). A peer's error propagates: results and features are never computed from a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loyalty.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from shared.peers import Peers
from shared.protoconv import to_timestamp

BATCH = 1000  # the peers' limit of customers per call
MECHANIC_SOURCES = (points_pb2.POINTS_SOURCE_WALLET_INTEREST, points_pb2.POINTS_SOURCE_CASHBACK)


@dataclass(frozen=True)
class OrderFigures:
    order_count: int
    gmv_minor: int
    average_order_value_minor: int
    wallet_order_count: int


@dataclass(frozen=True)
class WalletFigures:
    adopted: bool
    net_deposits_minor: int
    average_balance_minor: int
    has_wallet: bool


@dataclass(frozen=True)
class PointsFigures:
    mechanic_points: int  # WALLET_INTEREST + CASHBACK credited: the points cost of the mechanic
    activity_credits: int


def _order(row: checkout_pb2.OrderStatistics) -> OrderFigures:
    return OrderFigures(
        row.order_count, row.gmv.amount_minor, row.average_order_value.amount_minor, row.wallet_order_count
    )


def _wallet(row: wallet_pb2.WalletStatistics) -> WalletFigures:
    return WalletFigures(
        row.adopted, row.net_deposits.amount_minor, row.average_balance.amount_minor, row.HasField("wallet_open_time")
    )


def _points(row: points_pb2.PointsStatistics) -> PointsFigures:
    cost = sum(s.points for s in row.credited_by_source if s.source in MECHANIC_SOURCES)
    return PointsFigures(cost, row.activity_credits)


class PeerStatistics:
    """The three statistics RPCs, batched and paged."""

    def __init__(self, peers: Peers, *, deadline_ms: int | None = None) -> None:
        self._peers = peers
        self._deadline_ms = deadline_ms

    def _pages(self, method: Callable[..., Any], request: Any) -> Iterator[Any]:
        while True:
            response = self._peers.call(method, request, idempotent=True, deadline_ms=self._deadline_ms)
            yield from response.statistics
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def _for(
        self, method: Callable[..., Any], request_type: Any, customers: Sequence[str], start: datetime, end: datetime
    ) -> Iterator[Any]:
        for offset in range(0, len(customers), BATCH):
            request = request_type(
                start_time=to_timestamp(start),
                end_time=to_timestamp(end),
                customer_ids=customers[offset : offset + BATCH],
            )
            yield from self._pages(method, request)

    def _everyone(self, method: Callable[..., Any], request_type: Any, start: datetime, end: datetime) -> Iterator[Any]:
        request = request_type(start_time=to_timestamp(start), end_time=to_timestamp(end), page_size=BATCH)
        yield from self._pages(method, request)

    # --- Checkout ---

    def _checkout(self) -> Any:
        return self._peers.stub("checkout", checkout_pb2_grpc.CheckoutServiceStub).ListOrderStatistics

    def orders(self, customers: Sequence[str], start: datetime, end: datetime) -> dict[str, OrderFigures]:
        rows = self._for(self._checkout(), checkout_pb2.ListOrderStatisticsRequest, customers, start, end)
        return {row.customer_id: _order(row) for row in rows}

    def all_orders(self, start: datetime, end: datetime) -> Iterator[tuple[str, OrderFigures]]:
        for row in self._everyone(self._checkout(), checkout_pb2.ListOrderStatisticsRequest, start, end):
            yield row.customer_id, _order(row)

    # --- Wallet ---

    def _wallet_method(self) -> Any:
        return self._peers.stub("wallet", wallet_pb2_grpc.WalletServiceStub).ListWalletStatistics

    def wallets(self, customers: Sequence[str], start: datetime, end: datetime) -> dict[str, WalletFigures]:
        rows = self._for(self._wallet_method(), wallet_pb2.ListWalletStatisticsRequest, customers, start, end)
        return {row.customer_id: _wallet(row) for row in rows}

    def all_wallets(self, start: datetime, end: datetime) -> Iterator[tuple[str, WalletFigures]]:
        for row in self._everyone(self._wallet_method(), wallet_pb2.ListWalletStatisticsRequest, start, end):
            yield row.customer_id, _wallet(row)

    # --- Points ---

    def _points_method(self) -> Any:
        return self._peers.stub("points", points_pb2_grpc.PointsServiceStub).ListPointsStatistics

    def points(self, customers: Sequence[str], start: datetime, end: datetime) -> dict[str, PointsFigures]:
        rows = self._for(self._points_method(), points_pb2.ListPointsStatisticsRequest, customers, start, end)
        return {row.customer_id: _points(row) for row in rows}

    def all_points(self, start: datetime, end: datetime) -> Iterator[tuple[str, PointsFigures]]:
        for row in self._everyone(self._points_method(), points_pb2.ListPointsStatisticsRequest, start, end):
            yield row.customer_id, _points(row)
