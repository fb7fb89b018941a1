"""The set-based batch jobs on small data: interest posted in chunks (a crash between chunks
resumes without a double credit, a re-run changes nothing), BatchCreditPoints written set-based
answering each item as CreditPoints would, a batch refused in part kept as a dead letter, and the
set-based expiry in chunks. One platform for the module (cheap on PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest
from loyalty.common.v1 import mechanic_pb2
from loyalty.points.v1 import points_pb2 as pb
from loyalty.promotions.v1 import promotions_pb2, promotions_pb2_grpc
from sqlalchemy import select, text, update

from services.wallet.adapters import points_peer
from shared.clock import ManualClock
from shared.errors import PeerUnavailable
from shared.outbox import OutboxStatus
from tests.clients import SOURCE, PointsClient, rid
from tests.harness import Databases, Harness, RunningService
from tests.integration.test_points_ledger import assert_consistent
from tests.integration.wallet_support import WalletClient, error_of

DAY = timedelta(days=1)
INTEREST = mechanic_pb2.Mechanic(
    code="interest-1200-average",
    name="12 % on the average",
    interest=mechanic_pb2.InterestMechanic(apr_bps=1200, basis=mechanic_pb2.BALANCE_BASIS_AVERAGE_DAILY),
)


class FlakyPromotions(promotions_pb2_grpc.PromotionsServiceServicer):
    """Everyone on 12 %; from look-up number `fail_at` (1-based) on, UNAVAILABLE, when armed."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail_at = 0

    def BatchGetCustomerMechanics(
        self, request: promotions_pb2.BatchGetCustomerMechanicsRequest, context: grpc.ServicerContext
    ) -> promotions_pb2.BatchGetCustomerMechanicsResponse:
        self.calls += 1
        if self.fail_at and self.calls >= self.fail_at:
            context.abort(grpc.StatusCode.UNAVAILABLE, "promotions went away")
        return promotions_pb2.BatchGetCustomerMechanicsResponse(
            mechanics=[promotions_pb2.CustomerMechanic(customer_id=c, mechanic=INTEREST) for c in request.customer_ids]
        )


@dataclass
class Jobs:
    clock: ManualClock
    points: RunningService
    api: PointsClient
    wallet: WalletClient
    promotions: FlakyPromotions
    expiry: PointsClient  # a Points of its own, so the expiry counts are this module's alone


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    databases = Databases(tmp_path_factory.mktemp("batch-jobs"))
    clock = ManualClock(datetime(2026, 1, 10, 9, tzinfo=UTC))
    harness = Harness(databases, clock)
    promotions = FlakyPromotions()  # type: ignore[abstract]  # only the batch look-up is needed
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    promotions_pb2_grpc.add_PromotionsServiceServicer_to_server(promotions, server)
    promotions_target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        expiry = harness.start("points", POINTS_EXPIRY_CHUNK_SIZE="2")
        points = harness.start("points")
        wallet = harness.start(
            "wallet", peers={"promotions": promotions_target}, background_relay=False, WALLET_INTEREST_CHUNK_SIZE="2"
        )
        yield Jobs(
            clock,
            points,
            PointsClient(points.channel()),
            WalletClient(wallet),
            promotions,
            PointsClient(expiry.channel()),
        )
    finally:
        harness.close()
        server.stop(0)
        databases.drop_all()


def outbox(wallet: WalletClient) -> list[tuple[str, int, str]]:
    return [(row[0], len(pb.BatchCreditPointsRequest.FromString(row[1]).requests), row[2] or "") for row in
            wallet.sql("SELECT status, payload, last_error FROM outbox_messages ORDER BY id")]  # fmt: skip


