"""The outcome resolver resumes interrupted e-gift issuance (issue 6): a crash between allocate and
activate leaves the line ALLOCATED; after the grace period settlement's resolver job finishes it
with the same card (the provider replays, never a second allocation or load), marks it COMPLETED
and publishes one order event; the client's retry then receives the credentials."""

from __future__ import annotations

import asyncio
import logging

import pytest

from giftcard.fulfillment.v1 import fulfillment_pb2 as pb
from giftcard.type.v1 import card_pb2
from services.fulfillment.activations import ActivationStore
from services.shared.background import merchant_call
from tests.integration.test_fulfillment import (
    balance_of,
    card_count,
    crash_once,
    issue_request,
    merchants,
    order_events,
)
from tests.support.mesh import DEMO_KEY, MODES, auth, start_mesh
from tests.support.secrets_scan import SecretWatch

GRACE = 1.0
SETTLEMENT = {"scheduler_enabled": False, "job_api_keys": {"demo": DEMO_KEY}, "resolver_grace_seconds": GRACE}


@pytest.fixture(autouse=True)
async def watch(caplog, redis_client):
    """Every card number / PIN a test registers must appear in no log record and nowhere in Redis
    (the resolver keeps the credentials sealed only)."""
    caplog.set_level(logging.DEBUG)
    secrets = SecretWatch()
    yield secrets
    assert secrets.leaks_in_logs(caplog.records) == []
    assert await secrets.leaks_in_redis(redis_client) == []


@pytest.fixture(params=MODES)
async def mesh(request, redis_client, redis_url):
    running = await start_mesh(request.param, redis_url, merchants=merchants(), settlement=SETTLEMENT)
    yield running
    await running.close()


async def run_resolver(mesh) -> dict[str, int]:
    """One run of the scheduler's resolver job, as the scheduler does it (with the job key)."""
    runtime = next(r for r in mesh.runtimes if "settlement" in r.services)
    with merchant_call("demo", 30, f"Bearer {DEMO_KEY}"):
        return await runtime.schedulers[0].jobs.resolver("demo")


async def get_activation(mesh, order: str) -> pb.Activation:
    reply = await mesh.stub("fulfillment").GetActivation(
        pb.GetActivationRequest(order_id=order, line_id="line-1"), metadata=auth(), timeout=5)
    return reply.activation


async def test_resolver_completes_an_allocated_line_with_the_same_card_once(mesh, redis_client, watch):
    cards_before = await card_count(redis_client)
    gateway = await crash_once(mesh, "Activate", after=False, order="order-r")
    allocated = gateway.allocations[0]
    watch.add(allocated.card_number, allocated.pin)
    index = ActivationStore.index_key("demo")
    assert await redis_client.zcard(index) == 1

    # Within the grace period the line may still be some live request's: left alone.
    assert (await run_resolver(mesh)).get("egift_lines") == 0
    assert (await get_activation(mesh, "order-r")).state == pb.ACTIVATION_STATE_ALLOCATED

    await asyncio.sleep(GRACE + 0.2)
    assert (await run_resolver(mesh))["egift_lines"] == 1
    line = await get_activation(mesh, "order-r")
    assert line.state == pb.ACTIVATION_STATE_COMPLETED
    assert await card_count(redis_client) == cards_before + 1  # the allocated card, never a second one
    assert await balance_of(mesh, allocated.card_number, allocated.pin) == (3000, card_pb2.CARD_STATUS_ACTIVE)
    events = await order_events(redis_client)
    assert len(events) == 1 and events[0]["activation_id"] == line.activation_id
    assert await redis_client.zcard(index) == 0

    # A second run finds nothing: no second load, no second event.
    assert (await run_resolver(mesh))["egift_lines"] == 0
    assert await balance_of(mesh, allocated.card_number, allocated.pin) == (3000, card_pb2.CARD_STATUS_ACTIVE)
    assert len(await order_events(redis_client)) == 1

    # The client's retry receives the credentials the resolver kept sealed, once; a later request
    # for the line (another request_id) is CARD_ALREADY_ACTIVE as for any completed line.
    stub = mesh.stub("fulfillment")
    retried = await stub.IssueElectronicCard(issue_request("r-1", "order-r", "line-1", "egift-pin", 3000),
                                             metadata=auth(), timeout=5)
    assert (retried.card.card_number, retried.card.pin) == (allocated.card_number, allocated.pin)
    assert retried.activation.activation_id == line.activation_id
    again = await stub.IssueElectronicCard(issue_request("r-1", "order-r", "line-1", "egift-pin", 3000),
                                           metadata=auth(), timeout=5)
    assert again.card.card_number == allocated.card_number  # the idempotent replay of r-1
    record = await redis_client.hgetall(ActivationStore.record_key("demo", "order-r", "line-1"))
    assert b"sealed" not in record
    assert await balance_of(mesh, allocated.card_number, allocated.pin) == (3000, card_pb2.CARD_STATUS_ACTIVE)
    assert len(await order_events(redis_client)) == 1


async def test_resolver_replays_an_activation_the_provider_did_without_a_second_load(mesh, redis_client, watch):
    # The provider activated and loaded the card, the service never heard: the line is ALLOCATED
    # and the resolver's activation (same reference id) is a replay.
    gateway = await crash_once(mesh, "Activate", after=True, order="order-s")
    allocated = gateway.allocations[0]
    watch.add(allocated.card_number, allocated.pin)
    assert (await get_activation(mesh, "order-s")).state == pb.ACTIVATION_STATE_ALLOCATED
    assert await balance_of(mesh, allocated.card_number, allocated.pin) == (3000, card_pb2.CARD_STATUS_ACTIVE)

    await asyncio.sleep(GRACE + 0.2)
    assert (await run_resolver(mesh))["egift_lines"] == 1
    assert (await get_activation(mesh, "order-s")).state == pb.ACTIVATION_STATE_COMPLETED
    assert await balance_of(mesh, allocated.card_number, allocated.pin) == (3000, card_pb2.CARD_STATUS_ACTIVE)
    assert len(await order_events(redis_client)) == 1


async def test_the_scheduler_resumes_a_line_in_microservices_mode_with_only_the_internal_token(
    redis_client, redis_url, watch,
):
    """Separate processes, no merchant job key: settlement's own scheduler reaches the gateway with
    security.internal_token and finishes the line on its own."""
    running = await start_mesh(
        "separate", redis_url, merchants=merchants(),
        security={"dev_mode": True, "internal_token": "internal-test-token-0123456789"},
        settlement={"tick_seconds": 0.2, "resolver_interval_seconds": 0.5, "resolver_grace_seconds": GRACE},
    )
    try:
        gateway = await crash_once(running, "Activate", after=False, order="order-t")
        allocated = gateway.allocations[0]
        watch.add(allocated.card_number, allocated.pin)
        for _ in range(100):
            if (await get_activation(running, "order-t")).state == pb.ACTIVATION_STATE_COMPLETED:
                break
            await asyncio.sleep(0.2)
        assert (await get_activation(running, "order-t")).state == pb.ACTIVATION_STATE_COMPLETED
        assert await balance_of(running, allocated.card_number, allocated.pin) == (3000, card_pb2.CARD_STATUS_ACTIVE)
        assert len(await order_events(redis_client)) == 1
    finally:
        await running.close()
