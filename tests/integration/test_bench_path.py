"""The request-path benchmark harness itself works: `bench.path` at a tiny scale (three customers,
a few orders, half-second loads) starts the real processes, produces every figure, counts the RPCs
of an order, and the balances reconcile afterwards. No timing is asserted: figures are not tests.

On SQLite, or on the test PostgreSQL when TEST_DATABASE_URL is set (databases `test_bench_*`,
dropped by the harness)."""

from __future__ import annotations

from bench.path import SERVICES, parse, run, summarise
from tests.harness import test_database_url as database_url


def test_tiny_run_produces_figures_and_reconciles() -> None:
    url = database_url()
    where = ["--database-url", url, "--db-prefix", "test_bench"] if url else ["--sqlite"]
    args = parse(
        [
            *where,
            "--skip-echo",
            "--customers",
            "3",
            "--c1-seconds",
            "0.5",
            "--stats-wait",
            "0.5",
            "--concurrency",
            "2",
            "--seconds",
            "0.5",
            "--warmup",
            "0.2",
            "--latency-seconds",
            "0.5",
            "--read-seconds",
            "0.5",
            "--read-concurrency",
            "2",
        ]
    )
    report = run(args)

    cost = report["order_cost"]
    assert cost["orders"] >= 1
    # Counted, not guessed: the gateway's call and one call per saga step and per peer read.
    hops = cost["rpcs_per_order"]
    assert hops["CheckoutService/PlaceOrder"] == 1.0
    for method in ("PointsService/HoldPoints", "PointsService/CaptureHold", "WalletService/HoldMoney"):
        assert hops[method] == 1.0, hops
    assert cost["hops_per_order"] == sum(hops.values())
    # Pricing asks the Wallet for the balance only (read_mask): no mechanic look-up behind it.
    assert hops["WalletService/GetWallet"] == 1.0 and "PromotionsService/GetCustomerMechanic" not in hops, hops
    if url:
        assert set(cost["transactions_per_order"]) == set(SERVICES)
    # CPU of every process per order, and of the machine (which includes the processes).
    cpu = cost["cpu_ms_per_order"]
    assert set(cpu) == {*SERVICES, "gateway", "machine"}
    assert cpu["checkout"] > 0 and cpu["machine"] >= max(cpu[name] for name in SERVICES)
    # Every answer, in the measured window or not (a loaded machine may leave a half-second
    # window empty): the figures are produced from them, whatever they say.
    assert sum(report["saturation"][0]["answered"].values()) >= 1
    assert sum(report["latency_at_half"]["answered"].values()) >= 1
    for scenario in ("quote", "wallet", "points"):
        answered = report["reads"][scenario][0]["answered"]
        assert set(answered) == {"200"} and answered["200"] >= 1, answered
    assert set(report["memory_after"]) == {*SERVICES, "gateway"}
    assert all(memory["rss_mib"] > 0 for memory in report["memory_idle"].values())

    reconciliation = report["reconciliation"]
    assert reconciliation["ok"], reconciliation
    assert reconciliation["orders_by_status"]["PAID"] >= reconciliation["orders_answered_201"] >= 1


def test_profile_summary_counts_inclusive_and_self_samples() -> None:
    raw = "main (a.py:1);work (b.py:2);query (c.py:3) 3\nmain (a.py:1);work (b.py:9) 1\n"
    text = summarise(raw)
    assert text.startswith("4 samples")
    assert " 100.0%  main (a.py)" in text
    assert "  75.0%  query (c.py)" in text
    assert "  25.0%  work (b.py)" in text