def test_interest_in_chunks_resumes_after_a_crash_between_chunks_without_a_double_credit(jobs: Jobs) -> None:
    wallet, clock = jobs.wallet, jobs.clock
    customers = [f"int-{n}" for n in range(5)]
    for customer in customers:
        wallet.top_up(customer, 1_000_000)  # 10,000 RUB from 10 January: 100 x 22/31 = 70.967741 points
    clock.set(datetime(2026, 2, 1, 9, tzinfo=UTC))
    assert wallet.service is not None
    relay = wallet.service.app.runtime.relay

    jobs.promotions.calls, jobs.promotions.fail_at = 0, 2  # the second chunk's mechanics: the run dies
    assert isinstance(error_of(wallet.post_interest, "2026-01"), PeerUnavailable)
    assert wallet.sql("SELECT count(*) FROM interest_accruals") == [(2,)]  # the first chunk committed whole
    assert outbox(wallet) == [("PENDING", 2, "")]  # ... with its credits
    assert relay.deliver_due() == 1

    jobs.promotions.fail_at = 0
    resumed = wallet.post_interest("2026-01")
    assert (resumed.wallets_posted, resumed.wallets_already_posted, resumed.points_posted) == (3, 2, 3 * 70)
    assert relay.deliver_due() == 2
    again = wallet.post_interest("2026-01")  # a re-run posts and queues nothing
    assert (again.wallets_posted, again.wallets_already_posted) == (0, 5)
    assert relay.deliver_due() == 0
    assert outbox(wallet) == [("DELIVERED", 2, ""), ("DELIVERED", 2, ""), ("DELIVERED", 1, "")]
    for customer in customers:
        [accrual] = wallet.accruals(customer)
        assert (accrual.points, accrual.carry_out_micro_points) == (70, 967_741)
        [lot] = jobs.api.lots(customer)
        assert (lot.amount, lot.source) == (70, pb.POINTS_SOURCE_WALLET_INTEREST)
        assert assert_consistent(jobs.api, customer).available == 70


def credit_item(
    customer: str, points: int, *, request_id: str | None = None, pending: bool = False, reference: str = ""
) -> pb.CreditPointsRequest:
    return pb.CreditPointsRequest(
        request_id=request_id or rid(),
        customer_id=customer,
        points=points,
        source=SOURCE["PURCHASE" if pending else "PROFILE_ACTION"],
        pending=pending,
        reference=reference or f"ref-{rid()}",
    )


def test_a_batch_answers_each_item_as_credit_points_would(jobs: Jobs) -> None:
    api, clock = jobs.api, jobs.clock
    api.credit("due-1", 30, expires_at=clock.now() + DAY)  # expired when the batch arrives: settled first
    single = api.credit("single-1", 7, request_id="credited-alone")
    clock.advance(2 * DAY)
    items = [
        credit_item("bulk-1", 10),
        credit_item("bulk-2", 20),
        credit_item("bulk-1", 5),  # a second credit of the same customer in the batch
        credit_item("due-1", 40),
        credit_item("pending-1", 50, pending=True, reference="order-1"),
        pb.CreditPointsRequest(  # the single credit again, inside a batch: its first lot
            request_id="credited-alone", customer_id="single-1", points=7, source=SOURCE["CAMPAIGN"]
        ),
        credit_item("bulk-3", 1, request_id="twice", reference="r"),
        credit_item("bulk-3", 1, request_id="twice", reference="r"),  # the same request twice: one credit
        credit_item("bulk-3", 2, request_id="twice", reference="r"),  # the same id, another request: refused
        credit_item("bulk-4", 0),  # refused: not positive
    ]
    batch = pb.BatchCreditPointsRequest(request_id=rid(), requests=items)
    answer = api.stub.BatchCreditPoints(batch)
    results = list(answer.results)
    assert [r.request_id for r in results] == [i.request_id for i in items]
    assert [r.error_reason for r in results] == [""] * 8 + ["IDEMPOTENCY_KEY_REUSED", "INVALID_POINTS_AMOUNT"]
    assert results[5].lot == single
    assert results[6].lot == results[7].lot and results[6].lot.amount == 1
    assert results[4].lot.status == pb.LOT_STATUS_PENDING
    assert api.stub.BatchCreditPoints(batch) == answer  # a replayed batch answers the same
    again = api.stub.BatchCreditPoints(pb.BatchCreditPointsRequest(request_id=rid(), requests=items[:2]))
    assert [r.lot for r in again.results] == [r.lot for r in results[:2]]  # items answer their first lot

    for customer, available, pending in [
        ("bulk-1", 15, 0), ("bulk-2", 20, 0), ("bulk-3", 1, 0), ("due-1", 40, 0), ("pending-1", 0, 50),
        ("single-1", 7, 0), ("bulk-4", 0, 0),
    ]:  # fmt: skip
        balance = assert_consistent(api, customer)
        assert (balance.available, balance.pending) == (available, pending), customer
    lines = api.history("due-1")  # newest first: the expiry was settled before the credit
    assert [line.type for line in lines] == [pb.HISTORY_ENTRY_TYPE_CREDITED, pb.HISTORY_ENTRY_TYPE_EXPIRED,
                                             pb.HISTORY_ENTRY_TYPE_CREDITED]  # fmt: skip
    credited = [line for line in api.history("bulk-1") if line.type == pb.HISTORY_ENTRY_TYPE_CREDITED]
    assert sorted(line.available_delta for line in credited) == [5, 10]
    assert all(line.description.startswith("Credited") and line.lot_id for line in credited)


