"""The WalletService servicer: turns requests into use cases and results into responses."""

from __future__ import annotations

import grpc
from loyalty.common.v1 import mechanic_pb2, money_pb2
from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from services.wallet.adapters.tables import Wallet
from services.wallet.domain.mechanics import CashbackMechanic, InterestMechanic, Mechanic
from services.wallet.domain.wallets import WalletStatus
from services.wallet.service_layer.accounts import Accounts
from shared.db import UnitOfWork
from shared.idempotency import Idempotency
from shared.protoconv import enum_to_proto, to_timestamp

SERVICE_NAME = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name


def mechanic_to_proto(mechanic: Mechanic) -> mechanic_pb2.Mechanic:
    if isinstance(mechanic, InterestMechanic):
        return mechanic_pb2.Mechanic(
            code=mechanic.code,
            name=mechanic.name,
            interest=mechanic_pb2.InterestMechanic(
                apr_bps=mechanic.apr_bps, basis=enum_to_proto(mechanic_pb2.BalanceBasis, mechanic.basis)
            ),
        )
    assert isinstance(mechanic, CashbackMechanic)
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


class WalletServicer(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self, accounts: Accounts, idempotency: Idempotency) -> None:
        self._accounts = accounts
        self._idempotency = idempotency

    def _to_proto(self, wallet: Wallet) -> wallet_pb2.Wallet:
        return wallet_pb2.Wallet(
            wallet_id=wallet.wallet_id,
            customer_id=wallet.customer_id,
            balance=money_pb2.Money(amount_minor=wallet.balance_minor, currency_code=wallet.currency),
            status=enum_to_proto(wallet_pb2.WalletStatus, WalletStatus(wallet.status)),
            mechanic=mechanic_to_proto(self._accounts.mechanic_of(wallet.customer_id)),
            create_time=to_timestamp(wallet.created_at),
        )

    def OpenWallet(
        self, request: wallet_pb2.OpenWalletRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.OpenWalletResponse:
        def effect(uow: UnitOfWork) -> wallet_pb2.OpenWalletResponse:
            wallet = self._accounts.open(uow, request.customer_id, request.currency_code)
            return wallet_pb2.OpenWalletResponse(wallet=self._to_proto(wallet))

        return self._idempotency.run("WalletService/OpenWallet", request, wallet_pb2.OpenWalletResponse, effect)

    def GetWallet(
        self, request: wallet_pb2.GetWalletRequest, context: grpc.ServicerContext
    ) -> wallet_pb2.GetWalletResponse:
        return wallet_pb2.GetWalletResponse(wallet=self._to_proto(self._accounts.get(request.customer_id)))
