"""The activation record's Lua transitions on a real Redis: one live activation per order line,
moves only forward and only for the current attempt, one order event per completed line."""

from __future__ import annotations

from services.fulfillment.activations import ActivationStore

ARGS = dict(fingerprint="fp1", kind="egift", amount_minor=2500, currency="USD")


async def test_begin_creates_then_resumes_then_refuses_other_requests(redis_client):
    store = ActivationStore(redis_client)
    status, record = await store.begin("m", "o1", "l1", activation_id="act_a", **ARGS)
    assert (status, record.state, record.attempt, record.activation_id) == ("NEW", "PENDING", "1", "act_a")
    status, again = await store.begin("m", "o1", "l1", activation_id="act_b", **ARGS)
    assert (status, again.activation_id) == ("RESUME", "act_a")
    status, _ = await store.begin("m", "o1", "l1", activation_id="act_c", **{**ARGS, "fingerprint": "fp2"})
    assert status == "MISMATCH"


async def test_transitions_move_forward_once_and_only_for_the_current_attempt(redis_client):
    store = ActivationStore(redis_client)
    _, record = await store.begin("m", "o1", "l1", activation_id="act_a", **ARGS)
    moved, allocated = await store.transition(record, ("PENDING",), "ALLOCATED", masked="603572******0001", sealed=b"\x01secret")
    assert moved and allocated.state == "ALLOCATED" and allocated.sealed == b"\x01secret"
    moved, stale = await store.transition(record, ("PENDING",), "ALLOCATED", masked="other")
    assert not moved and stale.get("masked") == "603572******0001"

    # The line fails, is restarted by a new request (attempt 2); the old attempt can no longer write.
    await store.transition(allocated, ("ALLOCATED",), "FAILED", failure_reason="INVALID_PIN")
    status, restarted = await store.begin("m", "o1", "l1", activation_id="act_z", **{**ARGS, "fingerprint": "fp2"})
    assert (status, restarted.state, restarted.attempt, restarted.activation_id) == ("NEW", "PENDING", "2", "act_a")
    assert restarted.sealed is None and restarted.get("failure_reason") == ""
    moved, _ = await store.transition(allocated, ("PENDING", "ALLOCATED"), "ACTIVATED")
    assert not moved


async def test_completion_publishes_exactly_one_event_and_drops_the_credentials(redis_client):
    store = ActivationStore(redis_client)
    _, record = await store.begin("m:x", "o1", "l1", activation_id="act_a", **ARGS)
    _, record = await store.transition(record, ("PENDING",), "ACTIVATED", masked="603572******0001", provider="native",
                                       transaction_id="t_1", sealed=b"\x01secret")
    moved, done = await store.complete(record, "m:x", "")
    assert moved and done.state == "COMPLETED" and done.sealed is None
    moved, _ = await store.complete(record, "m:x", "")
    assert not moved
    status, _ = await store.begin("m:x", "o1", "l1", activation_id="act_b", **ARGS)
    assert status == "COMPLETED"
    entries = await redis_client.xrange(ActivationStore.stream_key("m:x"))
    assert len(entries) == 1
    assert entries[0][1][b"transaction_id"] == b"t_1" and entries[0][1][b"masked_number"] == b"603572******0001"
    # Merchant ids are percent-encoded into the hash tag; the stream and record share it.
    assert ActivationStore.stream_key("m:x") == "events:{m:m%3Ax}:orders"
    assert ActivationStore.record_key("m:x", "o1", "l1") == "activation:{m:m%3Ax}:o1/l1"