def test_a_batch_writes_a_new_customers_account_once_with_its_credits(jobs: Jobs) -> None:
    """The set-based credits lock the existing accounts and create the missing ones with their
    points in the same statement that adds to the others: no account is created empty and then
    updated (two row versions), except for a pending credit, whose `Book` needs the account."""
    from sqlalchemy import event

    api = jobs.api
    api.credit("once-old", 4)
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(" ".join(statement.split()))

    engine = jobs.points.app.runtime.db.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        answer = api.stub.BatchCreditPoints(
            pb.BatchCreditPointsRequest(
                request_id=rid(),
                requests=[
                    credit_item("once-new-1", 10),
                    credit_item("once-new-1", 5),
                    credit_item("once-new-2", 20),
                    credit_item("once-old", 6),
                ],
            )
        )
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert [r.error_reason for r in answer.results] == [""] * 4
    accounts = [s for s in statements if "accounts" in s and not s.startswith("SELECT")]
    assert not [s for s in accounts if s.startswith("UPDATE")], accounts
    assert [s for s in accounts if "ON CONFLICT (customer_id) DO NOTHING" in s] == [], accounts  # none created empty
    [upsert] = [s for s in accounts if "ON CONFLICT (customer_id) DO UPDATE" in s]
    assert upsert.startswith("INSERT INTO accounts")
    for customer, available in [("once-new-1", 15), ("once-new-2", 20), ("once-old", 10)]:
        assert assert_consistent(api, customer).available == available, customer
    with jobs.points.app.runtime.db.unit_of_work() as uow:
        rows = uow.session.execute(
            text("SELECT customer_id, available FROM accounts WHERE customer_id LIKE 'once-%' ORDER BY 1")
        ).all()
    assert [tuple(row) for row in rows] == [("once-new-1", 15), ("once-new-2", 20), ("once-old", 10)]


