"""The shared record scripts on a real Redis, without servers: the hold invariant under racing
operations, the transaction state machine, client-id binding and tombstones, intent claims."""

from __future__ import annotations

import asyncio
import random

import pytest

from common.errors import MeshError
from common.sealing import Sealer
from giftcard.type.v1 import card_pb2
from services.shared.holds import HoldStore
from services.shared.intents import IntentLog
from services.shared.keys import IdDeriver, record_key
from services.shared.transactions import TransactionStore

SEALER = Sealer(b"test-seal-key-0123456789abcdef")
CARD = card_pb2.CardRef(card_number="6035710000009999", pin="4321")


async def _hold(store: HoldStore, merchant="m1", hold_id="hld_1", authorized=10_00) -> None:
    await store.create(merchant, hold_id=hold_id, order_id="o", card=CARD, masked="603571******9999",
                       provider="native", provider_hold_id="h_x", hold_mode=1, currency="USD",
                       authorized=authorized, expires_at_ms=10**13)


async def test_racing_releases_and_captures_never_exceed_the_hold(redis_client):
    store = HoldStore(redis_client, SEALER)
    await _hold(store)
    rng = random.Random(7)
    gate = asyncio.Semaphore(16)  # the test client's connection pool is small

    async def operate(i: int):
        async with gate:
            return await _operate(i)

    async def _operate(i: int):
        kind = rng.choice(["release", "capture"])
        try:
            op = await store.begin("m1", "hld_1", f"op{i}", kind, rng.randint(1, 300))
        except MeshError as error:
            assert error.reason in ("AMOUNT_EXCEEDS_OPEN", "HOLD_NOT_OPEN")
            return 0
        if rng.random() < 0.3:
            await store.abort("m1", "hld_1", f"op{i}")
            return 0
        await store.commit("m1", "hld_1", f"op{i}", op.amount)
        return op.amount

    moved = await asyncio.gather(*(operate(i) for i in range(200)))
    hold = await store.get("m1", "hld_1")
    assert hold.reserved == 0
    assert hold.captured + hold.released == sum(moved) <= hold.authorized
    assert hold.open == hold.authorized - sum(moved)


async def test_hold_operations_are_idempotent_by_reference(redis_client):
    store = HoldStore(redis_client, SEALER)
    await _hold(store)
    first = await store.begin("m1", "hld_1", "rel-a", "release", 4_00)
    again = await store.begin("m1", "hld_1", "rel-a", "release", 4_00)
    assert first == again
    await store.commit("m1", "hld_1", "rel-a", 4_00)
    await store.commit("m1", "hld_1", "rel-a", 4_00)
    hold = await store.get("m1", "hld_1")
    assert (hold.released, hold.reserved, hold.open) == (4_00, 0, 6_00)
    last = await store.begin("m1", "hld_1", "rel-b", "release", None)
    assert last.amount == 6_00
    await store.commit("m1", "hld_1", "rel-b", 6_00)
    assert (await store.get("m1", "hld_1")).state == "released"
    with pytest.raises(MeshError) as caught:
        await store.begin("m1", "hld_1", "rel-c", "release", None)
    assert caught.value.reason == "HOLD_NOT_OPEN"


async def test_hold_card_is_sealed_and_bound_to_its_record(redis_client):
    store = HoldStore(redis_client, SEALER)
    await _hold(store)
    raw = await redis_client.hget(store.key("m1", "hld_1"), "card")
    assert b"6035710000009999" not in raw and b"4321" not in raw
    assert await store.card("m1", "hld_1") == CARD
    # Moved to another record, the sealed value does not open.
    await _hold(store, hold_id="hld_2")
    await redis_client.hset(store.key("m1", "hld_2"), "card", raw)
    with pytest.raises(Exception):
        await store.card("m1", "hld_2")


