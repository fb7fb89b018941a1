"""Mechanics between their shared proto form (loyalty.common.v1.Mechanic) and the domain."""

from __future__ import annotations

from loyalty.common.v1 import mechanic_pb2

from services.wallet.domain.mechanics import (
    CashbackMechanic,
    CashbackTier,
    InterestBasis,
    InterestMechanic,
    Mechanic,
)
from shared.errors import InvalidArgument
from shared.protoconv import enum_from_proto, enum_to_proto


def mechanic_to_proto(mechanic: Mechanic) -> mechanic_pb2.Mechanic:
    if isinstance(mechanic, InterestMechanic):
        return mechanic_pb2.Mechanic(
            code=mechanic.code,
            name=mechanic.name,
            interest=mechanic_pb2.InterestMechanic(
                apr_bps=mechanic.apr_bps, basis=enum_to_proto(mechanic_pb2.BalanceBasis, mechanic.basis)
            ),
        )
    return mechanic_pb2.Mechanic(
        code=mechanic.code,
        name=mechanic.name,
        cashback=mechanic_pb2.CashbackMechanic(
            tiers=[
                mechanic_pb2.CashbackTier(min_balance_minor=t.min_balance_minor, rate_bps=t.rate_bps)
                for t in mechanic.tiers
            ],
            monthly_cap_points=mechanic.monthly_cap_points,
        ),
    )


def mechanic_from_proto(message: mechanic_pb2.Mechanic, field: str = "mechanic") -> Mechanic:
    kind = message.WhichOneof("kind")
    if kind == "interest":
        basis = enum_from_proto(
            mechanic_pb2.BalanceBasis, message.interest.basis, InterestBasis, f"{field}.interest.basis"
        )
        return InterestMechanic(
            apr_bps=message.interest.apr_bps,
            basis=basis,
            code=message.code or f"interest-{message.interest.apr_bps}",
            name=message.name,
        )
    if kind == "cashback":
        return CashbackMechanic(
            tiers=tuple(CashbackTier(t.min_balance_minor, t.rate_bps) for t in message.cashback.tiers),
            monthly_cap_points=message.cashback.monthly_cap_points,
            code=message.code or "cashback",
            name=message.name,
        )
    raise InvalidArgument.field(field, "must be an interest or a cashback mechanic", "MECHANIC_REQUIRED")
