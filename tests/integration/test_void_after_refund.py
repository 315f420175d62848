"""A redemption that was partly refunded cannot also be voided (that would give the refunded part
back twice); a voided one cannot be refunded. Both checks sit in the same Redis slot."""

from __future__ import annotations

import grpc
import pytest

from giftcard.authorization.v1 import authorization_pb2
from giftcard.balance.v1 import balance_pb2
from giftcard.refund.v1 import refund_pb2
from giftcard.type.v1 import card_pb2, money_pb2
from tests.integration.test_mesh_server import error_details
from tests.support.mesh import MODES, auth, start_mesh

CARD_100 = "6035710000000001"


def usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code="USD")


@pytest.fixture(params=MODES)
async def mesh(request, redis_client, redis_url):
    running = await start_mesh(request.param, redis_url)
    yield running
    await running.close()


async def redeem(mesh, request_id: str, minor: int) -> str:
    reply = await mesh.stub("authorization").Redeem(
        authorization_pb2.RedeemRequest(
            request_id=request_id, order_id="o-void", card=card_pb2.CardRef(card_number=CARD_100), amount=usd(minor)
        ),
        metadata=auth(), timeout=5,
    )
    return reply.transaction.transaction_id


async def balance(mesh) -> int:
    reply = await mesh.stub("balance").GetBalance(
        balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=CARD_100)), metadata=auth(), timeout=5
    )
    return reply.balance.amount_minor


async def test_a_partly_refunded_redemption_cannot_be_voided(mesh):
    txn = await redeem(mesh, "pay-v1", 4000)
    await mesh.stub("refund").Refund(
        refund_pb2.RefundRequest(request_id="rf-v1", transaction_id=txn, amount=usd(1500)), metadata=auth(), timeout=5
    )
    assert await balance(mesh) == 7500
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.stub("authorization").VoidRedemption(
            authorization_pb2.VoidRedemptionRequest(request_id="void-v1", transaction_id=txn), metadata=auth(), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    reason, metadata, _ = error_details(caught.value)
    assert (reason, metadata["refunded_minor"]) == ("TRANSACTION_REFUNDED", "1500")
    assert await balance(mesh) == 7500
    # The rest can still be refunded, and no more than that.
    await mesh.stub("refund").Refund(
        refund_pb2.RefundRequest(request_id="rf-v2", transaction_id=txn, amount=usd(2500)), metadata=auth(), timeout=5
    )
    assert await balance(mesh) == 10000


async def test_a_voided_redemption_cannot_be_refunded(mesh):
    txn = await redeem(mesh, "pay-v2", 4000)
    await mesh.stub("authorization").VoidRedemption(
        authorization_pb2.VoidRedemptionRequest(request_id="void-v2", transaction_id=txn), metadata=auth(), timeout=5
    )
    assert await balance(mesh) == 10000
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.stub("refund").Refund(
            refund_pb2.RefundRequest(request_id="rf-v3", transaction_id=txn, amount=usd(100)), metadata=auth(), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await balance(mesh) == 10000
