"""Benchmark: sample and assign 100,000 of 1,000,000 customers, compute the results, on PostgreSQL.

    .venv/bin/python -m bench.experiments [--customers 1000000] [--sample 100000] [--import-rows 1000000]

What runs: the real Promotions service (in this process, over gRPC on localhost) on a fresh
PostgreSQL database created for the run and dropped after it (BENCH_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/postgres). The population's features are generated in the
database by one INSERT ... SELECT over generate_series. Wallet, Points and Checkout statistics come
from a stand-in gRPC server in this process that computes each customer's figures from a hash of
the id (building 100,000 real wallets is not what is measured here): the figures include the real
batching (1,000 customers per call, three peers) and the transport, not the peers' own SQL.

Measured: feature import through the client stream (optional), DrawSample (read the latest
features of every customer, stratify, sample, assign, insert the assignments), a batch mechanic
look-up, and GetExperimentResults (peer statistics for every participant, exact statistics).
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
from loyalty.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from loyalty.common.v1 import mechanic_pb2, money_pb2
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from loyalty.promotions.v1 import experiments_pb2 as pb
from loyalty.promotions.v1 import experiments_pb2_grpc, promotions_pb2, promotions_pb2_grpc
from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from sqlalchemy.engine import make_url

from services.promotions.bootstrap import build
from shared.db import normalise_url
from shared.protoconv import to_timestamp
from shared.settings import ServiceSettings

AS_OF = datetime(2026, 1, 1, tzinfo=UTC)


def figures(customer: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(customer.encode()).digest()
    return digest[0] * 10_000, digest[1] % 6, digest[2] * 100


def money(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code="RUB")


class StandInPeers(
    wallet_pb2_grpc.WalletServiceServicer,
    points_pb2_grpc.PointsServiceServicer,
    checkout_pb2_grpc.CheckoutServiceServicer,
):
    def ListWalletStatistics(self, request: wallet_pb2.ListWalletStatisticsRequest, context: object) -> object:
        rows = []
        for c in request.customer_ids:
            balance, _, _ = figures(c)
            rows.append(
                wallet_pb2.WalletStatistics(
                    customer_id=c, adopted=balance > 0, net_deposits=money(balance), average_balance=money(balance // 2)
                )
            )
        return wallet_pb2.ListWalletStatisticsResponse(statistics=rows)

    def ListPointsStatistics(self, request: points_pb2.ListPointsStatisticsRequest, context: object) -> object:
        rows = []
        for c in request.customer_ids:
            _, _, cost = figures(c)
            source = points_pb2.SourceTotal(source=points_pb2.POINTS_SOURCE_WALLET_INTEREST, points=cost // 100)
            rows.append(points_pb2.PointsStatistics(customer_id=c, credited_by_source=[source]))
        return points_pb2.ListPointsStatisticsResponse(statistics=rows)

    def ListOrderStatistics(self, request: checkout_pb2.ListOrderStatisticsRequest, context: object) -> object:
        rows = []
        for c in request.customer_ids:
            _, orders, gmv = figures(c)
            rows.append(checkout_pb2.OrderStatistics(customer_id=c, order_count=orders, gmv=money(gmv * orders)))
        return checkout_pb2.ListOrderStatisticsResponse(statistics=rows)


@contextmanager
def timed(label: str, results: list[tuple[str, float]]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    results.append((label, elapsed))
    print(f"{label}: {elapsed:.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=100_000)
    parser.add_argument("--import-rows", type=int, default=1_000_000, help="rows sent through ImportCustomerFeatures")
    args = parser.parse_args()

    server_url = normalise_url(os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    url = make_url(server_url)
    name = f"bench_experiments_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(
        host=url.host or "127.0.0.1", port=url.port or 5432, user=url.username or "postgres", password=url.password,
        dbname=url.database or "postgres", autocommit=True,
    )  # fmt: skip
    admin.execute(f'CREATE DATABASE "{name}"')
    database_url = url.set(database=name).render_as_string(hide_password=False)

    peers_server = grpc.server(ThreadPoolExecutor(max_workers=8))
    stand_in = StandInPeers()  # type: ignore[abstract]
    wallet_pb2_grpc.add_WalletServiceServicer_to_server(stand_in, peers_server)
    points_pb2_grpc.add_PointsServiceServicer_to_server(stand_in, peers_server)
    checkout_pb2_grpc.add_CheckoutServiceServicer_to_server(stand_in, peers_server)
    peers_target = f"127.0.0.1:{peers_server.add_insecure_port('127.0.0.1:0')}"
    peers_server.start()

    environ = {
        "PROMOTIONS_PORT": "0",
        "PROMOTIONS_DATABASE_URL": database_url,
        "WALLET_TARGET": peers_target,
        "POINTS_TARGET": peers_target,
        "CHECKOUT_TARGET": peers_target,
        "PEER_DEADLINE_MS": "30000",
        "OTEL_TRACES_EXPORTER": "none",
        "LOG_LEVEL": "WARNING",
    }
    app = build(ServiceSettings.from_env("promotions", environ))
    port = app.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)])
    experiments = experiments_pb2_grpc.ExperimentsServiceStub(channel)
    promotions = promotions_pb2_grpc.PromotionsServiceStub(channel)
    results: list[tuple[str, float]] = []
    try:
        plain_url = database_url.replace("postgresql+psycopg", "postgresql")
        label = f"generate {args.customers:,} feature rows (INSERT ... SELECT generate_series)"
        with timed(label, results), psycopg.connect(plain_url) as connection:
            connection.execute(
                "INSERT INTO customer_features (customer_id, average_order_value_minor, order_count, lookback_days,"
                " uses_financial_products, takes_part_in_points_activities, as_of, source)"
                " SELECT 'c-' || lpad(n::text, 8, '0'), (hashtext('aov' || n) & 1048575) * 1,"
                " hashtext('orders' || n) & 15, 180, (hashtext('fin' || n) & 3) = 0,"
                " (hashtext('pts' || n) & 1) = 0,"
                " %s, 'IMPORTED' FROM generate_series(1, %s) AS n",
                (AS_OF, args.customers),
            )
            connection.execute("ANALYZE customer_features")
        if args.import_rows:
            older_stamp = to_timestamp(AS_OF - timedelta(days=30))

            def stream() -> Iterator[pb.ImportCustomerFeaturesRequest]:
                key = "bench-import"
                for offset in range(0, args.import_rows, 10_000):
                    batch = [
                        promotions_pb2.CustomerFeatures(
                            customer_id=f"c-{n:08d}",
                            average_order_value=money(150_000),
                            order_count=3,
                            lookback_days=180,
                            as_of=older_stamp,
                        )
                        for n in range(offset + 1, min(offset + 10_000, args.import_rows) + 1)
                    ]
                    yield pb.ImportCustomerFeaturesRequest(request_id=key, features=batch)

            with timed(f"ImportCustomerFeatures, {args.import_rows:,} rows in batches of 10,000", results):
                summary = experiments.ImportCustomerFeatures(stream(), timeout=3600)
            print(f"  imported {summary.rows_imported:,}, rejected {summary.rows_rejected:,}")

        apr_18 = mechanic_pb2.Mechanic(
            interest=mechanic_pb2.InterestMechanic(apr_bps=1800, basis=mechanic_pb2.BALANCE_BASIS_AVERAGE_DAILY)
        )
        cashback = mechanic_pb2.Mechanic(
            cashback=mechanic_pb2.CashbackMechanic(
                tiers=[mechanic_pb2.CashbackTier(min_balance_minor=1_000_000, rate_bps=300)]
            )
        )
        experiment = pb.Experiment(
            name="bench",
            salt="bench-salt",
            sample_size=args.sample,
            strata=pb.StrataDefinition(
                average_order_value_edges_minor=[300_000, 700_000],
                order_count_edges=[3, 8],
                by_financial_products=True,
                by_points_activities=True,
            ),
            variants=[
                pb.Variant(variant_id="control", control=True, weight=2),
                pb.Variant(variant_id="apr-18", weight=1, mechanic=apr_18),
                pb.Variant(variant_id="cashback", weight=1, mechanic=cashback),
            ],
        )
        created = experiments.CreateExperiment(
            pb.CreateExperimentRequest(request_id="bench-create", experiment=experiment), timeout=30
        ).experiment
        eid = created.experiment_id
        with timed(f"DrawSample: {args.sample:,} of {args.customers:,}, 36 strata, 3 variants", results):
            drawn = experiments.DrawSample(
                pb.DrawSampleRequest(request_id="bench-draw", experiment_id=eid), timeout=3600
            )
        print(f"  eligible {drawn.eligible_count:,}, sampled {drawn.sampled_count:,}, srm passed {drawn.srm.passed}")
        experiments.StartExperiment(pb.StartExperimentRequest(request_id="bench-start", experiment_id=eid), timeout=30)
        sample_ids = [f"c-{n:08d}" for n in range(1, 1001)]
        with timed("BatchGetCustomerMechanics, 1,000 customers", results):
            promotions.BatchGetCustomerMechanics(
                promotions_pb2.BatchGetCustomerMechanicsRequest(customer_ids=sample_ids), timeout=60
            )
        with timed(f"GetExperimentResults over {args.sample:,} participants", results):
            answer = experiments.GetExperimentResults(pb.GetExperimentResultsRequest(experiment_id=eid), timeout=3600)
        print(
            f"  variants {[v.customers for v in answer.variants]}, recommendation {answer.recommendation.variant_id!r}"
        )
    finally:
        channel.close()
        app.stop()
        peers_server.stop(0)
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
