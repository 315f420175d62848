"""giftcard_client against live servers: the mesh itself, and a plain gRPC server whose servicer
fails on purpose to show the retry policy and the default deadline."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

import giftcard_client
from giftcard.balance.v1 import balance_pb2, balance_pb2_grpc
from giftcard.type.v1 import card_pb2, money_pb2
from tests.support.mesh import DEMO_KEY, start_mesh

CARD = "6035710000000001"


@pytest.fixture
async def mesh(redis_client, redis_url):
    running = await start_mesh("all-in-one", redis_url)
    yield running
    await running.close()


async def test_connect_sets_the_key_so_calls_need_no_metadata(mesh):
    async with giftcard_client.connect(f"127.0.0.1:{mesh.ports['balance']}", DEMO_KEY) as client:
        reply = await client.balance.GetBalance(
            balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=CARD))
        )
        plan = await client.balance.PlanTender(balance_pb2.PlanTenderRequest(
            order_total=money_pb2.Money(amount_minor=15000, currency_code="USD"),
            cards=[card_pb2.CardRef(card_number=CARD)],
        ))
    assert (reply.masked_number, reply.balance.amount_minor) == ("603571******0001", 10000)
    assert (plan.covered.amount_minor, plan.remainder.amount_minor) == (10000, 5000)


async def test_a_wrong_key_is_unauthenticated(mesh):
    async with giftcard_client.connect(f"127.0.0.1:{mesh.ports['balance']}", "not-a-key") as client:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await client.balance.GetBalance(balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=CARD)))
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_sync_client_works_too(mesh):
    def call():  # in a thread: the server runs on this test's event loop
        with giftcard_client.connect_sync(f"127.0.0.1:{mesh.ports['balance']}", DEMO_KEY) as client:
            return client.balance.GetBalance(balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=CARD)))

    reply = await asyncio.to_thread(call)
    assert reply.balance.amount_minor == 10000


def test_new_request_id_is_a_fresh_uuid4():
    first, second = giftcard_client.new_request_id(), giftcard_client.new_request_id()
    assert first != second
    assert uuid.UUID(first).version == 4


class _Flaky(balance_pb2_grpc.BalanceServiceServicer):
    """Fails with `codes` in turn, then answers; records what each attempt carried."""

    def __init__(self, codes, delay: float = 0.0) -> None:
        self.codes = list(codes)
        self.delay = delay
        self.attempts: list[tuple[str, float | None]] = []

    async def GetBalance(self, request, context):
        metadata = dict(context.invocation_metadata())
        self.attempts.append((metadata.get("authorization", ""), context.time_remaining()))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.codes:
            await context.abort(self.codes.pop(0), "try again")
        return balance_pb2.GetBalanceResponse(masked_number="603571******0001")


@pytest.fixture
async def flaky_server():
    servers = []

    async def start(servicer):
        server = grpc.aio.server()
        balance_pb2_grpc.add_BalanceServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(0)


async def test_unavailable_and_aborted_are_retried_with_the_same_key(flaky_server):
    servicer = _Flaky([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED])
    target = await flaky_server(servicer)
    async with giftcard_client.connect(target, "k-1", deadline=5.0) as client:
        reply = await client.balance.GetBalance(balance_pb2.GetBalanceRequest())
    assert reply.masked_number == "603571******0001"
    assert [auth for auth, _ in servicer.attempts] == ["Bearer k-1"] * 3
    # The default deadline reached the server (a little less than 5 s remained).
    assert all(remaining is not None and 0 < remaining <= 5.0 for _, remaining in servicer.attempts)


async def test_retries_stop_after_four_attempts(flaky_server):
    servicer = _Flaky([grpc.StatusCode.UNAVAILABLE] * 10)
    target = await flaky_server(servicer)
    async with giftcard_client.connect(target, "k-1") as client:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await client.balance.GetBalance(balance_pb2.GetBalanceRequest())
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(servicer.attempts) == 4


async def test_other_codes_are_not_retried(flaky_server):
    servicer = _Flaky([grpc.StatusCode.FAILED_PRECONDITION])
    target = await flaky_server(servicer)
    async with giftcard_client.connect(target, "k-1") as client:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await client.balance.GetBalance(balance_pb2.GetBalanceRequest())
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(servicer.attempts) == 1


async def test_default_deadline_applies_and_an_explicit_timeout_wins(flaky_server):
    target = await flaky_server(_Flaky([], delay=1.0))
    async with giftcard_client.connect(target, "k-1", deadline=0.2) as client:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await client.balance.GetBalance(balance_pb2.GetBalanceRequest())
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        reply = await client.balance.GetBalance(balance_pb2.GetBalanceRequest(), timeout=5)
    assert reply.masked_number