async def test_records_are_merchant_scoped(redis_client):
    store = HoldStore(redis_client, SEALER)
    await _hold(store, merchant="m1")
    with pytest.raises(MeshError) as caught:
        await store.get("m2", "hld_1")
    assert caught.value.reason == "HOLD_NOT_FOUND"
    # Percent-encoding keeps "a:b" + "c" apart from "a" + "b:c".
    assert record_key("hold", "a:b", "c") != record_key("hold", "a", "b:c")


async def test_transaction_state_machine(redis_client):
    store = TransactionStore(redis_client, SEALER)
    state = await store.create_pending("m1", transaction_id="txn_1", card=CARD, masked="x", currency="USD",
                                       amount=5_00, tip=0, order_id="o", client_transaction_id="", reference_id="r")
    assert state == "pending"
    assert await store.transition("m1", "txn_1", ("pending",), "approved", redeemed=5_00) == (True, "approved")
    assert await store.transition("m1", "txn_1", ("pending",), "declined") == (False, "approved")
    assert await store.transition("m1", "txn_1", ("approved",), "reversing") == (True, "reversing")
    assert await store.transition("m1", "txn_1", ("reversing",), "reversed", reversed_amount=5_00) == (True, "reversed")
    record = await store.get("m1", "txn_1")
    assert (record.state, record.redeemed, record.reversed_amount) == ("reversed", 5_00, 5_00)


async def test_client_id_tombstone_blocks_a_late_binding(redis_client):
    store = TransactionStore(redis_client, SEALER)
    assert (await store.tombstone_or_binding("m1", "pos-1")).tombstone
    with pytest.raises(MeshError) as caught:
        await store.claim_client_id("m1", "pos-1", target_kind="redemption", target_id="txn_1",
                                    reference_id="r", card=CARD)
    assert caught.value.reason == "TRANSACTION_REVERSED"
    assert await store.claim_client_id("m1", "pos-2", target_kind="redemption", target_id="txn_2",
                                       reference_id="r2", card=CARD)
    assert not await store.claim_client_id("m1", "pos-2", target_kind="redemption", target_id="txn_2",
                                           reference_id="r2", card=CARD)
    binding = await store.tombstone_or_binding("m1", "pos-2")
    assert (binding.tombstone, binding.target_id, binding.reference_id) == (False, "txn_2", "r2")


async def test_a_live_resolver_claim_is_not_taken_over(redis_client):
    log = IntentLog(redis_client, SEALER)
    assert await log.begin("m1", "ref-1", "redeem", CARD) == "pending"
    assert await log.begin("m1", "ref-1", "redeem", CARD) == "pending"
    assert await log.stale("m1", 0) == ["ref-1"]
    from services.shared.holds import now_ms

    taken, _ = await log.finish("m1", "ref-1", "resolving", ("pending", "resolving"), claim_before_ms=now_ms() - 60_000)
    assert taken
    again, state = await log.finish("m1", "ref-1", "resolving", ("pending", "resolving"), claim_before_ms=now_ms() - 60_000)
    assert (again, state) == (False, "resolving")
    stolen, _ = await log.finish("m1", "ref-1", "resolving", ("pending", "resolving"), claim_before_ms=now_ms() + 1)
    assert stolen  # a claim older than the cutoff (its resolver died) is taken over
    assert await log.finish("m1", "ref-1", "reversed", ("resolving",)) == (True, "reversed")
    assert await log.stale("m1", 0) == []


def test_derived_ids_are_deterministic_and_distinct():
    ids = IdDeriver(b"k" * 32)
    assert ids.derive("ref", "m1", "Redeem", "r1") == ids.derive("ref", "m1", "Redeem", "r1")
    assert ids.derive("ref", "m1", "Redeem", "r1") != ids.derive("ref", "m2", "Redeem", "r1")
    assert ids.derive("ref", "m1", "Checkout", "r1", 0) != ids.derive("ref", "m1", "Checkout", "r1", 1)
    assert IdDeriver(b"j" * 32).derive("ref", "m1", "Redeem", "r1") != ids.derive("ref", "m1", "Redeem", "r1")