def test_a_batch_refused_in_part_keeps_the_refused_items_as_a_dead_message(jobs: Jobs) -> None:
    wallet, api = jobs.wallet, jobs.api
    api.credit("taken", 3, request_id="interest:w-x:2026-01")  # the id is taken by another request
    assert wallet.service is not None
    service = wallet.service.app.runtime
    request = pb.BatchCreditPointsRequest(
        request_id="partial-batch",
        requests=[
            credit_item("partial-ok", 9, request_id="partial-ok"),
            credit_item("partial-bad", 0, request_id="partial-bad"),
            credit_item("taken", 4, request_id="interest:w-x:2026-01"),
        ],
    )
    before = len(outbox(wallet))
    with service.db.unit_of_work() as uow:
        service.outbox.enqueue(uow, peer=points_peer.PEER, method=points_peer.BATCH_CREDIT_POINTS, request=request)
        uow.commit()
    assert service.relay.deliver_due() == 1
    delivered, dead = outbox(wallet)[before:]
    assert delivered[:2] == ("DELIVERED", 3) and "refused in part: 2 of 3 items refused" in delivered[2]
    assert dead[:2] == ("DEAD", 2)
    assert "partial-bad: INVALID_ARGUMENT INVALID_POINTS_AMOUNT" in dead[2]
    assert "IDEMPOTENCY_KEY_REUSED" in dead[2]
    [payload] = wallet.sql("SELECT payload FROM outbox_messages WHERE status = 'DEAD'")[0]
    kept = pb.BatchCreditPointsRequest.FromString(payload)
    assert kept.request_id == "partial-batch:refused"
    assert [i.request_id for i in kept.requests] == ["partial-bad", "interest:w-x:2026-01"]
    assert api.balance("partial-ok").available == 9 and api.balance("taken").available == 3
    assert service.relay.deliver_due() == 0  # a dead letter waits for a person

    # Re-queued by hand (the runbook): its items keep their ids, refused again, and nothing doubles.
    t = service.outbox.table
    with service.db.unit_of_work() as uow:
        uow.session.execute(
            update(t)
            .where(t.c.status == OutboxStatus.DEAD.value)
            .values(status="PENDING", next_attempt_at=jobs.clock.now())
        )
        uow.commit()
    assert service.relay.deliver_due() == 1
    with service.db.unit_of_work() as uow:
        statuses = [row[0] for row in uow.session.execute(select(t.c.status).order_by(t.c.id))]
    assert statuses[-2:] == ["DELIVERED", "DEAD"]
    assert api.balance("taken").available == 3


def test_expiry_is_set_based_in_chunks_and_settles_customers_with_more_due(jobs: Jobs) -> None:
    api, clock = jobs.expiry, jobs.clock
    day = clock.now().astimezone(ZoneInfo("Europe/Moscow")).date().isoformat()
    soon, later = clock.now() + DAY, clock.now() + 100 * DAY
    for n in range(5):
        api.credit(f"exp-{n}", 10 + n, expires_at=soon)
        api.credit(f"exp-{n}", 100, expires_at=later)
    api.credit("exp-0", 3, expires_at=soon)  # two expiring lots of one customer
    held = api.hold("exp-1", 5, ttl=7 * DAY)  # 5 of the 11-point lot held (nearest expiry first) ...
    api.hold("exp-2", 4, ttl=timedelta(hours=1))  # ... a hold that expires first: settled through the Book
    api.credit("exp-held", 8, expires_at=soon)
    api.hold("exp-held", 8, ttl=7 * DAY)  # all of it held: nothing free to write off
    clock.advance(2 * DAY)
    done = api.expire()
    # exp-0: 10 + 3; exp-1: 11 - 5 held; exp-2: the hold released, then 12; exp-3: 13; exp-4: 14.
    assert (done.lots_expired, done.points_expired) == (6, 13 + 6 + 12 + 13 + 14)
    assert api.expire().lots_expired == 0  # nothing left
    for n in range(5):
        assert assert_consistent(api, f"exp-{n}").available == 100
    assert assert_consistent(api, "exp-held").held == 8
    [partly] = [lot for lot in api.lots("exp-1") if lot.amount == 11]
    assert (partly.status, partly.remaining, partly.held) == (pb.LOT_STATUS_AVAILABLE, 5, 5)
    api.release(held.hold_id)  # the held part of the expired lot is written off as it comes back
    assert assert_consistent(api, "exp-1").available == 100
    [line] = [h for h in api.history("exp-3") if h.type == pb.HISTORY_ENTRY_TYPE_EXPIRED]
    assert (line.available_delta, line.description) == (-13, f"Expired: lot of {day}, 13 points")


def test_the_sql_of_the_jobs_is_plain_on_sqlite_and_postgresql(jobs: Jobs) -> None:
    # The bulk helpers write through the unit of work's own connection: a rollback undoes them.
    from services.points.adapters.tables import HistoryLine
    from shared import bulk

    runtime = jobs.points.app.runtime
    table = HistoryLine.__table__  # type: ignore[attr-defined]
    row = {"customer_id": "rolled-back", "type": "CREDITED", "available_delta": 1, "pending_delta": 0,
           "held_delta": 0, "unrecovered_points": 0, "lot_id": "", "hold_id": "", "source": "", "reference": "",
           "description": "", "operator_id": "", "created_at": jobs.clock.now()}  # fmt: skip
    with runtime.db.unit_of_work() as uow:
        bulk.insert_rows(uow.session, table, [row, {**row, "available_delta": 2}])
        assert uow.session.execute(text("SELECT count(*) FROM history WHERE customer_id = 'rolled-back'")).scalar() == 2
    with runtime.db.unit_of_work() as uow:
        assert uow.session.execute(text("SELECT count(*) FROM history WHERE customer_id = 'rolled-back'")).scalar() == 0


