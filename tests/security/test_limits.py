"""Limits and abuse through the public gRPC API: per-merchant call rate, per-card velocity, the
unknown-card lookup budget that stops card-number enumeration, PIN lockout, max message size.

Each test sets tight limits (the defaults are off); amounts and reasons are checked exactly.
"""

from __future__ import annotations

import asyncio
import secrets

import grpc
import pytest
import redis.asyncio as aioredis

from common.cards import CardId
from common.config import LimitsSettings
from common.limits import MeshLimits, TokenBuckets
from giftcard.authorization.v1 import authorization_pb2 as apb
from giftcard.balance.v1 import balance_pb2 as bpb
from giftcard.gateway.v1 import gateway_pb2 as gpb
from giftcard.type.v1 import card_pb2, money_pb2
from tests.security.support import failure, raw_method
from tests.support.mesh import ACME_KEY, MODES, auth, start_mesh

CARD_100 = "6035710000000001"
CARD_PIN = "6035710000000002"  # PIN 1234, 25.00 USD
CARD_ZERO = "6035710000000003"


def balance_request(number: str, pin: str = "") -> bpb.GetBalanceRequest:
    return bpb.GetBalanceRequest(card=card_pb2.CardRef(card_number=number, pin=pin))


async def get_balance(mesh, number: str, key: str | None = None, pin: str = ""):
    return await mesh.stub("balance").GetBalance(
        balance_request(number, pin), metadata=auth(key) if key else auth(), timeout=10
    )


async def refused(coro) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await coro
    return failure(caught.value)


def unknown_number() -> str:
    return "8888" + "".join(secrets.choice("0123456789") for _ in range(12))


# -- the token bucket itself -----------------------------------------------------------------------


async def test_token_bucket_grants_exactly_its_capacity_to_concurrent_callers(redis_client):
    buckets = TokenBuckets(redis_client)
    key = "limit:{test:" + secrets.token_hex(4) + "}"
    decisions = await asyncio.gather(
        *(buckets.take(key, capacity=10, per_second=0.001) for _ in range(50))
    )
    assert sum(d.allowed for d in decisions) == 10
    refused_ = [d for d in decisions if not d.allowed]
    assert len(refused_) == 40 and all(d.retry_after_ms > 0 for d in refused_)


async def test_token_bucket_refills_at_its_rate(redis_client):
    buckets = TokenBuckets(redis_client)
    key = "limit:{test:" + secrets.token_hex(4) + "}"
    assert [(await buckets.take(key, capacity=2, per_second=20)).allowed for _ in range(3)] == [True, True, False]
    await asyncio.sleep(0.12)  # 20/s -> 2.4 tokens back, capped at 2
    assert [(await buckets.take(key, capacity=2, per_second=20)).allowed for _ in range(3)] == [True, True, False]


async def test_a_peek_takes_nothing_and_idle_buckets_expire(redis_client):
    buckets = TokenBuckets(redis_client)
    key = "limit:{test:" + secrets.token_hex(4) + "}"
    for _ in range(5):
        assert (await buckets.take(key, capacity=1, per_second=1, cost=0)).allowed
    assert (await buckets.take(key, capacity=1, per_second=1)).allowed
    assert not (await buckets.take(key, capacity=1, per_second=1, cost=0)).allowed
    ttl_ms = await redis_client.pttl(key)
    assert 0 < ttl_ms <= 2000  # full again after 1 s: the key goes soon after


async def test_limits_off_by_default_make_no_redis_calls():
    # No Redis listens on port 1: any call would fail (and be logged as skipped).
    unreachable = aioredis.Redis.from_url("redis://127.0.0.1:1/0")
    limits = MeshLimits(unreachable, LimitsSettings(), b"k")
    assert not limits.limits_merchant_calls and not limits.limits_cards
    await limits.admit_merchant_call("demo", "svc")
    assert await limits.admit_card_operation("demo", CardId("card_number", CARD_100)) is False
    await unreachable.aclose()


