"""Two settlement schedulers (two mesh processes' worth of runtimes) over the same Redis drain one
queue of 1,000 deferred captures at once: every capture is applied exactly once at the provider."""

from __future__ import annotations

import asyncio
import secrets

from giftcard.authorization.v1 import authorization_pb2 as apb
from giftcard.settlement.v1 import settlement_pb2 as pb
from giftcard.type.v1 import card_pb2, money_pb2
from services.settlement.logic import SETTLED
from tests.support.mesh import auth, start_mesh

COUNT = 1000
FAST = {"tick_seconds": 0.05, "batch_interval_seconds": 0.05, "batch_size": 100, "concurrency": 8,
        "reversal_interval_seconds": 3600, "expiry_sweep_interval_seconds": 3600, "resolver_interval_seconds": 3600}


def usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code="USD")


async def _queue_captures(mesh, count: int) -> list[tuple[str, str, int]]:
    """(card number, hold id, captured amount) for `count` holds, each with one deferred capture."""
    ledger = mesh.runtimes[0].providers.native_ledger
    authorization, settlement = mesh.stub("authorization"), mesh.stub("settlement")
    semaphore = asyncio.Semaphore(32)

    async def one(i: int) -> tuple[str, str, int]:
        number = "8888" + f"{i:06d}" + "".join(secrets.choice("0123456789") for _ in range(6))
        amount = 1_00 + i
        async with semaphore:
            await ledger.create_card("demo", number, "USD", balance_minor=50_00, active=True)
            hold = (await authorization.Authorize(apb.AuthorizeRequest(
                request_id=f"auth-{i}", order_id=f"order-{i}", card=card_pb2.CardRef(card_number=number),
                amount=usd(20_00)), metadata=auth(), timeout=30)).hold
            reply = await settlement.Capture(pb.CaptureRequest(
                request_id=f"cap-{i}", hold_id=hold.hold_id, amount=usd(amount), shipment_id=f"ship-{i}",
                final_shipment=True, defer_to_batch=True), metadata=auth(), timeout=30)
            assert reply.settlement.state == pb.SETTLEMENT_STATE_QUEUED
        return number, hold.hold_id, amount

    return await asyncio.gather(*(one(i) for i in range(count)))


async def test_two_schedulers_capture_1000_open_settlements_exactly_once(redis_client, redis_url):
    filler = await start_mesh("all-in-one", redis_url, settlement={"scheduler_enabled": False})
    replicas = []
    try:
        queued = await _queue_captures(filler, COUNT)
        logic = filler.runtimes[0].schedulers[0].jobs.logic
        assert (await logic.settlements.depth("demo"))[0] == COUNT

        replicas = [await start_mesh("all-in-one", redis_url, settlement=FAST) for _ in range(2)]
        for _ in range(1200):
            if (await logic.settlements.depth("demo"))[0] == 0:
                break
            await asyncio.sleep(0.05)
        assert (await logic.settlements.depth("demo"))[0] == 0

        ledger = filler.runtimes[0].providers.native_ledger
        for number, hold_id, amount in queued:
            captures = [e for e in await ledger.history("demo", number) if e["kind"] == "capture"]
            assert [e["amount_minor"] for e in captures] == [-amount], number
            state = await ledger.get_card("demo", number)
            assert (state.balance_minor, state.held_minor) == (50_00 - amount, 0)
            hold = await logic.holds.get("demo", hold_id)
            assert (hold.state, hold.captured, hold.reserved) == ("closed", amount, 0)
        # Both replicas took part, and together they finished each item once.
        per_replica = [_settled(r) for r in replicas]
        assert all(n > 0 for n in per_replica), per_replica
        assert sum(per_replica) == COUNT
        items = [await logic.settlements.get("demo", logic.ids.derive("stl", "demo", "Capture", f"cap-{i}"))
                 for i in range(COUNT)]
        assert all(item["state"] == SETTLED for item in items)
    finally:
        for mesh in replicas:
            await mesh.close()
        await filler.close()


def _settled(mesh) -> int:
    value = mesh.runtimes[0].registry.get_sample_value(
        "giftcard_settlement_items_total", {"queue": "captures", "outcome": SETTLED})
    return int(value or 0)
