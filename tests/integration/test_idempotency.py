"""common/idempotency.py on a real redis-server: replay, conflicts, concurrency, leases, TTL."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2

from common.errors import (
    IDEMPOTENCY_KEY_REUSED,
    INSUFFICIENT_FUNDS,
    PROVIDER_UNAVAILABLE,
    REQUEST_IN_PROGRESS,
    MeshError,
    error_info,
    failed_precondition,
    unavailable,
)
from common.idempotency import (
    BeginStatus,
    IdempotencyEvent,
    IdempotencyStore,
    record_key,
)

RPC = "giftcard.authorization.v1.AuthorizationService/Hold"
MERCHANT = "merchant-1"
DAY_MS = 24 * 60 * 60 * 1000


def hold_request(amount_minor: int = 1500, request_id: str = "req-1"):
    # RequestInfo stands in for a generated request: it even has a request_id field to clear.
    return error_details_pb2.RequestInfo(
        request_id=request_id, serving_data=f"hold {amount_minor} USD on card ref tok_42"
    )


def hold_response(hold_id: str = "hold_1") -> struct_pb2.Struct:
    response = struct_pb2.Struct()
    response.update({"hold_id": hold_id, "amount_minor": 1500, "masked_number": "600649******0123"})
    return response


class Handler:
    """Counts executions; returns a response or raises what it is given, optionally after a wait."""

    def __init__(self, result=None, gate: asyncio.Event | None = None, delay: float = 0.0):
        self.calls = 0
        self.result = result if result is not None else hold_response()
        self.gate = gate
        self.delay = delay

    async def __call__(self):
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


@pytest.fixture
def store(redis_client) -> IdempotencyStore:
    return IdempotencyStore(redis_client)


async def run(store, handler, request=None, request_id="req-1", merchant=MERCHANT, **kwargs):
    return await store.run(
        merchant, RPC, request_id, request or hold_request(request_id=request_id), handler,
        struct_pb2.Struct, **kwargs,
    )


async def test_replay_returns_the_identical_stored_response_and_the_handler_runs_once(store):
    handler = Handler()
    first = await run(store, handler)
    second = await run(store, handler)
    assert first == hold_response()
    assert second == first
    canonical = {"deterministic": True}  # Struct is a map: compare in a fixed key order
    assert second.SerializeToString(**canonical) == first.SerializeToString(**canonical)
    assert handler.calls == 1
    assert store.counters[IdempotencyEvent.NEW] == 1
    assert store.counters[IdempotencyEvent.REPLAY] == 1


async def test_same_request_id_with_a_different_body_is_idempotency_key_reused(store):
    handler = Handler()
    await run(store, handler, request=hold_request(1500))
    with pytest.raises(MeshError) as raised:
        await run(store, handler, request=hold_request(1600))
    assert raised.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.reason == IDEMPOTENCY_KEY_REUSED
    assert error_info(raised.value.to_status()).reason == IDEMPOTENCY_KEY_REUSED
    assert not raised.value.retryable
    assert handler.calls == 1
    assert store.counters[IdempotencyEvent.CONFLICT] == 1


async def test_different_body_while_in_progress_is_also_key_reused(store):
    gate = asyncio.Event()
    handler = Handler(gate=gate)
    first = asyncio.create_task(run(store, handler, request=hold_request(1500)))
    while handler.calls == 0:
        await asyncio.sleep(0.01)
    with pytest.raises(MeshError) as raised:
        await run(store, Handler(), request=hold_request(1600))
    assert raised.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.reason == IDEMPOTENCY_KEY_REUSED
    gate.set()
    assert await first == hold_response()


async def test_request_id_inside_the_body_does_not_change_the_fingerprint(store):
    handler = Handler()
    await store.run(
        MERCHANT, RPC, "req-1", hold_request(request_id="req-1"), handler, struct_pb2.Struct
    )
    # Same key, body differing only in its request_id field: still the same request.
    replay = await store.run(
        MERCHANT, RPC, "req-1", hold_request(request_id="other"), handler, struct_pb2.Struct
    )
    assert replay == hold_response()
    assert handler.calls == 1


async def test_fifty_concurrent_duplicates_run_the_handler_once_and_then_replay(store):
    gate = asyncio.Event()
    handler = Handler(gate=gate)
    tasks = [asyncio.create_task(run(store, handler)) for _ in range(50)]

    # Hold the one winner inside its handler until all 49 duplicates have been answered.
    deadline = time.monotonic() + 10
    while sum(task.done() for task in tasks) < 49:
        assert time.monotonic() < deadline, "duplicates were not rejected"
        await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert handler.calls == 1
    successes = [r for r in results if not isinstance(r, BaseException)]
    rejected = [r for r in results if isinstance(r, BaseException)]
    assert successes == [hold_response()]
    assert len(rejected) == 49
    for error in rejected:
        assert isinstance(error, MeshError)
        assert error.code is grpc.StatusCode.ABORTED
        assert error.reason == REQUEST_IN_PROGRESS
        assert error.retryable
        assert error_info(error.to_status()).reason == REQUEST_IN_PROGRESS
    assert store.counters[IdempotencyEvent.IN_PROGRESS] == 49

    replays = await asyncio.gather(*(run(store, handler) for _ in range(50)))
    assert replays == [hold_response()] * 50
    assert handler.calls == 1


async def test_stored_domain_error_replays_as_the_same_error(store):
    declined = failed_precondition(INSUFFICIENT_FUNDS, "balance too low", available_minor="500")
    handler = Handler(result=declined)
    with pytest.raises(MeshError) as first:
        await run(store, handler)
    with pytest.raises(MeshError) as second:
        await run(store, handler)
    assert first.value is declined
    assert second.value == declined  # code, reason, message, field, metadata, retryable
    assert second.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert second.value.reason == INSUFFICIENT_FUNDS
    assert second.value.metadata == {"available_minor": "500"}
    assert second.value.to_status() == declined.to_status()
    assert handler.calls == 1
    assert store.counters[IdempotencyEvent.STORED_ERROR] == 1


async def test_stored_invalid_argument_keeps_its_field(store):
    from common.errors import invalid_argument

    handler = Handler(result=invalid_argument("amount_minor", "must be positive"))
    for _ in range(2):
        with pytest.raises(MeshError) as raised:
            await run(store, handler)
        assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.field == "amount_minor"
    assert handler.calls == 1


@pytest.mark.parametrize(
    "transient",
    [
        unavailable(PROVIDER_UNAVAILABLE, "provider down"),
        MeshError(grpc.StatusCode.DEADLINE_EXCEEDED, "PROVIDER_TIMEOUT", "provider timed out"),
        MeshError(grpc.StatusCode.INTERNAL, "INTERNAL", "bug"),
        MeshError(grpc.StatusCode.FAILED_PRECONDITION, "CARD_LOCKED", "try later", retryable=True),
        RuntimeError("not a MeshError"),
    ],
    ids=["unavailable", "deadline", "internal", "retryable-flag", "unexpected-exception"],
)
async def test_transient_failure_releases_the_record_so_the_retry_runs_again(
    store, redis_client, transient
):
    failing = Handler(result=transient)
    with pytest.raises(type(transient)) as raised:
        await run(store, failing)
    assert raised.value is transient
    assert await redis_client.exists(record_key(MERCHANT, RPC, "req-1")) == 0

    retry = Handler()
    assert await run(store, retry) == hold_response()
    assert retry.calls == 1
    assert store.counters[IdempotencyEvent.RELEASED] == 1


async def test_expired_lease_is_taken_over_and_the_stale_worker_cannot_complete(redis_client):
    store = IdempotencyStore(redis_client, lease_seconds=0.2)
    fp = store.fingerprint(RPC, hold_request())

    stale = await store.begin(MERCHANT, RPC, "req-1", fp)
    assert stale.status is BeginStatus.NEW and stale.attempt == 1
    with pytest.raises(MeshError) as busy:
        await store.begin(MERCHANT, RPC, "req-1", fp)
    assert busy.value.code is grpc.StatusCode.ABORTED
    assert busy.value.reason == REQUEST_IN_PROGRESS

    await asyncio.sleep(0.3)  # the stale worker "died": its lease runs out
    fresh = await store.begin(MERCHANT, RPC, "req-1", fp)
    assert fresh.status is BeginStatus.NEW
    assert fresh.attempt == 2
    assert fresh.token != stale.token
    assert store.counters[IdempotencyEvent.TAKEOVER] == 1

    stale_response = hold_response("hold_stale").SerializeToString()
    fresh_response = hold_response("hold_fresh").SerializeToString()
    assert await store.complete(stale, stale_response) is False
    assert await store.release(stale) is False
    assert await store.renew(stale) is False
    assert await store.complete(fresh, fresh_response) is True
    assert await store.complete(stale, stale_response) is False  # a done record is never rewritten
    assert await store.release(fresh) is False  # ... nor deleted

    replay = await store.begin(MERCHANT, RPC, "req-1", fp)
    assert replay.status is BeginStatus.REPLAY
    assert replay.outcome == fresh_response


async def test_run_renews_its_lease_so_a_slow_live_handler_is_not_taken_over(redis_client):
    store = IdempotencyStore(redis_client, lease_seconds=0.3)
    handler = Handler(delay=1.0)
    first = asyncio.create_task(run(store, handler))
    await asyncio.sleep(0.7)  # more than two leases later
    with pytest.raises(MeshError) as busy:
        await run(store, Handler())
    assert busy.value.reason == REQUEST_IN_PROGRESS
    assert await first == hold_response()
    assert handler.calls == 1


async def test_worker_whose_lease_was_taken_over_answers_aborted_and_stores_nothing(
    store, redis_client
):
    key = record_key(MERCHANT, RPC, "req-1")
    fp = store.fingerprint(RPC, hold_request())
    taker_response = hold_response("hold_taker").SerializeToString()

    async def handler_that_loses_its_lease():
        # Simulate a partition longer than the lease: expire it and let another worker take over.
        await redis_client.hset(key, "lease_until", 0)
        taker = await store.begin(MERCHANT, RPC, "req-1", fp)
        assert taker.status is BeginStatus.NEW
        assert await store.complete(taker, taker_response)
        return hold_response("hold_loser")

    with pytest.raises(MeshError) as raised:
        await run(store, handler_that_loses_its_lease)
    assert raised.value.code is grpc.StatusCode.ABORTED
    assert raised.value.reason == REQUEST_IN_PROGRESS
    assert raised.value.retryable
    assert await run(store, Handler()) == hold_response("hold_taker")
    assert store.counters[IdempotencyEvent.LEASE_LOST] == 1


async def test_record_ttl_is_24_hours_by_default(store, redis_client):
    gate = asyncio.Event()
    task = asyncio.create_task(run(store, Handler(gate=gate)))
    key = record_key(MERCHANT, RPC, "req-1")
    while not await redis_client.exists(key):
        await asyncio.sleep(0.01)
    assert DAY_MS - 5_000 < await redis_client.pttl(key) <= DAY_MS  # in progress
    gate.set()
    await task
    assert DAY_MS - 5_000 < await redis_client.pttl(key) <= DAY_MS  # done


async def test_record_ttl_is_configurable(redis_client):
    store = IdempotencyStore(redis_client, ttl_seconds=600, lease_seconds=5)
    await run(store, Handler())
    assert 595_000 < await redis_client.pttl(record_key(MERCHANT, RPC, "req-1")) <= 600_000


async def test_same_request_id_under_two_merchants_is_independent(store):
    m1_response, m2_response = hold_response("hold_m1"), hold_response("hold_m2")
    first, second = Handler(result=m1_response), Handler(result=m2_response)
    # Different bodies under one request_id would conflict within a merchant, not across.
    for _ in range(2):
        assert await run(store, first, merchant="m1", request=hold_request(1500)) == m1_response
        assert await run(store, second, merchant="m2", request=hold_request(9900)) == m2_response
    assert (first.calls, second.calls) == (1, 1)


async def test_same_request_id_on_another_rpc_is_independent(store):
    handler = Handler()
    await run(store, handler)
    await store.run(
        MERCHANT, "giftcard.refund.v1.RefundService/Refund", "req-1", hold_request(), handler,
        struct_pb2.Struct,
    )
    assert handler.calls == 2


@pytest.mark.parametrize("request_id", ["", "x" * 129, "has space", "{tag}", "ключ"])
async def test_invalid_request_id_is_invalid_argument_and_touches_nothing(
    store, redis_client, request_id
):
    handler = Handler()
    with pytest.raises(MeshError) as raised:
        await store.run(MERCHANT, RPC, request_id, hold_request(), handler, struct_pb2.Struct)
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.field == "request_id"
    assert handler.calls == 0
    assert await redis_client.dbsize() == 0


async def test_request_is_never_stored_only_its_fingerprint(store, redis_client):
    await run(store, Handler())
    record = await redis_client.hgetall(record_key(MERCHANT, RPC, "req-1"))
    assert b"tok_42" not in b"".join(record.values())
    assert set(record) == {b"fp", b"state", b"token", b"attempt", b"kind", b"outcome"}


async def test_seal_hook_transforms_stored_bytes_and_unseal_restores_them(store, redis_client):
    # A toy reversible transform standing in for encryption of a response carrying an e-gift PIN.
    def seal(data: bytes) -> bytes:
        return b"sealed:" + bytes(b ^ 0x5A for b in data)

    def unseal(data: bytes) -> bytes:
        assert data.startswith(b"sealed:")
        return bytes(b ^ 0x5A for b in data[len(b"sealed:"):])

    handler = Handler()
    await run(store, handler, seal=seal, unseal=unseal)
    stored = await redis_client.hget(record_key(MERCHANT, RPC, "req-1"), "outcome")
    assert stored.startswith(b"sealed:")
    assert b"600649******0123" not in stored
    assert await run(store, handler, seal=seal, unseal=unseal) == hold_response()
    assert handler.calls == 1


async def test_cancelled_caller_does_not_abandon_the_work_and_the_retry_replays(store):
    gate = asyncio.Event()
    handler = Handler(gate=gate)
    caller = asyncio.create_task(run(store, handler))
    while handler.calls == 0:
        await asyncio.sleep(0.01)
    caller.cancel()  # the client hung up / its deadline passed mid-handler
    with pytest.raises(asyncio.CancelledError):
        await caller
    gate.set()
    await store.drain()
    assert await run(store, handler) == hold_response()
    assert handler.calls == 1


async def test_on_event_hook_receives_events_and_its_failures_are_ignored(redis_client):
    seen = []

    def on_event(event, rpc):
        seen.append((event, rpc))
        raise RuntimeError("telemetry down")

    store = IdempotencyStore(redis_client, on_event=on_event)
    handler = Handler()
    await run(store, handler)
    await run(store, handler)
    assert seen == [(IdempotencyEvent.NEW, RPC), (IdempotencyEvent.REPLAY, RPC)]


async def test_handler_returning_the_wrong_type_is_not_stored(store, redis_client):
    with pytest.raises(TypeError):
        await run(store, Handler(result=struct_pb2.ListValue()))
    assert await redis_client.dbsize() == 0


async def test_decode_responses_client_is_refused(redis_url):
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(ValueError):
            IdempotencyStore(client)
    finally:
        await client.aclose()