async def test_an_unreachable_redis_lets_calls_through(caplog):
    unreachable = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limits = MeshLimits(unreachable, LimitsSettings(merchant_rps=1, card_ops_per_minute=1), b"k")
    for _ in range(3):
        await limits.admit_merchant_call("demo", "svc")
        await limits.admit_card_operation("demo", CardId("card_number", CARD_100))
    assert "limit check skipped" in caplog.text
    assert CARD_100 not in caplog.text
    await unreachable.aclose()


# -- per-merchant rate -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_merchant_over_its_rate_gets_resource_exhausted_and_others_do_not(redis_client, redis_url, mode):
    mesh = await start_mesh(mode, redis_url, limits={"merchant_rps": 2, "merchant_burst": 3})
    try:
        for _ in range(3):
            assert (await get_balance(mesh, CARD_100)).available.amount_minor == 10000
        code, reason, metadata = await refused(get_balance(mesh, CARD_100))
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        assert 0 < int(metadata["retry_after_ms"]) <= 500
        # Another merchant has its own budget (acme has no such card: NOT_FOUND, not RATE_LIMITED).
        code, reason, _ = await refused(get_balance(mesh, CARD_100, ACME_KEY))
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CARD_NOT_FOUND")
        await asyncio.sleep(0.55)  # 2/s: one token back
        assert (await get_balance(mesh, CARD_100)).available.amount_minor == 10000
        # The gateway, which the other services call with the caller's key, is not merchant-limited
        # (its card operations are): a checkout's compensations must always get through.
        for _ in range(5):
            await mesh.stub("gateway").GetCapabilities(gpb.GetCapabilitiesRequest(), metadata=auth(), timeout=5)
        # Health stays open to probes whatever the merchant rate.
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(mesh.channel("balance"))
        for _ in range(5):
            assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == 1
    finally:
        await mesh.close()


# -- per-card velocity ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_card_over_its_velocity_is_refused_but_its_hold_can_still_be_released(redis_client, redis_url, mode):
    mesh = await start_mesh(mode, redis_url, limits={"card_ops_per_minute": 3})
    try:
        auth_stub = mesh.stub("authorization")
        hold = (await auth_stub.Authorize(apb.AuthorizeRequest(
            request_id="vel-1", order_id="o-1", card=card_pb2.CardRef(card_number=CARD_100),
            amount=money_pb2.Money(amount_minor=1000, currency_code="USD"),
        ), metadata=auth(), timeout=10)).hold
        ops = 1
        while True:  # spend the rest of the card's budget on balance checks
            try:
                await get_balance(mesh, CARD_100)
                ops += 1
            except grpc.aio.AioRpcError as error:
                code, reason, metadata = failure(error)
                break
        assert ops == 3, ops  # Authorize (one hold) + two balance checks
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "CARD_VELOCITY_EXCEEDED")
        assert int(metadata["retry_after_ms"]) > 0
        code, reason, _ = await refused(auth_stub.Authorize(apb.AuthorizeRequest(
            request_id="vel-2", order_id="o-2", card=card_pb2.CardRef(card_number=CARD_100),
            amount=money_pb2.Money(amount_minor=500, currency_code="USD"),
        ), metadata=auth(), timeout=10))
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "CARD_VELOCITY_EXCEEDED")
        # Other cards are not affected.
        assert (await get_balance(mesh, CARD_PIN, pin="1234")).available.amount_minor == 2500
        # Undoing an admitted operation is never limited: the hold is released in full.
        released = await auth_stub.ReverseAuthorization(apb.ReverseAuthorizationRequest(
            request_id="vel-3", hold_id=hold.hold_id,
        ), metadata=auth(), timeout=10)
        assert released.released.amount_minor == 1000
        state = await mesh.runtimes[0].providers.native_ledger.get_card("demo", CARD_100)
        assert (state.balance_minor, state.held_minor) == (10000, 0)
    finally:
        await mesh.close()


