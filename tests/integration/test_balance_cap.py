"""The merchant's maximum card balance is atomic on the native provider: the cap travels into the
ledger's credit/activate script (ARGV[9]), so reloads that each fit alone but not together never
leave more than the cap on the card; the refused ones are FAILED_PRECONDITION
BALANCE_LIMIT_EXCEEDED and credit nothing."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from common.context import CallContext, bind_call, unbind_call
from common.errors import MeshError
from giftcard.gateway.v1 import gateway_pb2
from giftcard.refund.v1 import refund_pb2 as pb
from giftcard.type.v1 import card_pb2
from tests.integration.test_mesh_server import error_details
from tests.integration.test_refund import CARD_100, balance_of, merchants, ref, usd
from tests.support.mesh import DEMO_KEY, MODES, auth, start_mesh

CAP = 20000  # merchants()["demo"]["max_card_balance_minor"]; CARD_100 starts at 10000
RELOAD = 1000  # 10 of them fit, 20 are sent at once


@pytest.fixture(params=MODES)
async def mesh(request, redis_client, redis_url):
    running = await start_mesh(request.param, redis_url, merchants=merchants())
    yield running
    await running.close()


async def test_concurrent_reloads_never_exceed_the_max_card_balance(mesh):
    stub = mesh.stub("refund")

    async def reload(i: int):
        try:
            return await stub.Reload(pb.ReloadRequest(request_id=f"cap-{i}", card=ref(CARD_100), amount=usd(RELOAD)),
                                     metadata=auth(), timeout=15)
        except grpc.aio.AioRpcError as error:
            return error

    replies = await asyncio.gather(*(reload(i) for i in range(20)))
    refused = [r for r in replies if isinstance(r, grpc.aio.AioRpcError)]
    approved = [r for r in replies if not isinstance(r, grpc.aio.AioRpcError)]
    for error in refused:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
        assert error_details(error)[0] == "BALANCE_LIMIT_EXCEEDED"
    assert len(approved) == (CAP - 10000) // RELOAD
    assert all(r.balance.amount_minor <= CAP for r in approved)
    assert await balance_of(mesh, CARD_100) == (CAP, card_pb2.CARD_STATUS_ACTIVE)


async def test_the_gateway_enforces_the_merchant_cap_without_the_callers_check(mesh):
    """Straight to the gateway's Credit (no check before the call at all): still atomic."""
    runtime = next(r for r in mesh.runtimes if "refund" in r.services)
    gateway = runtime.client("gateway")
    token = bind_call(CallContext("demo", time.monotonic() + 15, f"Bearer {DEMO_KEY}"))
    try:
        async def credit(i: int):
            try:
                return await gateway.Credit(gateway_pb2.CreditRequest(
                    reference_id=f"gw-cap-{i}", card=ref(CARD_100), amount=usd(RELOAD),
                    kind=gateway_pb2.CREDIT_KIND_RELOAD,
                ))
            except MeshError as error:
                return error

        replies = await asyncio.gather(*(credit(i) for i in range(20)))
        # Activation of a new card above the cap is refused the same way.
        with pytest.raises(MeshError) as caught:
            await gateway.Activate(gateway_pb2.ActivateRequest(
                reference_id="gw-cap-act", card=ref("6035719999000017"), amount=usd(CAP + 1)))
    finally:
        unbind_call(token)
    refused = [r for r in replies if isinstance(r, MeshError)]
    assert {(e.code, e.reason) for e in refused} == {(grpc.StatusCode.FAILED_PRECONDITION, "BALANCE_LIMIT_EXCEEDED")}
    assert len(replies) - len(refused) == (CAP - 10000) // RELOAD
    assert await balance_of(mesh, CARD_100) == (CAP, card_pb2.CARD_STATUS_ACTIVE)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "BALANCE_LIMIT_EXCEEDED")
