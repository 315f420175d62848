"""The mesh as real processes: separate-process mode over gRPC, and graceful SIGTERM drain."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest
import redis

from giftcard.balance.v1 import balance_pb2, balance_pb2_grpc
from giftcard.type.v1 import card_pb2
from tests.support.mesh import auth
from tests.support.processes import start_server, write_config

REQUEST = balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number="6035710000000001"))


@pytest.fixture
def config(tmp_path, redis_url, redis_client):
    return write_config(tmp_path, redis_url)


async def test_separate_processes_serve_get_balance_through_the_gateway(config, tmp_path):
    gateway = start_server(config, ["gateway"], tmp_path / "gateway.log")
    balance = start_server(
        config, ["balance"], tmp_path / "balance.log",
        env={"GIFTCARD_ENDPOINTS__GATEWAY": gateway.address},
    )
    try:
        async with grpc.aio.insecure_channel(balance.address) as channel:
            reply = await balance_pb2_grpc.BalanceServiceStub(channel).GetBalance(REQUEST, metadata=auth(), timeout=5)
        assert (reply.available.amount_minor, reply.available.currency_code) == (10000, "USD")
        assert reply.masked_number == "603571******0001"
    finally:
        assert balance.stop() == 0
        assert gateway.stop() == 0


async def test_sigterm_lets_in_flight_calls_finish_then_exits_zero(config, tmp_path, redis_url):
    server = start_server(config, ["all"], tmp_path / "all.log")
    admin = redis.Redis.from_url(redis_url)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = balance_pb2_grpc.BalanceServiceStub(channel)
        await stub.GetBalance(REQUEST, metadata=auth(), timeout=5)  # warm: scripts loaded, pool open
        # Freeze Redis so that the next calls are certainly inside the server when SIGTERM lands.
        admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        in_flight = [
            asyncio.ensure_future(stub.GetBalance(REQUEST, metadata=auth(), timeout=10)) for _ in range(20)
        ]
        await asyncio.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        replies = await asyncio.gather(*in_flight)
    assert [r.available.amount_minor for r in replies] == [10000] * 20
    assert await asyncio.to_thread(server.process.wait, 15) == 0
    admin.close()
