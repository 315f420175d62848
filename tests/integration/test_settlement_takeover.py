"""Leases and fencing of the settlement work queue and job turns, and a capture whose worker died
at the worst moment (after the provider applied it, before anything was recorded)."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from giftcard.authorization.v1 import authorization_pb2 as apb
from giftcard.gateway.v1 import gateway_pb2
from giftcard.settlement.v1 import settlement_pb2 as pb
from giftcard.type.v1 import card_pb2, money_pb2
from services.shared.work_queue import JobLeases, WorkQueue
from services.shared.background import merchant_call
from tests.support.mesh import auth, start_mesh


def usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code="USD")


@pytest.fixture
async def mesh(redis_client, redis_url):
    running = await start_mesh("all-in-one", redis_url, settlement={"scheduler_enabled": False, "lease_seconds": 0.5})
    yield running
    await running.close()


async def test_a_taken_over_claim_cannot_record_an_outcome(redis_client):
    queue = WorkQueue(redis_client, "stl")
    await queue.put("demo", "item-1", {"id": "item-1", "state": "queued"}, due_ms=0)

    first = (await queue.claim("demo", _bucket(queue, "item-1"), "worker-a", lease_ms=50, limit=10))[0]
    assert await queue.claim_one("demo", "item-1", "worker-b", lease_ms=50) is None  # leased
    await asyncio.sleep(0.1)
    second = await queue.claim_one("demo", "item-1", "worker-b", lease_ms=5_000)

    assert (first.fence, second.fence) == (1, 2)
    recorded, item = await queue.finish("demo", first, {"state": "settled"}, final=True)
    assert not recorded and item["state"] == "queued" and item["owner"] == "worker-b"
    recorded, item = await queue.finish("demo", second, {"state": "failed"}, final=True)
    assert recorded and item["state"] == "failed"
    assert await queue.depth("demo") == (0, 0)


async def test_a_job_turn_is_one_owners_until_its_lease_ends(redis_client):
    leases = JobLeases(redis_client)

    first = await leases.acquire("expiry", "demo", "worker-a", 50)
    assert await leases.acquire("expiry", "demo", "worker-b", 50) == 0
    assert await leases.acquire("expiry", "demo", "worker-a", 50) == first  # renewed by its owner
    assert await leases.acquire("expiry", "acme", "worker-b", 50) > 0  # another merchant's turn
    await asyncio.sleep(0.1)
    assert await leases.acquire("expiry", "demo", "worker-b", 50) == first + 1


async def test_a_capture_applied_by_a_worker_that_died_before_recording_it_is_not_applied_again(mesh):
    runtime = mesh.runtimes[0]
    ledger = runtime.providers.native_ledger
    number = "7777" + "".join(secrets.choice("0123456789") for _ in range(12))
    await ledger.create_card("demo", number, "USD", balance_minor=100_00, active=True)
    hold = (await mesh.stub("authorization").Authorize(apb.AuthorizeRequest(
        request_id="auth-1", order_id="order-1", card=card_pb2.CardRef(card_number=number), amount=usd(60_00),
    ), metadata=auth(), timeout=10)).hold
    queued = await mesh.stub("settlement").Capture(pb.CaptureRequest(
        request_id="cap-1", hold_id=hold.hold_id, amount=usd(20_00), defer_to_batch=True,
    ), metadata=auth(), timeout=10)
    logic = runtime.schedulers[0].jobs.logic
    settlement_id = queued.settlement.settlement_id

    # A worker claims the item and the provider applies the capture; then the worker dies.
    claim = await logic.settlements.claim_one("demo", settlement_id, "doomed-worker", logic.limits.lease_ms)
    with merchant_call("demo", 10):
        await runtime.client("gateway").CaptureHold(gateway_pb2.CaptureHoldRequest(
            reference_id=claim.item["reference_id"], card=card_pb2.CardRef(card_number=number),
            provider_hold_id=(await logic.holds.get("demo", hold.hold_id)).provider_hold_id, amount=usd(20_00)))
    assert (await ledger.get_card("demo", number)).balance_minor == 80_00

    with merchant_call("demo", 10):
        assert await logic.run_batch("demo", 10) == []  # still leased by the dead worker
        await asyncio.sleep(0.6)
        done = await logic.run_batch("demo", 10)

    assert [(d["id"], d["state"], d["captured"]) for d in done] == [(settlement_id, "settled", 20_00)]
    captures = [e for e in await ledger.history("demo", number) if e["kind"] == "capture"]
    assert [e["amount_minor"] for e in captures] == [-20_00]
    state = await ledger.get_card("demo", number)
    assert (state.balance_minor, state.held_minor) == (80_00, 40_00)
    recorded = await logic.holds.get("demo", hold.hold_id)
    assert (recorded.captured, recorded.reserved, recorded.transferred) == (20_00, 0, 40_00)
    recorded, _ = await logic.settlements.finish("demo", claim, {"state": "failed"}, final=True)
    assert not recorded  # the dead worker, were it to come back, changes nothing


def _bucket(queue: WorkQueue, item_id: str) -> int:
    from services.shared.keys import bucket_of

    return bucket_of(item_id)