# -- unknown-card lookups (enumeration) ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_unknown_card_lookups_are_budgeted_per_merchant_so_numbers_cannot_be_enumerated(
    redis_client, redis_url, mode
):
    mesh = await start_mesh(mode, redis_url, limits={"unknown_card_lookups_per_minute": 3})
    try:
        for _ in range(3):
            code, reason, _ = await refused(get_balance(mesh, unknown_number()))
            assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CARD_NOT_FOUND")
        # Budget spent: unknown AND known numbers get the same answer, so it is no oracle.
        for number in (unknown_number(), CARD_100):
            code, reason, metadata = await refused(get_balance(mesh, number))
            assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "UNKNOWN_CARD_LOOKUPS_EXCEEDED")
            assert int(metadata["retry_after_ms"]) > 0
        # PlanTender fans out to the same lookups: 20 numbers learn nothing either.
        plan = await mesh.stub("balance").PlanTender(bpb.PlanTenderRequest(
            order_total=money_pb2.Money(amount_minor=100, currency_code="USD"),
            cards=[card_pb2.CardRef(card_number=unknown_number()) for _ in range(20)],
        ), metadata=auth(), timeout=10)
        assert {a.skip_reason for a in plan.allocations} == {"UNKNOWN_CARD_LOOKUPS_EXCEEDED"}
        # Other merchants keep their own budget.
        code, reason, _ = await refused(get_balance(mesh, unknown_number(), ACME_KEY))
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CARD_NOT_FOUND")
    finally:
        await mesh.close()


async def test_enumeration_rate_is_bounded_by_the_budget(redis_client, redis_url):
    """An attacker firing 200 random numbers gets at most `budget` real answers."""
    mesh = await start_mesh("all-in-one", redis_url, limits={"unknown_card_lookups_per_minute": 5})
    try:
        results = await asyncio.gather(
            *(get_balance(mesh, unknown_number()) for _ in range(200)), return_exceptions=True
        )
        reasons = [failure(r)[1] for r in results]
        assert reasons.count("CARD_NOT_FOUND") <= 5 + 1  # a refill of 5/min adds at most 1 in the run
        assert reasons.count("CARD_NOT_FOUND") >= 5
        assert set(reasons) == {"CARD_NOT_FOUND", "UNKNOWN_CARD_LOOKUPS_EXCEEDED"}
    finally:
        await mesh.close()


# -- PIN lockout, message size -----------------------------------------------------------------------


async def test_five_wrong_pins_lock_the_card_even_for_the_right_pin(redis_client, redis_url):
    mesh = await start_mesh("all-in-one", redis_url)
    try:
        for attempt in range(5):
            code, reason, _ = await refused(get_balance(mesh, CARD_PIN, pin=f"99{attempt:02d}"))
            assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "INVALID_PIN"), attempt
        code, reason, _ = await refused(get_balance(mesh, CARD_PIN, pin="1234"))
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CARD_LOCKED")
        # Nor can the locked card be spent.
        code, reason, _ = await refused(mesh.stub("authorization").Redeem(apb.RedeemRequest(
            request_id="pin-r", order_id="o", card=card_pb2.CardRef(card_number=CARD_PIN, pin="1234"),
            amount=money_pb2.Money(amount_minor=100, currency_code="USD"),
        ), metadata=auth(), timeout=10))
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CARD_LOCKED")
        # Other cards are unaffected.
        assert (await get_balance(mesh, CARD_100)).available.amount_minor == 10000
    finally:
        await mesh.close()


async def test_configured_max_message_size_is_enforced_and_the_server_stays_up(redis_client, redis_url):
    mesh = await start_mesh("all-in-one", redis_url, grpc={"port": 0, "shutdown_grace_seconds": 5,
                                                            "max_message_bytes": 4096})
    try:
        big = bpb.GetBalanceRequest(card=card_pb2.CardRef(card_number=CARD_100, barcode="")).SerializeToString()
        big += b"\x12" + b"\x80\x40" + b"x" * 8192  # an unknown length-delimited field of 8 KiB
        code, _, _ = await refused(raw_method(mesh.channel("balance"), "/giftcard.balance.v1.BalanceService/GetBalance")(
            big, metadata=auth(), timeout=5))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await get_balance(mesh, CARD_100)).available.amount_minor == 10000
    finally:
        await mesh.close()
