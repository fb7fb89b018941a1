"""The catalogue and quotes: prices and categories from the catalogue, the points cap, the spread
of applied points over units, and the points the cart would earn (asked of Promotions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loyalty.checkout.v1 import checkout_pb2
from loyalty.common.v1 import payment_pb2
from loyalty.promotions.v1 import promotions_pb2

from services.checkout.adapters.peers import PeerServices
from services.checkout.adapters.repository import CheckoutRepository
from services.checkout.adapters.tables import ProductRow
from services.checkout.domain.pricing import (
    KOPECKS_PER_POINT,
    PointsPolicy,
    PricedLine,
    Product,
    apply_points,
    cart_max_points,
    merge_lines,
    price_lines,
    require_within_limit,
)
from shared.clock import Clock
from shared.db import Database, UnitOfWork
from shared.errors import InvalidArgument, NotFound
from shared.protoconv import money

MAX_TITLE = 200
MAX_CATEGORY = 64


@dataclass(frozen=True)
class PricedCart:
    lines: list[PricedLine]
    unit_points: list[list[int]]
    max_points: int
    points_applied: int
    available_points: int
    wallet_balance_minor: int
    evaluation: promotions_pb2.OrderEvaluation

    @property
    def total_minor(self) -> int:
        return sum(line.amount_minor for line in self.lines)

    @property
    def money_due_minor(self) -> int:
        return self.total_minor - self.points_applied * KOPECKS_PER_POINT

    def line_points(self, index: int) -> int:
        return sum(self.unit_points[index])


def promotion_line(
    sku: str, category: str, quantity: int, unit_price_minor: int, points_applied: int
) -> promotions_pb2.OrderLine:
    """A line as Promotions sees it: its amount and the part paid with money (line_id is the sku)."""
    amount = quantity * unit_price_minor
    return promotions_pb2.OrderLine(
        line_id=sku,
        sku=sku,
        category=category,
        quantity=quantity,
        amount=money(amount),
        money_amount=money(amount - points_applied * KOPECKS_PER_POINT),
    )


def order_lines(lines: Sequence[PricedLine], unit_points: Sequence[Sequence[int]]) -> list[promotions_pb2.OrderLine]:
    """The priced cart as Promotions sees it."""
    return [
        promotion_line(line.product.sku, line.product.category, line.quantity, line.product.price_minor, sum(points))
        for line, points in zip(lines, unit_points, strict=True)
    ]


def product_of(row: ProductRow) -> Product:
    return Product(sku=row.sku, title=row.title, category=row.category, price_minor=row.price_minor)


class Catalogue:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def upsert(self, uow: UnitOfWork, product: Product) -> tuple[ProductRow, bool]:
        violations = []
        if not product.sku.strip() or len(product.sku) > 64:
            violations.append(("product.sku", "is required, at most 64 characters", "SKU_REQUIRED"))
        if not product.title.strip() or len(product.title) > MAX_TITLE:
            violations.append(("product.title", f"is required, at most {MAX_TITLE} characters", "TITLE_REQUIRED"))
        if not product.category.strip() or len(product.category) > MAX_CATEGORY:
            violations.append(
                ("product.category", f"is required, at most {MAX_CATEGORY} characters", "CATEGORY_REQUIRED")
            )
        if product.price_minor <= 0:
            violations.append(("product.price.amount_minor", "must be positive", "PRICE_NOT_POSITIVE"))
        if violations:
            field, description, reason = violations[0]
            raise InvalidArgument.field(field, description, reason)
        repo = CheckoutRepository(uow.session)
        now = self._clock.now()
        row = repo.product(product.sku)
        created = row is None
        if row is None:
            row = ProductRow(sku=product.sku, title="", category="", price_minor=1, created_at=now, updated_at=now)
        row.title, row.category, row.price_minor = product.title.strip(), product.category.strip(), product.price_minor
        row.updated_at = now
        repo.add(row)
        uow.flush()
        return row, created


class Pricer:
    """Prices carts for quotes and orders."""

    def __init__(self, database: Database, peers: PeerServices, policy: PointsPolicy) -> None:
        self._db = database
        self._peers = peers
        self.policy = policy

    def products(self, lines: Sequence[tuple[str, int]]) -> list[tuple[Product, int]]:
        with self._db.read() as session:
            return self.products_in(CheckoutRepository(session), lines)

    @staticmethod
    def check_points_to_use(points_to_use: int) -> None:
        if points_to_use < 0:
            raise InvalidArgument.field("points_to_use", "must not be negative", "INVALID_POINTS_AMOUNT")

    @staticmethod
    def products_in(repo: CheckoutRepository, lines: Sequence[tuple[str, int]]) -> list[tuple[Product, int]]:
        """The products of the cart's lines (merged by sku) read through `repo`: a caller with a
        transaction open for another lookup reads them in it."""
        merged = merge_lines(lines)
        found = repo.products([sku for sku, _ in merged])
        missing = [sku for sku, _ in merged if sku not in found]
        if missing:
            raise NotFound("PRODUCT_NOT_FOUND", f"no product with sku {missing[0]!r}", metadata={"sku": missing[0]})
        return [(product_of(found[sku]), quantity) for sku, quantity in merged]

    def price_request(
        self,
        request: checkout_pb2.QuoteOrderRequest | checkout_pb2.PlaceOrderRequest,
        order_id: str = "",
        products: list[tuple[Product, int]] | None = None,
    ) -> PricedCart:
        """`price` for the cart of a quote or an order request; `products` are its lines' products
        when the caller has read them already (`products_in`)."""
        return self.price(
            customer_id=request.customer_id,
            lines=[(line.sku, line.quantity) for line in request.lines],
            promo_code=request.promo_code.strip(),
            points_to_use=request.points_to_use,
            payment_method=request.payment_method,
            order_id=order_id,
            products=products,
        )

    def price(
        self,
        *,
        customer_id: str,
        lines: Sequence[tuple[str, int]],
        promo_code: str,
        points_to_use: int,
        payment_method: payment_pb2.PaymentMethod.ValueType,
        order_id: str = "",
        products: list[tuple[Product, int]] | None = None,
    ) -> PricedCart:
        """Price a cart and check the points asked for; raises before anything is held."""
        self.check_points_to_use(points_to_use)
        priced = price_lines(self.products(lines) if products is None else products, self.policy)
        if payment_method == payment_pb2.PAYMENT_METHOD_WALLET:  # the two reads at once: a hop less to wait for
            available, balance = self._peers.points_and_wallet_balance(customer_id)
        else:
            available, balance = self._peers.available_points(customer_id), 0
        max_points = cart_max_points(priced, self.policy, available)
        require_within_limit(points_to_use, max_points)
        unit_points = apply_points(priced, points_to_use)
        evaluation = self._peers.evaluate(
            customer_id=customer_id,
            order_id=order_id,
            lines=order_lines(priced, unit_points),
            payment_method=payment_method,
            wallet_balance_minor=balance,
            promo_code=promo_code,
        )
        return PricedCart(
            lines=priced,
            unit_points=unit_points,
            max_points=max_points,
            points_applied=points_to_use,
            available_points=available,
            wallet_balance_minor=balance,
            evaluation=evaluation,
        )
