"""A real `giftcard serve all` process killed (SIGKILL) in the middle of a multi-tender checkout,
then restarted: the caller's retry of the same request finishes the checkout by compensation and
no card is left debited."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from common.config import DEV_CARD_HASH_KEY
from gateway.adapters.native.ledger import NativeLedger
from giftcard.authorization.v1 import authorization_pb2 as pb
from giftcard.authorization.v1 import authorization_pb2_grpc
from tests.integration.test_authorization import card, usd
from tests.support.mesh import auth
from tests.support.processes import start_server, write_config

TENDERS = 10
CARD_BALANCE = 10_00


async def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0)
    return False


async def test_process_killed_mid_checkout_leaves_no_debit_after_restart(redis_client, redis_url, tmp_path):
    ledger = NativeLedger(redis_client, DEV_CARD_HASH_KEY.encode())
    numbers = [f"88880000000000{i:02d}" for i in range(TENDERS)]
    for number in numbers:
        await ledger.create_card("demo", number, "USD", balance_minor=CARD_BALANCE, active=True)
    config = write_config(tmp_path, redis_url, idempotency={"lease_seconds": 1})
    log = tmp_path / "server.log"
    request = pb.CheckoutRequest(
        request_id="crash-e2e-1", order_id="order-crash",
        tenders=[pb.CheckoutTender(card=card(n), amount=usd(5_00)) for n in numbers],
    )

    server = await asyncio.to_thread(start_server, config, ["all"], log)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = authorization_pb2_grpc.AuthorizationServiceStub(channel)
            pending = asyncio.ensure_future(stub.Checkout(request, metadata=auth(), timeout=20))

            async def second_card_debited() -> bool:
                return (await ledger.get_card("demo", numbers[1])).balance_minor < CARD_BALANCE

            assert await _wait_for(second_card_debited, 15), server.logs()
            # Freeze the server's next Redis write, then kill it: it dies between two tenders.
            await redis_client.execute_command("CLIENT", "PAUSE", "5000", "WRITE")
            server.process.kill()
            server.process.wait(10)
            await redis_client.execute_command("CLIENT", "UNPAUSE")
            with pytest.raises(grpc.aio.AioRpcError):
                await pending
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)

    balances = [(await ledger.get_card("demo", n)).balance_minor for n in numbers]
    debited = [b for b in balances if b < CARD_BALANCE]
    if len(debited) == TENDERS:
        pytest.skip("the checkout finished before the kill landed")
    assert len(debited) >= 2  # the crash left real debits behind

    restarted = await asyncio.to_thread(start_server, config, ["all"], log)
    try:
        async with grpc.aio.insecure_channel(restarted.address) as channel:
            stub = authorization_pb2_grpc.AuthorizationServiceStub(channel)
            reply = None
            deadline = time.monotonic() + 15
            while reply is None:
                try:
                    reply = await stub.Checkout(request, metadata=auth(), timeout=10)
                except grpc.aio.AioRpcError as error:
                    # The dead worker's idempotency lease (1 s here) has to run out first.
                    if error.code() != grpc.StatusCode.ABORTED or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
    finally:
        restarted.stop()

    assert reply.outcome == pb.CHECKOUT_OUTCOME_DECLINED
    assert reply.total_approved.amount_minor == 0
    voided = [t for t in reply.tenders if t.state == pb.TENDER_STATE_VOIDED]
    assert len(voided) >= 2
    assert all(t.state != pb.TENDER_STATE_APPROVED for t in reply.tenders)
    assert [(await ledger.get_card("demo", n)).balance_minor for n in numbers] == [CARD_BALANCE] * TENDERS
