"""A domain error raised in one service reaches its caller with its kind and reason intact."""

from __future__ import annotations

import grpc
import pytest
from loyalty.checkout.v1 import checkout_pb2
from loyalty.points.v1 import points_pb2, points_pb2_grpc
from loyalty.promotions.v1 import experiments_pb2, promotions_pb2
from loyalty.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from shared.errors import InvalidArgument, NotFound, PeerUnavailable
from shared.peers import Peers
from tests.harness import UNREACHABLE, RunningService


def test_a_peer_s_invalid_argument_arrives_with_reason_and_field(points: RunningService) -> None:
    peers = Peers({"points": points.target})
    stub = peers.stub("points", points_pb2_grpc.PointsServiceStub)
    request = points_pb2.CreditPointsRequest(
        request_id="r-1", customer_id="c-1", points=-5, source=points_pb2.POINTS_SOURCE_CAMPAIGN
    )
    with pytest.raises(InvalidArgument) as raised:
        peers.call(stub.CreditPoints, request, idempotent=True)
    assert raised.value.reason == "INVALID_POINTS_AMOUNT"
    assert [v.field for v in raised.value.field_violations] == ["points"]
    peers.close()


def test_not_found_with_metadata(platform: dict[str, RunningService]) -> None:
    peers = Peers({"wallet": platform["wallet"].target})
    stub = peers.stub("wallet", wallet_pb2_grpc.WalletServiceStub)
    with pytest.raises(NotFound) as raised:
        peers.call(stub.GetWallet, wallet_pb2.GetWalletRequest(customer_id="nobody"), idempotent=True)
    assert raised.value.reason == "WALLET_NOT_FOUND"
    assert raised.value.metadata == {"customer_id": "nobody"}
    peers.close()


def test_raw_grpc_clients_see_the_canonical_code_and_error_info(platform: dict[str, RunningService]) -> None:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status
    from loyalty.promotions.v1 import promotions_pb2, promotions_pb2_grpc

    stub = promotions_pb2_grpc.PromotionsServiceStub(platform["promotions"].channel())
    with pytest.raises(grpc.RpcError) as raised:
        stub.RecordProfileAction(
            promotions_pb2.RecordProfileActionRequest(
                request_id="r-1",
                customer_id="c-1",
                action=promotions_pb2.PROFILE_ACTION_TYPE_CONTACTS_UPDATED,
                survey_id="s-1",
            )
        )
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(raised.value)
    info = error_details_pb2.ErrorInfo()
    assert status is not None and status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("SURVEY_ID_NOT_ALLOWED", "loyalty.marketplace")


def test_an_unreachable_peer_is_unavailable_after_bounded_retries() -> None:
    sleeps: list[float] = []
    peers = Peers({"points": UNREACHABLE}, deadline_ms=500, retry_attempts=3, sleep=sleeps.append)
    stub = peers.stub("points", points_pb2_grpc.PointsServiceStub)
    with pytest.raises(PeerUnavailable):
        peers.call(stub.GetBalance, points_pb2.GetBalanceRequest(customer_id="c-1"), idempotent=True)
    assert len(sleeps) == 2  # three attempts, two pauses
    peers.close()


def test_a_non_idempotent_call_is_not_retried() -> None:
    sleeps: list[float] = []
    peers = Peers({"points": UNREACHABLE}, deadline_ms=500, retry_attempts=3, sleep=sleeps.append)
    stub = peers.stub("points", points_pb2_grpc.PointsServiceStub)
    with pytest.raises(PeerUnavailable):
        peers.call(stub.GetBalance, points_pb2.GetBalanceRequest(customer_id="c-1"), idempotent=False)
    assert sleeps == []
    peers.close()


IMPLEMENTED = {
    "loyalty.points.v1.PointsService": {
        m.name for m in points_pb2.DESCRIPTOR.services_by_name["PointsService"].methods
    },
    "loyalty.wallet.v1.WalletService": {
        m.name for m in wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].methods
    },
    "loyalty.promotions.v1.PromotionsService": {
        m.name for m in promotions_pb2.DESCRIPTOR.services_by_name["PromotionsService"].methods
    },
    "loyalty.promotions.v1.ExperimentsService": {
        m.name for m in experiments_pb2.DESCRIPTOR.services_by_name["ExperimentsService"].methods
    },
    "loyalty.checkout.v1.CheckoutService": {
        m.name for m in checkout_pb2.DESCRIPTOR.services_by_name["CheckoutService"].methods
    },
}
FILES = {
    "loyalty.points.v1.PointsService": ("points", points_pb2.DESCRIPTOR),
    "loyalty.wallet.v1.WalletService": ("wallet", wallet_pb2.DESCRIPTOR),
    "loyalty.promotions.v1.PromotionsService": ("promotions", promotions_pb2.DESCRIPTOR),
    "loyalty.promotions.v1.ExperimentsService": ("promotions", experiments_pb2.DESCRIPTOR),
    "loyalty.checkout.v1.CheckoutService": ("checkout", checkout_pb2.DESCRIPTOR),
}


def test_rpcs_of_later_issues_answer_unimplemented(platform: dict[str, RunningService]) -> None:
    checked = 0
    for full_name, (service, file_descriptor) in FILES.items():
        descriptor = file_descriptor.services_by_name[full_name.rsplit(".", 1)[1]]
        channel = platform[service].channel()
        for method in descriptor.methods:
            if method.name in IMPLEMENTED[full_name] or method.client_streaming or method.server_streaming:
                continue
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{full_name}/{method.name}")
            with pytest.raises(grpc.RpcError) as raised:
                call(b"", timeout=5)
            assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED, f"{full_name}/{method.name}"
            checked += 1
    assert checked == 0  # every RPC of every service is implemented now (issues #3 to #6 and #8)
