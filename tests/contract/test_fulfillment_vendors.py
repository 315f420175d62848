"""Fulfillment through the mesh (gRPC FulfillmentService) with Radial, Clutch and SmartClixx as the
merchant's provider over real HTTP: e-gift issuance (Radial FundAndActivate Virtual; Clutch
allocate by CardsetID -> activate + issue; SmartClixx e-card retrieve with CVV2 -> activate) and
physical activation; the vendor ledger ends loaded exactly once, a second activation is
CARD_ALREADY_ACTIVE."""

from __future__ import annotations

import uuid
from decimal import Decimal

import grpc
import httpx
import pytest

from giftcard.fulfillment.v1 import fulfillment_pb2 as fpb
from tests.contract.conftest import build_env, details
from tests.contract.test_contract import card, usd

VENDORS = {"radial": "EGIFT", "clutch": "EGIFT", "smartclixx": "EGIFT"}


@pytest.fixture(params=list(VENDORS))
async def env(request, simulators, redis_client, redis_url):
    built = await build_env(request.param, simulators, redis_url)
    yield built
    await built.mesh.close()


def rid() -> str:
    return f"rq-{uuid.uuid4().hex[:16]}"


async def call(env, rpc: str, request):
    return await getattr(env.mesh.stub("fulfillment"), rpc)(request, metadata=env.metadata(), timeout=15)


def vendor_balance(env, number: str) -> int:
    reply = httpx.get(f"{env.simulator.base_url}/_sim/cards/{number}", timeout=5)
    reply.raise_for_status()
    return int(Decimal(str(reply.json()["balance"])).scaleb(2))


async def test_egift_issuance_loads_the_new_card_once(env):
    reply = await call(env, "IssueElectronicCard", fpb.IssueElectronicCardRequest(
        request_id=rid(), order_id=f"o-{uuid.uuid4().hex[:8]}", line_id="1", program_id=VENDORS[env.vendor],
        amount=usd(25_00)))
    assert reply.activation.state == fpb.ACTIVATION_STATE_COMPLETED
    assert reply.activation.provider == env.vendor
    issued = reply.card
    assert issued.card_number and (issued.pin or issued.cvv2)
    if env.vendor == "smartclixx":
        assert issued.cvv2 and not issued.pin
    assert vendor_balance(env, issued.card_number) == 25_00


async def test_physical_activation_loads_once_and_again_is_card_already_active(env):
    pin = env.harness.activation_pin
    number = await env.ledger.seed("shadow", 0, active=False, pin=pin or None)
    order = f"o-{uuid.uuid4().hex[:8]}"
    reply = await call(env, "ActivatePhysicalCard", fpb.ActivatePhysicalCardRequest(
        request_id=rid(), order_id=order, line_id="1", card=card(number, pin), amount=usd(40_00)))
    assert reply.activation.state == fpb.ACTIVATION_STATE_COMPLETED
    assert vendor_balance(env, number) == 40_00
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(env, "ActivatePhysicalCard", fpb.ActivatePhysicalCardRequest(
            request_id=rid(), order_id=f"o-{uuid.uuid4().hex[:8]}", line_id="1", card=card(number, pin),
            amount=usd(40_00)))
    assert details(caught.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "CARD_ALREADY_ACTIVE")
    assert vendor_balance(env, number) == 40_00


async def test_radial_claim_link_store_issues_a_claim_link_and_proxy_number(simulators, redis_client, redis_url):
    sim = simulators("radial")
    httpx.patch(f"{sim.base_url}/_sim/config", json={"stores": {
        "STORE1": {"claim_link": False, "promo_codes": None},
        "CLAIM": {"claim_link": True, "promo_codes": None},
    }}, timeout=5).raise_for_status()
    env = await build_env("radial", simulators, redis_url, options={
        "store_id": "CLAIM", "breaker_failure_threshold": 3, "breaker_reset_seconds": 0.5, "backoff_seconds": 0.01})
    try:
        reply = await call(env, "IssueElectronicCard", fpb.IssueElectronicCardRequest(
            request_id=rid(), order_id=f"o-{uuid.uuid4().hex[:8]}", line_id="1", program_id="EGIFT",
            amount=usd(15_00)))
        assert reply.activation.state == fpb.ACTIVATION_STATE_COMPLETED
        assert reply.WhichOneof("credential") == "claim_link"
        assert reply.claim_link.url.startswith("https://claim.") and reply.claim_link.proxy_number.startswith("9990")
        ledger = httpx.get(f"{sim.base_url}/_sim/ledger", timeout=5).json()
        loaded = [t for t in ledger["transactions"] if t["kind"] == "FundAndActivate"]
        assert len(loaded) == 1 and loaded[0]["amount"] == "15.00"
    finally:
        await env.mesh.close()
