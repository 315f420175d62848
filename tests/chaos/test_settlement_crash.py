"""kill -9 of the process running the settlement scheduler, at random points of its batches,
several times; after a restart every queued capture is applied exactly once at the provider, every
scheduled reversal released exactly once, and no write-ahead intent is left unresolved once the
resolver's grace period has passed."""

from __future__ import annotations

import asyncio
import random
import secrets
import time

from giftcard.authorization.v1 import authorization_pb2 as apb
from giftcard.settlement.v1 import settlement_pb2 as pb
from giftcard.type.v1 import card_pb2, money_pb2
from services.shared.keys import INDEX_BUCKETS, bucket_tag
from tests.support.mesh import auth, start_mesh
from tests.support.processes import start_server, write_config

CAPTURES = 150
REVERSALS = 30
KILLS = 4
# Small batches on a short beat so a kill lands in the middle of one; short leases and grace so
# a dead worker's items and intents are taken over within the test.
SCHEDULE = {
    "tick_seconds": 0.05, "batch_interval_seconds": 0.2, "batch_size": 8, "concurrency": 4,
    "reversal_interval_seconds": 0.2, "resolver_interval_seconds": 0.3, "resolver_grace_seconds": 1.0,
    "lease_seconds": 1.0, "expiry_sweep_interval_seconds": 3600,
}


def usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code="USD")


async def _prepare(mesh) -> tuple[list[tuple[str, str, int]], list[str]]:
    """Deferred captures (final shipment, so the rest of each hold is released at once) and full
    reversals scheduled for now; nothing is sent to the provider for them until a scheduler runs."""
    ledger = mesh.runtimes[0].providers.native_ledger
    authorization, settlement = mesh.stub("authorization"), mesh.stub("settlement")
    semaphore = asyncio.Semaphore(16)

    async def hold_on_new_card(i: int) -> tuple[str, str]:
        number = "5555" + f"{i:06d}" + "".join(secrets.choice("0123456789") for _ in range(6))
        await ledger.create_card("demo", number, "USD", balance_minor=50_00, active=True)
        hold = (await authorization.Authorize(apb.AuthorizeRequest(
            request_id=f"auth-{i}", order_id=f"order-{i}", card=card_pb2.CardRef(card_number=number),
            amount=usd(30_00)), metadata=auth(), timeout=30)).hold
        return number, hold.hold_id

    async def capture(i: int) -> tuple[str, str, int]:
        async with semaphore:
            number, hold_id = await hold_on_new_card(i)
            amount = 10_00 + i
            await settlement.Capture(pb.CaptureRequest(
                request_id=f"cap-{i}", hold_id=hold_id, amount=usd(amount), final_shipment=True,
                defer_to_batch=True), metadata=auth(), timeout=30)
            return number, hold_id, amount

    async def reversal(i: int) -> str:
        async with semaphore:
            number, hold_id = await hold_on_new_card(CAPTURES + i)
            await settlement.ScheduleReversal(pb.ScheduleReversalRequest(
                request_id=f"rev-{i}", hold_id=hold_id, reason="order cancelled"), metadata=auth(), timeout=30)
            return number

    captures = await asyncio.gather(*(capture(i) for i in range(CAPTURES)))
    reversals = await asyncio.gather(*(reversal(i) for i in range(REVERSALS)))
    return list(captures), list(reversals)


async def _open_intents(redis, merchant: str = "demo") -> int:
    return sum([await redis.zcard(f"mesh:intents:{bucket_tag('intent', merchant, b)}") for b in range(INDEX_BUCKETS)])


async def test_kill_9_mid_batch_then_restart_settles_everything_exactly_once(redis_client, redis_url, tmp_path):
    # The test's own runtime queues the work and reads the results; its scheduler stays off.
    mesh = await start_mesh("all-in-one", redis_url, settlement={"scheduler_enabled": False})
    rng = random.Random()
    try:
        captures, reversals = await _prepare(mesh)
        logic = mesh.runtimes[0].schedulers[0].jobs.logic
        config = write_config(tmp_path, redis_url, settlement=SCHEDULE)

        killed_with_work_left = 0
        for attempt in range(KILLS):
            queued = (await logic.settlements.depth("demo"))[0]
            server = start_server(config, ["all"], tmp_path / f"worker-{attempt}.log")
            # Kill at a random point once the worker is settling (its start-up time varies with
            # the machine's load; a fixed delay would sometimes land after the queue was empty).
            deadline = time.monotonic() + 30
            while queued and (await logic.settlements.depth("demo"))[0] >= queued and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            server.process.kill()  # SIGKILL: no drain, no cleanup
            server.process.wait(10)
            if (await logic.settlements.depth("demo"))[0] > 0:
                killed_with_work_left += 1
        assert killed_with_work_left >= 2, "the kills should land while captures are still queued"
        assert (await logic.settlements.depth("demo"))[0] < CAPTURES, "the killed workers should have settled some"

        server = start_server(config, ["all"], tmp_path / "worker-final.log")
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                left = ((await logic.settlements.depth("demo"))[0], (await logic.reversals.depth("demo"))[0],
                        await _open_intents(redis_client))
                if left == (0, 0, 0):
                    break
                await asyncio.sleep(0.2)
            assert left == (0, 0, 0), f"(captures, reversals, intents) still open: {left}"
        finally:
            assert server.stop() == 0

        ledger = mesh.runtimes[0].providers.native_ledger
        for number, hold_id, amount in captures:
            history = await ledger.history("demo", number)
            assert [e["amount_minor"] for e in history if e["kind"] == "capture"] == [-amount], number
            state = await ledger.get_card("demo", number)
            assert (state.balance_minor, state.held_minor) == (50_00 - amount, 0)
            hold = await logic.holds.get("demo", hold_id)
            assert (hold.state, hold.captured, hold.released, hold.reserved) == ("closed", amount, 30_00 - amount, 0)
        for number in reversals:
            history = await ledger.history("demo", number)
            assert [e["amount_minor"] for e in history if e["kind"] == "capture"] == []
            assert len([e for e in history if e["kind"] == "release"]) == 1
            state = await ledger.get_card("demo", number)
            assert (state.balance_minor, state.held_minor) == (50_00, 0)
    finally:
        await mesh.close()
