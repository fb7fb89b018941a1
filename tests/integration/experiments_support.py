"""A thin client over ExperimentsService, feature rows, and a stand-in for Checkout's statistics.

`FakeCheckout` is a test double for a peer: a real in-process gRPC server that answers
ListOrderStatistics from prepared rows, so results tests control orders and GMV without placing
orders (one test computes features against the real Checkout). Wallet and Points are always the
real services.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import grpc
from loyalty.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from loyalty.common.v1 import mechanic_pb2, money_pb2
from loyalty.promotions.v1 import experiments_pb2 as pb
from loyalty.promotions.v1 import experiments_pb2_grpc, promotions_pb2

from shared.protoconv import to_timestamp
from tests.clients import rid


def rub(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code="RUB")


def features(
    customer: str,
    as_of: datetime,
    *,
    aov_minor: int = 150_000,
    orders: int = 3,
    fin: bool = False,
    pts: bool = False,
    lookback: int = 180,
) -> promotions_pb2.CustomerFeatures:
    return promotions_pb2.CustomerFeatures(
        customer_id=customer,
        average_order_value=rub(aov_minor),
        order_count=orders,
        lookback_days=lookback,
        uses_financial_products=fin,
        takes_part_in_points_activities=pts,
        as_of=to_timestamp(as_of),
    )


def interest(apr_bps: int, code: str = "") -> mechanic_pb2.Mechanic:
    return mechanic_pb2.Mechanic(
        code=code or f"interest-{apr_bps}",
        name=f"Interest {apr_bps} bps",
        interest=mechanic_pb2.InterestMechanic(apr_bps=apr_bps, basis=mechanic_pb2.BALANCE_BASIS_AVERAGE_DAILY),
    )


CASHBACK = mechanic_pb2.Mechanic(
    code="cashback-3-5",
    name="Cashback 3-5 %",
    cashback=mechanic_pb2.CashbackMechanic(
        tiers=[
            mechanic_pb2.CashbackTier(min_balance_minor=1_000_000, rate_bps=300),
            mechanic_pb2.CashbackTier(min_balance_minor=5_000_000, rate_bps=500),
        ]
    ),
)


def three_arms(**fields: Any) -> pb.Experiment:
    """control, apr-18 and cashback, equal weights, stratified by AOV and financial products."""
    fields.setdefault("name", "Wallet mechanics pilot")
    fields.setdefault("salt", "pilot-2026")
    fields.setdefault("sample_size", 90)
    fields.setdefault(
        "strata",
        pb.StrataDefinition(average_order_value_edges_minor=[100_000, 300_000], by_financial_products=True),
    )
    fields.setdefault(
        "variants",
        [
            pb.Variant(variant_id="control", name="Control", control=True, weight=1),
            pb.Variant(variant_id="apr-18", name="18 % a year", mechanic=interest(1800, "interest-18"), weight=1),
            pb.Variant(variant_id="cashback", name="Cashback", mechanic=CASHBACK, weight=1),
        ],
    )
    return pb.Experiment(**fields)


class ExperimentsClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = experiments_pb2_grpc.ExperimentsServiceStub(channel)

    def import_features(
        self, batches: Sequence[Sequence[promotions_pb2.CustomerFeatures]], request_id: str | None = None
    ) -> pb.ImportCustomerFeaturesResponse:
        key = request_id or rid()
        messages = iter([pb.ImportCustomerFeaturesRequest(request_id=key, features=list(b)) for b in batches])
        return self.stub.ImportCustomerFeatures(messages, timeout=60)

    def features(self, customer: str) -> promotions_pb2.CustomerFeatures:
        return self.stub.GetCustomerFeatures(pb.GetCustomerFeaturesRequest(customer_id=customer), timeout=10).features

    def create(self, experiment: pb.Experiment, request_id: str | None = None) -> pb.Experiment:
        return self.stub.CreateExperiment(
            pb.CreateExperimentRequest(request_id=request_id or rid(), experiment=experiment), timeout=10
        ).experiment

    def get(self, experiment_id: str) -> pb.Experiment:
        return self.stub.GetExperiment(pb.GetExperimentRequest(experiment_id=experiment_id), timeout=10).experiment

    def draw(self, experiment_id: str, request_id: str | None = None) -> pb.DrawSampleResponse:
        return self.stub.DrawSample(
            pb.DrawSampleRequest(request_id=request_id or rid(), experiment_id=experiment_id), timeout=60
        )

    def start(self, experiment_id: str, at: datetime | None = None) -> pb.Experiment:
        request = pb.StartExperimentRequest(request_id=rid(), experiment_id=experiment_id)
        if at is not None:
            request.start_time.CopyFrom(to_timestamp(at))
        return self.stub.StartExperiment(request, timeout=10).experiment

    def end(self, experiment_id: str) -> pb.Experiment:
        return self.stub.EndExperiment(
            pb.EndExperimentRequest(request_id=rid(), experiment_id=experiment_id, reason="test"), timeout=10
        ).experiment

    def rollout(self, experiment_id: str, variant_id: str, at: datetime | None = None) -> pb.RolloutExperimentResponse:
        request = pb.RolloutExperimentRequest(
            request_id=rid(), experiment_id=experiment_id, variant_id=variant_id, reason="won", operator_id="op-1"
        )
        if at is not None:
            request.effective_time.CopyFrom(to_timestamp(at))
        return self.stub.RolloutExperiment(request, timeout=10)

    def assignment(self, experiment_id: str, customer: str) -> pb.Assignment:
        return self.stub.GetAssignment(
            pb.GetAssignmentRequest(experiment_id=experiment_id, customer_id=customer), timeout=10
        ).assignment

    def assignments(self, experiment_id: str, **filters: Any) -> list[pb.Assignment]:
        found: list[pb.Assignment] = []
        token = ""
        while True:
            page = self.stub.ListAssignments(
                pb.ListAssignmentsRequest(experiment_id=experiment_id, page_size=1000, page_token=token, **filters),
                timeout=30,
            )
            found.extend(page.assignments)
            token = page.next_page_token
            if not token:
                return found

    def results(self, experiment_id: str, **fields: Any) -> pb.GetExperimentResultsResponse:
        return self.stub.GetExperimentResults(
            pb.GetExperimentResultsRequest(experiment_id=experiment_id, **fields), timeout=120
        )


class FakeCheckout(checkout_pb2_grpc.CheckoutServiceServicer):
    """Checkout's ListOrderStatistics from prepared rows: (order count, GMV in kopecks) per customer."""

    def __init__(self, rows: dict[str, tuple[int, int]] | None = None) -> None:
        self.rows = rows or {}
        self.requests: list[checkout_pb2.ListOrderStatisticsRequest] = []

    def _row(self, customer: str) -> checkout_pb2.OrderStatistics:
        count, gmv = self.rows.get(customer, (0, 0))
        return checkout_pb2.OrderStatistics(
            customer_id=customer, order_count=count, gmv=rub(gmv), average_order_value=rub(gmv // count if count else 0)
        )

    def ListOrderStatistics(
        self, request: checkout_pb2.ListOrderStatisticsRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.ListOrderStatisticsResponse:
        self.requests.append(request)
        if request.customer_ids:
            return checkout_pb2.ListOrderStatisticsResponse(statistics=[self._row(c) for c in request.customer_ids])
        everyone = sorted(c for c, (count, _) in self.rows.items() if count > 0)
        start = int(request.page_token or 0)
        size = request.page_size or 1000
        page = everyone[start : start + size]
        token = str(start + size) if start + size < len(everyone) else ""
        return checkout_pb2.ListOrderStatisticsResponse(statistics=[self._row(c) for c in page], next_page_token=token)


def serve_checkout(fake: FakeCheckout) -> Iterator[str]:
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    checkout_pb2_grpc.add_CheckoutServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)
