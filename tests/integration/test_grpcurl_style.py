"""A developer with grpcurl knows nothing but the server address: list services by reflection,
then call GetBalance from JSON. This test does the same with a reflection client."""

from __future__ import annotations

import asyncio
import json

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.support.mesh import start_mesh


def grpcurl(address: str, method: str | None, body: dict | None) -> list[str] | dict:
    """`grpcurl -plaintext -H 'authorization: Bearer dev-demo-key' -d BODY ADDRESS METHOD`
    (or `grpcurl ADDRESS list` when method is None)."""
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        if method is None:
            return sorted(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        service_name, rpc_name = method.rsplit("/", 1)
        rpc = pool.FindServiceByName(service_name).FindMethodByName(rpc_name)
        request_class = message_factory.GetMessageClass(rpc.input_type)
        response_class = message_factory.GetMessageClass(rpc.output_type)
        request = json_format.ParseDict(body or {}, request_class())
        call = channel.unary_unary(
            f"/{service_name}/{rpc_name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        reply = call(request, metadata=(("authorization", "Bearer dev-demo-key"),), timeout=5)
        return json.loads(json_format.MessageToJson(reply))


async def test_list_services_and_call_get_balance_from_json(redis_client, redis_url):
    mesh = await start_mesh("all-in-one", redis_url)
    address = f"127.0.0.1:{mesh.ports['balance']}"
    try:
        services = await asyncio.to_thread(grpcurl, address, None, None)
        assert "giftcard.balance.v1.BalanceService" in services
        assert "giftcard.authorization.v1.AuthorizationService" in services
        assert "grpc.health.v1.Health" in services

        reply = await asyncio.to_thread(
            grpcurl, address, "giftcard.balance.v1.BalanceService/GetBalance",
            {"card": {"cardNumber": "6035710000000001"}},
        )
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
