"""Ledger invariants on the real database: every transfer sums to zero, each balance is the sum of
its postings, the statement agrees, and the database itself refuses an overdraft."""

from __future__ import annotations

import itertools

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loyalty.wallet.v1 import wallet_pb2
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tests.harness import Harness
from tests.integration.wallet_support import WalletClient

_customers = itertools.count(1)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("top_up"), st.integers(min_value=10_000, max_value=300_000)),
        st.tuples(st.just("hold"), st.integers(min_value=1, max_value=200_000)),
        st.tuples(st.just("capture"), st.integers(min_value=0, max_value=5), st.integers(min_value=1, max_value=100)),
        st.tuples(st.just("release"), st.integers(min_value=0, max_value=5)),
        st.tuples(st.just("refund"), st.integers(min_value=0, max_value=5), st.integers(min_value=1, max_value=50_000)),
    ),
    min_size=1,
    max_size=12,
)


def assert_ledger_invariants(wallet: WalletClient) -> None:
    unbalanced = wallet.sql(
        "SELECT transfer_id FROM ledger_postings GROUP BY transfer_id HAVING sum(amount_minor) <> 0"
    )
    assert unbalanced == []
    assert wallet.sql("SELECT coalesce(sum(amount_minor), 0) FROM ledger_postings")[0][0] == 0
    rows = wallet.sql(
        "SELECT w.wallet_id, w.balance_minor, w.held_minor,"
        " (SELECT coalesce(sum(p.amount_minor), 0) FROM ledger_postings p"
        "  WHERE p.account_id = 'wallet:' || w.wallet_id),"
        " (SELECT coalesce(sum(p.amount_minor), 0) FROM ledger_postings p"
        "  WHERE p.account_id = 'holds:' || w.wallet_id),"
        " (SELECT e.balance_after_minor FROM statement_entries e WHERE e.wallet_id = w.wallet_id"
        "  ORDER BY e.id DESC LIMIT 1)"
        " FROM wallets w"
    )
    for _wallet_id, balance, held, available_postings, held_postings, last_statement in rows:
        assert 0 <= held <= balance
        assert balance - held == available_postings
        assert held == held_postings
        assert (last_statement or 0) == balance


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=operations)
def test_any_sequence_of_operations_keeps_the_ledger_balanced(
    harness: Harness, steps: list[tuple[str | int, ...]]
) -> None:
    service = harness.running.get("wallet") or harness.start("wallet", background_relay=False)
    wallet = WalletClient(service)
    customer = f"prop-{next(_customers)}"
    holds: list[str] = []
    for step in steps:
        kind = step[0]
        try:
            if kind == "top_up":
                wallet.top_up(customer, int(step[1]))
            elif kind == "hold":
                holds.append(wallet.hold(customer, int(step[1])).hold_id)
            elif holds and kind == "capture":
                hold = wallet.stub.GetHold(wallet_pb2.GetHoldRequest(hold_id=holds[int(step[1]) % len(holds)])).hold
                wallet.capture(hold.hold_id, max(1, hold.amount.amount_minor * int(step[2]) // 100))
            elif holds and kind == "release":
                wallet.release(holds[int(step[1]) % len(holds)])
            elif holds and kind == "refund":
                wallet.refund(holds[int(step[1]) % len(holds)], int(step[2]))
        except grpc.RpcError:
            pass  # refused operations (insufficient funds, wrong state) must change nothing
        assert_ledger_invariants(wallet)


def test_the_database_refuses_a_negative_balance_or_a_hold_above_it(harness: Harness) -> None:
    service = harness.start("wallet")
    wallet = WalletClient(service)
    wallet.top_up("c-1", 10_000)
    engine = service.app.runtime.db.engine
    for statement in (
        "UPDATE wallets SET balance_minor = -1",
        "UPDATE wallets SET held_minor = balance_minor + 1",
        "UPDATE wallets SET held_minor = -1",
    ):
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text(statement))
    assert wallet.balance("c-1") == 10_000
