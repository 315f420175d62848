"""The mesh's own identity (security.internal_token): scheduled work in microservices mode reaches
the gateway over gRPC with no merchant key, and nobody else can use the identity without the token
or without naming a merchant."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from giftcard.authorization.v1 import authorization_pb2
from giftcard.balance.v1 import balance_pb2
from giftcard.settlement.v1 import settlement_pb2
from giftcard.type.v1 import card_pb2, money_pb2
from tests.integration.test_mesh_server import error_details
from tests.support.mesh import DEMO_CARDS, auth, start_mesh

TOKEN = "internal-test-token-0123456789"
CARD = card_pb2.CardRef(card_number="6035710000000001")


def usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code="USD")


@pytest.fixture
async def separate(redis_client, redis_url):
    running = await start_mesh(
        "separate", redis_url,
        security={"dev_mode": True, "internal_token": TOKEN},
        settlement={"tick_seconds": 0.2, "batch_interval_seconds": 0.5},
    )
    yield running
    await running.close()


async def test_the_scheduler_settles_a_queued_capture_over_grpc_without_a_merchant_key(separate):
    hold = await separate.stub("authorization").Authorize(
        authorization_pb2.AuthorizeRequest(request_id="a-int", order_id="o-int", card=CARD, amount=usd(3000)),
        metadata=auth(), timeout=10,
    )
    queued = await separate.stub("settlement").Capture(
        settlement_pb2.CaptureRequest(
            request_id="c-int", hold_id=hold.hold.hold_id, amount=usd(1200), shipment_id="s1",
            final_shipment=True, defer_to_batch=True,
        ),
        metadata=auth(), timeout=10,
    )
    assert queued.settlement.state == settlement_pb2.SETTLEMENT_STATE_QUEUED
    for _ in range(100):
        listed = await separate.stub("settlement").ListOpenSettlements(
            settlement_pb2.ListOpenSettlementsRequest(), metadata=auth(), timeout=10
        )
        if not listed.settlements:
            break
        await asyncio.sleep(0.2)
    assert list(listed.settlements) == []
    balance = await separate.stub("balance").GetBalance(
        balance_pb2.GetBalanceRequest(card=CARD), metadata=auth(), timeout=10
    )
    assert (balance.balance.amount_minor, balance.held.amount_minor) == (DEMO_CARDS[0]["balance_minor"] - 1200, 0)


@pytest.mark.parametrize(
    "metadata",
    [
        (("authorization", f"Bearer {TOKEN}"),),  # no merchant named
        (("authorization", "Bearer not-the-token"), ("x-giftcard-merchant", "demo")),
    ],
)
async def test_the_internal_identity_needs_the_token_and_a_merchant(separate, metadata):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await separate.stub("balance").GetBalance(balance_pb2.GetBalanceRequest(card=CARD), metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_details(caught.value)[0] == "UNAUTHENTICATED"


async def test_the_internal_identity_acts_only_for_the_merchant_it_names(separate):
    metadata = (("authorization", f"Bearer {TOKEN}"), ("x-giftcard-merchant", "acme"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await separate.stub("balance").GetBalance(balance_pb2.GetBalanceRequest(card=CARD), metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # demo's card is not acme's
