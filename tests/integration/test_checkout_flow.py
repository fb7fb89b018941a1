"""Checkout across the four real services: the catalogue, quotes with the 1-rouble rule, and an
order's whole life (paid with points and wallet money, delivered, its points activated after the
return window, partly returned; or paid by card and cancelled), every balance checked."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from loyalty.checkout.v1 import checkout_pb2 as pb

from shared.clock import ManualClock
from tests.clients import refused, rid
from tests.harness import Harness
from tests.integration.checkout_support import CARD, UNSPECIFIED, Balances, Platform, fund, start_platform


@pytest.fixture
def platform(harness: Harness) -> Platform:
    return start_platform(harness)


# --- catalogue --------------------------------------------------------------------------------


def test_catalogue_upsert_listing_and_validation(platform: Platform) -> None:
    api = platform.checkout
    assert api.upsert("new", "New", "toys", 1234).created
    again = api.upsert("new", "Newer", "toys", 1300)
    assert (again.created, again.product.title, again.product.price.amount_minor) == (False, "Newer", 1300)
    assert api.stub.GetProduct(pb.GetProductRequest(sku="gift")).product.points_excluded
    assert refused(lambda: api.stub.GetProduct(pb.GetProductRequest(sku="nope"))).reason == "PRODUCT_NOT_FOUND"
    assert refused(lambda: api.upsert("x", "", "toys", 100)).reason == "TITLE_REQUIRED"
    assert refused(lambda: api.upsert("x", "X", "", 100)).reason == "CATEGORY_REQUIRED"
    assert refused(lambda: api.upsert("x", "X", "toys", 0)).reason == "PRICE_NOT_POSITIVE"
    first = api.stub.ListProducts(pb.ListProductsRequest(page_size=4))
    second = api.stub.ListProducts(pb.ListProductsRequest(page_size=4, page_token=first.next_page_token))
    skus = [p.sku for p in first.products] + [p.sku for p in second.products]
    assert skus == sorted(["pen", "soap", "kettle", "gift", "phone", "new"]) and not second.next_page_token
    gifts = api.stub.ListProducts(pb.ListProductsRequest(category="gift-cards")).products
    assert [p.sku for p in gifts] == ["gift"]
    policy = api.stub.GetPointsPolicy(pb.GetPointsPolicyRequest()).policy
    assert (policy.min_money_per_unit.amount_minor, policy.max_points_share_bps) == (100, 9900)
    assert list(policy.excluded_categories) == ["gift-cards"] and policy.return_window.seconds == 14 * 86400


# --- quotes -----------------------------------------------------------------------------------


def test_the_three_examples_of_the_points_cap(platform: Platform) -> None:
    fund(platform, "c-1", points=10_000)
    api = platform.checkout
    assert api.quote("c-1", ("pen", 1)).max_points == 0  # a 1 RUB item takes no points
    assert api.quote("c-1", ("soap", 1)).max_points == 98  # 99.50 RUB: at most 98
    kettles = api.quote("c-1", ("kettle", 3))
    assert kettles.lines[0].max_points == 1497  # three units at 500 RUB: 3 x 499
    assert kettles.max_points == 1485  # and the whole cart at most 99 % of 1,500 RUB
    assert api.quote("c-1", ("gift", 2)).max_points == 0  # gift cards cannot be paid with points


def test_a_quote_spreads_points_over_units_and_never_changes_what_was_asked(platform: Platform) -> None:
    fund(platform, "c-1", points=5_000)
    api = platform.checkout
    quote = api.quote("c-1", ("kettle", 3), ("soap", 2), ("pen", 1), ("gift", 1), ("kettle", 1), points=1000)
    assert [line.sku for line in quote.lines] == ["kettle", "soap", "pen", "gift"]  # merged, in order
    kettle, soap, pen, gift = quote.lines
    maxima = (kettle.quantity, kettle.max_points, soap.max_points, pen.max_points, gift.max_points)
    assert maxima == (4, 1996, 196, 0, 0)
    assert quote.max_points == 2192 and quote.points_applied == 1000  # the 99 % share is not binding here
    for line in quote.lines:
        assert sum(line.unit_points) == line.points_applied and len(line.unit_points) == line.quantity
        assert all(line.unit_price.amount_minor - points * 100 >= 100 for points in line.unit_points)
        assert line.money_due.amount_minor == line.amount.amount_minor - line.points_applied * 100
    assert sum(line.points_applied for line in quote.lines) == 1000
    assert quote.total.amount_minor == 4 * 50000 + 2 * 9950 + 100 + 100000
    assert quote.money_due.amount_minor == quote.total.amount_minor - 1000 * 100
    # Points to earn come from Promotions (1 % default) on the money part, with the explanation.
    assert quote.points_to_earn == sum(award.points for award in quote.explanation) > 0
    assert quote.available_points == 5000

    error = refused(lambda: api.quote("c-1", ("kettle", 3), points=1486))
    assert error.reason == "POINTS_EXCEED_LIMIT" and error.metadata["max_points"] == "1485"
    assert api.quote("c-2", ("kettle", 3)).max_points == 0  # capped by what the customer has
    assert refused(lambda: api.quote("c-2", ("kettle", 1), points=1)).reason == "POINTS_EXCEED_LIMIT"
    assert refused(lambda: api.quote("c-1")).reason == "EMPTY_CART"
    assert refused(lambda: api.quote("c-1", ("kettle", 0))).reason == "QUANTITY_NOT_POSITIVE"
    assert refused(lambda: api.quote("c-1", ("nope", 1))).reason == "PRODUCT_NOT_FOUND"
    assert refused(lambda: api.quote("c-1", ("kettle", 1), code="NOSUCH")).reason == "PROMO_CODE_NOT_FOUND"


# --- an order's life --------------------------------------------------------------------------


def test_full_flow_top_up_order_with_points_deliver_activate_and_partial_return(
    platform: Platform, clock: ManualClock
) -> None:
    fund(platform, "c-1", money_minor=500_000, points=2_000)  # 5,000 RUB and 2,000 points
    assert platform.balances("c-1") == Balances(500_000, 0, 2_000, 0, 0)

    order = platform.checkout.place("c-1", ("kettle", 3), ("soap", 2), points=500)
    assert order.status == pb.ORDER_STATUS_PAID
    money_paid = 3 * 50000 + 2 * 9950 - 500 * 100
    assert (order.total.amount_minor, order.points_applied, order.money_paid.amount_minor) == (
        3 * 50000 + 2 * 9950,
        500,
        money_paid,
    )
    assert [h.status for h in order.history] == [pb.ORDER_STATUS_PENDING, pb.ORDER_STATUS_PAID]
    assert platform.checkout.order(order.order_id) == order  # the answer, built by the saga, is the stored order
    earned = order.points_to_earn
    assert earned == sum(line.points_to_earn for line in order.lines) > 0
    platform.deliver_outboxes()  # Promotions credits the earned points, pending
    assert platform.balances("c-1") == Balances(500_000 - money_paid, 0, 1_500, earned, 0)

    delivered = platform.checkout.deliver(order.order_id)
    assert delivered.status == pb.ORDER_STATUS_DELIVERED
    assert delivered.return_window_end_time.ToDatetime() - delivered.deliver_time.ToDatetime() == timedelta(days=14)
    platform.deliver_outboxes()  # Checkout schedules the activation in Points
    clock.advance(timedelta(days=10))
    assert platform.balances("c-1").pending == earned  # still inside the return window

    # A partial return: one kettle and one soap. The highest-indexed units go back first.
    kettle, soap = order.lines
    back = platform.checkout.return_items(order.order_id, ("kettle", 1), ("soap", 1))
    made = back.order_return
    assert made.status == pb.RETURN_STATUS_COMPLETED
    points_back = kettle.unit_points[2] + soap.unit_points[1]
    money_back = 50000 + 9950 - points_back * 100
    reversed_points = made.points_reversed
    assert (made.money_refunded.amount_minor, made.points_returned) == (money_back, points_back)
    assert 0 < reversed_points < earned
    assert back.order.status == pb.ORDER_STATUS_PARTIALLY_RETURNED
    assert back.order.money_refunded.amount_minor == money_back
    assert [line.returned_quantity for line in back.order.lines] == [1, 1]
    assert platform.balances("c-1") == Balances(
        500_000 - money_paid + money_back, 0, 1_500 + points_back, earned - reversed_points, 0
    )

    clock.advance(timedelta(days=5))  # the window has passed: the rest of the earned points are available
    platform.points.activate_due()
    assert platform.balances("c-1") == Balances(
        500_000 - money_paid + money_back, 0, 1_500 + points_back + earned - reversed_points, 0, 0
    )
    assert refused(lambda: platform.checkout.return_items(order.order_id, ("kettle", 1))).reason == (
        "RETURN_WINDOW_CLOSED"
    )
    # Every id the services made is a time-ordered version 7 UUID (shared/ids.py): the order, the
    # return, the wallet, the points lots.
    made_ids = [order.order_id, made.return_id, platform.wallet.wallet("c-1").wallet_id]
    made_ids += [lot.lot_id for lot in platform.points.lots("c-1")]
    assert {uuid.UUID(made_id).version for made_id in made_ids} == {7}, made_ids


def test_returning_every_unit_gives_back_all_points_and_money(platform: Platform) -> None:
    fund(platform, "c-1", money_minor=200_000, points=1_000)
    order = platform.checkout.place("c-1", ("kettle", 2), points=989)  # uneven spread: 495 + 494
    assert list(order.lines[0].unit_points) == [495, 494]
    platform.deliver_outboxes()
    platform.checkout.deliver(order.order_id)
    first = platform.checkout.return_items(order.order_id, ("kettle", 1)).order_return
    assert (first.points_returned, first.money_refunded.amount_minor) == (494, 50000 - 49400)
    second = platform.checkout.return_items(order.order_id, ("kettle", 1))
    assert second.order_return.points_returned == 495
    assert second.order.status == pb.ORDER_STATUS_RETURNED
    assert refused(lambda: platform.checkout.return_items(order.order_id, ("kettle", 1))).reason == (
        "RETURN_QUANTITY_EXCEEDED"
    )
    assert platform.balances("c-1") == Balances(200_000, 0, 1_000, 0, 0)  # everything back
    assert second.order.money_refunded.amount_minor == second.order.money_paid.amount_minor


def test_return_refusals(platform: Platform) -> None:
    fund(platform, "c-1", money_minor=100_000)
    order = platform.checkout.place("c-1", ("kettle", 1))
    api = platform.checkout
    assert refused(lambda: api.return_items(order.order_id, ("kettle", 1))).reason == "ORDER_NOT_DELIVERED"
    platform.deliver_outboxes()
    api.deliver(order.order_id)
    assert refused(lambda: api.deliver(order.order_id)).reason == "ORDER_ALREADY_DELIVERED"
    assert refused(lambda: api.return_items(order.order_id, ("soap", 1))).reason == "SKU_NOT_IN_ORDER"
    assert refused(lambda: api.return_items(order.order_id, ("kettle", 2))).reason == "RETURN_QUANTITY_EXCEEDED"
    assert refused(lambda: api.return_items(order.order_id, ("kettle", 0))).reason == "QUANTITY_NOT_POSITIVE"
    assert refused(lambda: api.return_items(order.order_id, ("kettle", 1), customer="c-2")).reason == (
        "ORDER_NOT_FOUND"
    )
    assert refused(lambda: api.cancel(order.order_id)).reason == "ORDER_ALREADY_DELIVERED"
    assert api.order(order.order_id).lines[0].returned_quantity == 0  # nothing changed


def test_card_order_cancelled_before_delivery_refunds_the_card_and_gives_points_back(platform: Platform) -> None:
    fund(platform, "c-1", money_minor=10_000, points=300)
    order = platform.checkout.place("c-1", ("kettle", 1), points=300, method=CARD, token="tok_ok")
    assert order.status == pb.ORDER_STATUS_PAID and order.card.last4 and order.card.token == "tok_ok"
    platform.deliver_outboxes()
    earned = order.points_to_earn
    assert platform.balances("c-1") == Balances(10_000, 0, 0, earned, 0)  # the wallet is not touched

    cancelled = platform.checkout.cancel(order.order_id, customer="c-1", reason="changed my mind")
    assert cancelled.status == pb.ORDER_STATUS_CANCELLED
    assert cancelled.money_refunded.amount_minor == order.money_paid.amount_minor
    assert cancelled.history[-1].reason == "changed my mind"
    assert platform.balances("c-1") == Balances(10_000, 0, 300, 0, 0)
    hold = platform.wallet.stub.GetHold(
        __import__("loyalty.wallet.v1.wallet_pb2", fromlist=["GetHoldRequest"]).GetHoldRequest(
            hold_id=order.wallet_hold_id
        )
    ).hold
    assert hold.refunded.amount_minor == hold.captured.amount_minor == order.money_paid.amount_minor
    assert refused(lambda: platform.checkout.cancel(order.order_id)).reason == "ORDER_ALREADY_CANCELLED"
    assert refused(lambda: platform.checkout.deliver(order.order_id)).reason == "ORDER_ALREADY_CANCELLED"
    # Pending points that arrive after the cancellation (the outbox was slow) are cancelled too.
    platform.deliver_outboxes()
    assert platform.balances("c-1").pending == 0


def test_place_order_replays_and_refusals(platform: Platform) -> None:
    fund(platform, "c-1", money_minor=100_000, points=100)
    api = platform.checkout
    request_id = rid()
    first = api.place("c-1", ("kettle", 1), points=100, request_id=request_id)
    again = api.place("c-1", ("kettle", 1), points=100, request_id=request_id)
    assert again == first and again.status == pb.ORDER_STATUS_PAID  # the replay reads what the saga answered
    assert refused(lambda: api.place("c-1", ("kettle", 2), points=100, request_id=request_id)).reason == (
        "IDEMPOTENCY_KEY_REUSED"
    )
    assert platform.balances("c-1") == Balances(100_000 - (50000 - 10000), 0, 0, 0, 0)

    for call, reason in [
        (lambda: api.place("c-1", ("kettle", 1), points=1), "POINTS_EXCEED_LIMIT"),
        (lambda: api.place("c-1", ("pen", 1), points=1), "POINTS_EXCEED_LIMIT"),
        (lambda: api.place("c-1"), "EMPTY_CART"),
        (lambda: api.place("c-1", ("kettle", 1), method=UNSPECIFIED), "PAYMENT_METHOD_REQUIRED"),
        (lambda: api.place("c-1", ("kettle", 1), method=CARD), "CARD_TOKEN_REQUIRED"),
        (lambda: api.place("c-1", ("kettle", 1), method=CARD, token="4111111111111111"), "CARD_NUMBER_NOT_ALLOWED"),
        (lambda: api.place("c-1", ("nope", 1)), "PRODUCT_NOT_FOUND"),
        (lambda: api.place("c-1", ("kettle", 1), request_id=""), "REQUEST_ID_REQUIRED"),
    ]:
        assert refused(call).reason == reason
    orders = api.stub.ListOrders(pb.ListOrdersRequest(customer_id="c-1")).orders
    assert [o.order_id for o in orders] == [first.order_id]  # refusals before the order left nothing


def test_a_refused_payment_fails_the_order_and_releases_everything(platform: Platform) -> None:
    api = platform.checkout
    fund(platform, "c-2", money_minor=10_000, points=300)
    error = refused(lambda: api.place("c-2", ("kettle", 1), points=300))  # 200 RUB due, 100 RUB in the wallet
    assert error.reason == "INSUFFICIENT_FUNDS"
    failed = api.order(error.metadata["order_id"])
    assert failed.status == pb.ORDER_STATUS_FAILED and failed.failure_reason == "INSUFFICIENT_FUNDS"
    assert platform.balances("c-2") == Balances(10_000, 0, 300, 0, 0)  # the points hold was released
    declined = refused(lambda: api.place("c-2", ("kettle", 1), points=300, method=CARD, token="tok_declined"))
    assert declined.reason == "CARD_DECLINED"
    assert platform.balances("c-2") == Balances(10_000, 0, 300, 0, 0)
    assert refused(lambda: api.cancel(failed.order_id)).reason == "ORDER_FAILED"


def test_orders_list_newest_first_with_paging_and_owner_checks(platform: Platform, clock: ManualClock) -> None:
    fund(platform, "c-1", money_minor=100_000)
    placed = []
    for _ in range(3):
        placed.append(platform.checkout.place("c-1", ("pen", 1)).order_id)
        clock.advance(timedelta(seconds=1))
    api = platform.checkout.stub
    first = api.ListOrders(pb.ListOrdersRequest(customer_id="c-1", page_size=2))
    second = api.ListOrders(pb.ListOrdersRequest(customer_id="c-1", page_size=2, page_token=first.next_page_token))
    assert [o.order_id for o in [*first.orders, *second.orders]] == placed[::-1]
    assert not second.next_page_token
    assert refused(lambda: platform.checkout.order(placed[0], customer="c-2")).reason == "ORDER_NOT_FOUND"
    assert platform.checkout.order(placed[0], customer="c-1").order_id == placed[0]
    bad = refused(lambda: api.ListOrders(pb.ListOrdersRequest(customer_id="c-1", page_token="junk")))
    assert bad.reason == "INVALID_PAGE_TOKEN"


def test_order_statistics_per_customer_over_a_period(platform: Platform, clock: ManualClock) -> None:
    from shared.protoconv import to_timestamp

    start = clock.now()
    fund(platform, "s-1", money_minor=300_000, points=100)
    fund(platform, "s-2", money_minor=100_000)
    platform.checkout.place("s-1", ("kettle", 2), points=100)  # 1,000 RUB, 900 from the wallet
    platform.checkout.place("s-1", ("pen", 1), method=CARD, token="tok_ok")
    cancelled = platform.checkout.place("s-2", ("kettle", 1))
    platform.checkout.cancel(cancelled.order_id)
    end = clock.now() + timedelta(seconds=1)
    api = platform.checkout.stub

    def stats(*customers: str, page_size: int = 0, page_token: str = "") -> pb.ListOrderStatisticsResponse:
        return api.ListOrderStatistics(
            pb.ListOrderStatisticsRequest(
                start_time=to_timestamp(start),
                end_time=to_timestamp(end),
                customer_ids=customers,
                page_size=page_size,
                page_token=page_token,
            )
        )

    every = stats().statistics
    assert [row.customer_id for row in every] == ["s-1"]  # cancelled orders do not count
    row = every[0]
    assert (row.order_count, row.gmv.amount_minor, row.average_order_value.amount_minor) == (2, 100_100, 50_050)
    assert (row.wallet_order_count, row.wallet_money_paid.amount_minor, row.points_applied) == (1, 90_000, 100)
    asked = stats("s-2", "s-1", "nobody").statistics
    assert [(r.customer_id, r.order_count) for r in asked] == [("nobody", 0), ("s-1", 2), ("s-2", 0)]
    paged = stats("s-2", "s-1", "nobody", page_size=2)
    assert len(paged.statistics) == 2 and paged.next_page_token
    rest = stats("s-2", "s-1", "nobody", page_size=2, page_token=paged.next_page_token)
    assert [r.customer_id for r in rest.statistics] == ["s-2"] and not rest.next_page_token
    too_many = [f"c-{i}" for i in range(1001)]
    assert refused(lambda: stats(*too_many)).reason == "TOO_MANY_CUSTOMERS"


def test_a_nul_character_anywhere_in_a_request_is_bad_input_and_changes_nothing(platform: Platform) -> None:
    """PostgreSQL cannot store NUL: every service refuses it up front, naming the field."""
    api = platform.checkout
    error = refused(lambda: api.upsert("nul", "Bad\x00title", "toys", 100))
    assert (error.reason, [v.field for v in error.field_violations]) == ("INVALID_CHARACTERS", ["product.title"])
    error = refused(lambda: api.place("c-1", ("kettle", 1), ("pen\x00", 1)))
    assert [v.field for v in error.field_violations] == ["lines[1].sku"]
    assert refused(lambda: platform.points.credit("c\x00", 5)).reason == "INVALID_CHARACTERS"
    assert refused(lambda: api.stub.GetProduct(pb.GetProductRequest(sku="nul"))).reason == "PRODUCT_NOT_FOUND"