def test_hash_parts_split_keys_into_disjoint_parts_that_cover_them_all(jobs: Jobs) -> None:
    # What lets the expiry's workers share the job: every customer in exactly one part.
    from services.points.adapters.tables import Account
    from shared import bulk

    table = Account.__table__  # type: ignore[attr-defined]
    keys = [f"part-{n}" for n in range(200)] + ["", "ключ", "x" * 64]
    with jobs.points.app.runtime.db.unit_of_work() as uow:  # rolled back: nothing is kept
        bulk.insert_rows(uow.session, table, [{"customer_id": key, "available": 0, "pending": 0, "held": 0,
                                               "updated_at": jobs.clock.now()} for key in keys])  # fmt: skip
        key = table.c.customer_id

        def part(parts: int, number: int) -> set[str]:
            found = uow.session.execute(select(key).where(key.in_(keys), bulk.hash_part(key, parts, number)))
            return set(found.scalars())

        assert part(1, 0) == set(keys)
        parts = [part(4, number) for number in range(4)]
    assert sorted(k for one in parts for k in one) == sorted(keys)  # disjoint and covering
    assert all(len(one) > 20 for one in parts)  # spread, not all in one
    with pytest.raises(ValueError, match="part 4 is not one of 4 parts"):
        bulk.hash_part(table.c.customer_id, 4, 4)


def test_plain_rows_are_the_rows_sqlalchemy_gives_without_a_row_object_each(jobs: Jobs) -> None:
    """`bulk.plain_rows`, what the interest posting reads its chunks with: the driver's tuples
    when no column needs converting, SQLAlchemy's conversions otherwise (SQLite's naive UTC
    times made aware), in the unit of work's transaction (it sees what the unit wrote)."""
    from services.points.adapters.tables import HistoryLine
    from shared import bulk

    table = HistoryLine.__table__  # type: ignore[attr-defined]
    c = table.c
    at = datetime(2026, 1, 10, 9, 30, 15, 250, tzinfo=UTC)
    row = {"customer_id": "plain", "type": "CREDITED", "available_delta": 2**40, "pending_delta": 0,
           "held_delta": 0, "unrecovered_points": 0, "lot_id": "", "hold_id": "", "source": "", "reference": "ключ",
           "description": "", "operator_id": "", "created_at": at}  # fmt: skip
    with jobs.points.app.runtime.db.unit_of_work() as uow:  # rolled back: nothing is kept
        bulk.insert_rows(uow.session, table, [row, {**row, "available_delta": -3}])
        mine = (c.customer_id == "plain",)
        plain = select(c.reference, c.available_delta).where(*mine).order_by(c.id)
        converted = select(c.reference, c.created_at).where(*mine).order_by(c.id)  # UtcDateTime
        assert bulk.plain_rows(uow.session, plain) == [("ключ", 2**40), ("ключ", -3)]
        assert bulk.plain_rows(uow.session, converted) == [("ключ", at), ("ключ", at)]
        stored = select(c.reference, bulk.as_stored(uow.session, c.created_at)).where(*mine).order_by(c.id)
        assert bulk.plain_rows(uow.session, stored) == [("ключ", at), ("ключ", at)]  # aware either way
        assert all(type(found) is tuple for found in bulk.plain_rows(uow.session, converted))
        for statement in (plain, converted, stored):
            assert bulk.plain_rows(uow.session, statement) == [tuple(r) for r in uow.session.execute(statement)]
        assert bulk.plain_rows(uow.session, plain.where(c.id < 0)) == []
