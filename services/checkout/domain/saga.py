"""The order saga as a pure state machine: given what an order has done so far, which step comes
next. The service layer performs the step (a call to Wallet, Points or Promotions, or a local
change), records it, and asks again; a crash anywhere leaves a state this function can resume
from, and every remote step is idempotent by a request id derived from the order id.

Forward: reserve the promo code, hold points, hold money, capture money, capture points, mark
PAID; then confirm the code and accrue the earned points (pending). A definitive refusal of a
forward step turns the saga to compensation: undo money (release the hold, or refund what was
captured), undo points (release, or return what was captured), release the code, mark FAILED.
A forward step whose outcome is unknown (a crash or a timeout during the call) is "uncertain":
compensation undoes it too, learning its resource by replaying the call with the same request id.
Cancelling a paid order undoes money, points and an unconfirmed code the same way, cancels the
pending earned points, and marks CANCELLED.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    PAID = "PAID"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    PARTIALLY_RETURNED = "PARTIALLY_RETURNED"
    RETURNED = "RETURNED"


class Step(StrEnum):
    RESERVE_CODE = "RESERVE_CODE"
    HOLD_POINTS = "HOLD_POINTS"
    HOLD_MONEY = "HOLD_MONEY"
    CAPTURE_MONEY = "CAPTURE_MONEY"
    CAPTURE_POINTS = "CAPTURE_POINTS"
    MARK_PAID = "MARK_PAID"
    CONFIRM_CODE = "CONFIRM_CODE"
    ACCRUE = "ACCRUE"
    UNDO_MONEY = "UNDO_MONEY"
    UNDO_POINTS = "UNDO_POINTS"
    UNDO_CODE = "UNDO_CODE"
    MARK_FAILED = "MARK_FAILED"
    CANCEL_PENDING = "CANCEL_PENDING"
    MARK_CANCELLED = "MARK_CANCELLED"


# Forward steps that create something in a peer, and what undoes it.
CREATES = {Step.RESERVE_CODE: Step.UNDO_CODE, Step.HOLD_POINTS: Step.UNDO_POINTS, Step.HOLD_MONEY: Step.UNDO_MONEY}
LOCAL = frozenset({Step.MARK_PAID, Step.MARK_FAILED, Step.MARK_CANCELLED})


@dataclass(frozen=True)
class SagaState:
    status: OrderStatus
    has_code: bool
    has_points: bool
    done: frozenset[Step] = field(default_factory=frozenset)
    compensating: bool = False
    # A forward step refused definitively: it changed nothing, so there is nothing to undo.
    refused: Step | None = None
    cancel_requested: bool = False

    def forward(self) -> list[Step]:
        steps = [Step.RESERVE_CODE] if self.has_code else []
        steps += [Step.HOLD_POINTS] if self.has_points else []
        steps += [Step.HOLD_MONEY, Step.CAPTURE_MONEY]
        steps += [Step.CAPTURE_POINTS] if self.has_points else []
        return [*steps, Step.MARK_PAID]

    def uncertain(self) -> Step | None:
        """The forward step that may or may not have happened: the first not done, unless it
        was refused."""
        pending = [step for step in self.forward() if step not in self.done]
        if not pending or pending[0] == self.refused:
            return None
        return pending[0]

    def _made(self, step: Step) -> bool:
        return step in self.done or step == self.uncertain()

    def compensation(self) -> list[Step]:
        steps = [Step.UNDO_MONEY] if self._made(Step.HOLD_MONEY) else []
        steps += [Step.UNDO_POINTS] if self.has_points and self._made(Step.HOLD_POINTS) else []
        steps += [Step.UNDO_CODE] if self.has_code and self._made(Step.RESERVE_CODE) else []
        return [*steps, Step.MARK_FAILED]

    def cancellation(self) -> list[Step]:
        steps = [Step.UNDO_MONEY]
        steps += [Step.UNDO_POINTS] if self.has_points else []
        steps += [Step.UNDO_CODE] if self.has_code and Step.CONFIRM_CODE not in self.done else []
        return [*steps, Step.CANCEL_PENDING, Step.MARK_CANCELLED]

    def after_payment(self) -> list[Step]:
        return ([Step.CONFIRM_CODE] if self.has_code else []) + [Step.ACCRUE]


def _first_missing(steps: Iterable[Step], done: frozenset[Step]) -> Step | None:
    return next((step for step in steps if step not in done), None)


def next_step(state: SagaState) -> Step | None:
    """The step to perform next, or None when the saga has nothing left to do."""
    if state.status == OrderStatus.PENDING:
        return _first_missing(state.compensation() if state.compensating else state.forward(), state.done)
    if state.status == OrderStatus.PAID and state.cancel_requested:
        return _first_missing(state.cancellation(), state.done)
    if state.status in (OrderStatus.CANCELLED, OrderStatus.FAILED):
        return None
    return _first_missing(state.after_payment(), state.done)
