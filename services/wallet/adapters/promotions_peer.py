"""The customer's mechanic, as the Promotions service answers, with one explicit fallback.

Until Promotions serves the mechanic RPCs (UNIMPLEMENTED today) every customer has the configured
default mechanic. For showing a wallet or projecting a yield, a Promotions that does not answer
(UNAVAILABLE, DEADLINE_EXCEEDED) also gives the default: a read must not fail for it. Posting
interest does not guess: points credited cannot be taken back, so only UNIMPLEMENTED falls back
there, and an unreachable Promotions fails the run, which can simply be run again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from loyalty.promotions.v1 import promotions_pb2, promotions_pb2_grpc

from services.wallet.adapters.mechanic_codec import mechanic_from_proto
from services.wallet.domain.mechanics import Mechanic
from shared.calendar import Month
from shared.errors import DomainError, PeerUnavailable, Unimplemented
from shared.peers import Peers

log = logging.getLogger(__name__)

PEER = "promotions"
BATCH_LIMIT = 1000


class MechanicLookup:
    def __init__(self, peers: Peers, default: Mechanic) -> None:
        self._peers = peers
        self.default = default

    def _stub(self) -> promotions_pb2_grpc.PromotionsServiceStub:
        stub: promotions_pb2_grpc.PromotionsServiceStub = self._peers.stub(
            PEER, promotions_pb2_grpc.PromotionsServiceStub
        )
        return stub

    def current(self, customer_id: str) -> Mechanic:
        """The mechanic in force now; the default when Promotions does not answer."""
        try:
            response = self._peers.call(
                self._stub().GetCustomerMechanic,
                promotions_pb2.GetCustomerMechanicRequest(customer_id=customer_id),
                idempotent=False,  # a read on the request path: one attempt, then the default
            )
        except (Unimplemented, PeerUnavailable) as error:
            log.debug("mechanic look-up fell back to the default", extra={"reason": error.reason})
            return self.default
        return self._decode(response.mechanic)

    def for_month(self, customer_ids: Sequence[str], month: Month) -> dict[str, Mechanic]:
        """The mechanic that governs `month` for each customer. Falls back to the default only
        when Promotions does not implement the look-up; raises PeerUnavailable otherwise."""
        result: dict[str, Mechanic] = {}
        decoded: dict[bytes, Mechanic] = {}  # a handful of distinct mechanics, each decoded once
        for start in range(0, len(customer_ids), BATCH_LIMIT):
            chunk = list(customer_ids[start : start + BATCH_LIMIT])
            try:
                response = self._peers.call(
                    self._stub().BatchGetCustomerMechanics,
                    promotions_pb2.BatchGetCustomerMechanicsRequest(customer_ids=chunk, month=str(month)),
                    idempotent=True,
                )
            except Unimplemented:
                result.update(dict.fromkeys(chunk, self.default))
                continue
            for entry in response.mechanics:
                wire = entry.mechanic.SerializeToString(deterministic=True)
                mechanic = decoded.get(wire)
                if mechanic is None:
                    mechanic = decoded[wire] = self._decode(entry.mechanic)
                result[entry.customer_id] = mechanic
        for customer_id in customer_ids:
            result.setdefault(customer_id, self.default)
        return result

    def _decode(self, message: object) -> Mechanic:
        try:
            return mechanic_from_proto(message)  # type: ignore[arg-type]
        except DomainError as error:
            log.warning("promotions sent an unusable mechanic; using the default", extra={"reason": error.reason})
            return self.default
