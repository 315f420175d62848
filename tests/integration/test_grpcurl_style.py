"""A developer with grpcurl knows nothing but the server address: list services by reflection,
then call GetBalance from JSON. This test does the same with a reflection client."""

from __future__ import annotations

import asyncio
from functools import partial

from tests.support.grpcurl import grpcurl
from tests.support.mesh import start_mesh

DEMO = {"authorization": "Bearer dev-demo-key"}


async def test_list_services_and_call_get_balance_from_json(redis_client, redis_url):
    mesh = await start_mesh("all-in-one", redis_url)
    address = f"127.0.0.1:{mesh.ports['balance']}"
    try:
        services = await asyncio.to_thread(grpcurl, address, None, None)
        assert "giftcard.balance.v1.BalanceService" in services
        assert "giftcard.authorization.v1.AuthorizationService" in services
        assert "grpc.health.v1.Health" in services

        reply = await asyncio.to_thread(partial(
            grpcurl, address, "giftcard.balance.v1.BalanceService/GetBalance",
            {"card": {"cardNumber": "6035710000000001"}}, DEMO,
        ))
        assert reply == {
            "maskedNumber": "603571******0001",
            "status": "CARD_STATUS_ACTIVE",
            "balance": {"amountMinor": "10000", "currencyCode": "USD"},
            "held": {"currencyCode": "USD"},
            "available": {"amountMinor": "10000", "currencyCode": "USD"},
            "provider": "native",
        }
    finally:
        await mesh.close()
