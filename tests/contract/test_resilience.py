"""Timeouts, reversal by reference, the resolver with the vendor down, the circuit breaker and
deadlines, through the mesh's gRPC API against each vendor simulator over real HTTP."""

from __future__ import annotations

import time
from decimal import Decimal

import grpc
import httpx
import pytest

from common.errors import MeshError
from giftcard.authorization.v1 import authorization_pb2 as apb
from giftcard.gateway.v1 import gateway_pb2 as pb
from services.shared.background import merchant_call
from tests.contract.conftest import build_env, details
from tests.contract.harness import HARNESSES, MERCHANT_KEYS
from tests.contract.test_contract import card, ref, usd

VENDORS = [name for name, h in HARNESSES.items() if h.simulator]


@pytest.fixture(params=VENDORS)
async def env(request, simulators, redis_client, redis_url):
    # A short vendor timeout so a hung vendor is noticed quickly.
    built = await build_env(request.param, simulators, redis_url, timeout_seconds=0.5)
    yield built
    httpx.delete(f"{built.simulator.base_url}/_sim/faults", timeout=5)
    await built.mesh.close()


def available(env, number: str) -> int:
    """What the vendor lets the card spend (balance minus vendor-side holds): a timed-out write to
    a vendor with native holds (SmartClixx redeem = authorization + settlement) takes it there."""
    reply = httpx.get(f"{env.simulator.base_url}/_sim/cards/{number}", timeout=5)
    reply.raise_for_status()
    return int(Decimal(str(reply.json()["available"])).scaleb(2))


def fault(env, spec: str, path: str, count: int = 1) -> None:
    env.sim_post("/_sim/faults", {"fault": spec, "path": path, "count": count})


async def test_timed_out_redeem_is_answered_or_provider_timeout_and_reversal_by_reference_restores_the_card(env):
    if "reverse_settlement" in env.harness.unsupported:
        # SmartClixx redeem = authorization + settlement, and nothing undoes a settlement there;
        # its adapter tests cover reversal by reference of a timed-out authorization.
        pytest.skip(f"{env.vendor} cannot undo a settled redemption")
    number = await env.ledger.seed("shadow", 50_00)
    reference = ref()
    fault(env, "timeout-after=3s", env.harness.redeem_path)
    redeem = pb.RedeemRequest(reference_id=reference, card=card(number), amount=usd(20_00))
    if env.harness.answers_resent_redeem:
        answered = await env.call("Redeem", redeem)
        assert (answered.result.amount.amount_minor, answered.result.balance.amount_minor) == (20_00, 30_00)
    else:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await env.call("Redeem", redeem)
        code, reason, metadata = details(caught.value)
        assert code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
        assert (reason, metadata["outcome"], metadata["provider"]) == ("PROVIDER_TIMEOUT", "unknown", env.vendor)
    assert available(env, number) == 30_00  # applied once at the vendor, its first reply lost
    request = pb.ReverseRequest(reference_id=ref(), card=card(number), original_reference_id=reference)
    if not env.harness.reverse_by_reference:
        # Ackroo takes no caller reference: UNIMPLEMENTED, outcome left to the resolver / operator.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await env.call("Reverse", request)
        code, reason, metadata = details(caught.value)
        assert (code, reason, metadata["operation"], metadata["outcome"]) == (
            grpc.StatusCode.UNIMPLEMENTED, "OPERATION_NOT_SUPPORTED", "reverse by original_reference_id", "unknown")
        assert available(env, number) == 30_00
        return
    reply = await env.call("Reverse", request)
    assert reply.reversed and reply.result.amount.amount_minor == 20_00
    assert (available(env, number), await env.ledger.balance("shadow", number)) == (50_00, 50_00)


async def test_reversal_by_reference_before_the_request_arrives_blocks_it(env):
    if not env.harness.reverse_by_reference:
        pytest.skip(f"{env.vendor} cannot reverse by reference")
    number = await env.ledger.seed("shadow", 50_00)
    reference = ref()
    reply = await env.call("Reverse", pb.ReverseRequest(reference_id=ref(), card=card(number), original_reference_id=reference))
    assert not reply.reversed
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.call("Redeem", pb.RedeemRequest(reference_id=reference, card=card(number), amount=usd(20_00)))
    assert details(caught.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "TRANSACTION_REVERSED")
    assert await env.ledger.balance("shadow", number) == 50_00


async def test_timed_out_redemption_stays_recorded_while_the_vendor_is_down_and_the_resolver_reverses_it_later(env):
    if "reverse_settlement" in env.harness.unsupported:
        # SmartClixx redeem = authorization + settlement, and nothing undoes a settlement there;
        # its adapter tests cover reversal by reference of a timed-out authorization.
        pytest.skip(f"{env.vendor} cannot undo a settled redemption")
    number = await env.ledger.seed("shadow", 50_00)
    recovery = env.mesh.runtimes[0]._servicers["authorization"].recovery
    stub = env.mesh.stub("authorization")
    # Every attempt times out (the adapter's own resends too), so the call ends without an answer.
    fault(env, "timeout-after=3s", env.harness.redeem_path, count=20)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Redeem(apb.RedeemRequest(request_id=ref("rq"), order_id="o-1", card=card(number), amount=usd(20_00)),
                          metadata=env.metadata(), timeout=10)
    assert details(caught.value)[1] == "PROVIDER_TIMEOUT"
    httpx.delete(f"{env.simulator.base_url}/_sim/faults", timeout=5).raise_for_status()
    assert available(env, number) == 30_00
    # The vendor goes down (connection refused) while the resolver runs: the intent stays.
    with env.pool.down(env.harness.simulator):
        with merchant_call("shadow", 30.0, f"Bearer {MERCHANT_KEYS['shadow']}"):
            counts = await recovery._logic.resolve_pending("shadow", 0)
        assert (counts["reversed"], counts["failed"]) == (0, 1)
    time.sleep(0.6)  # the breaker's cool-down (harness: 0.5 s)
    with merchant_call("shadow", 30.0, f"Bearer {MERCHANT_KEYS['shadow']}"):
        counts = await recovery._logic.resolve_pending("shadow", 0)
    if env.harness.reverse_by_reference:
        assert (counts["reversed"], counts["failed"]) == (1, 0)
        assert (available(env, number), await env.ledger.balance("shadow", number)) == (50_00, 50_00)
    else:
        # Ackroo: no way to find what the timed-out debit did; it stays for the operator.
        assert (counts["reversed"], counts["failed"]) == (0, 1)
        assert available(env, number) == 30_00


async def test_a_shadow_hold_never_placed_is_resolved_without_the_vendor(env):
    """The vendor fails the shadow hold's balance read: the hold intent stays pending, and the
    resolver closes it as 'nothing held' even for a vendor that cannot reverse by reference
    (Ackroo), instead of retrying a vendor reversal for ever."""
    if env.harness.simulator is None or env.harness.native_holds:
        pytest.skip(f"{env.vendor} holds are not emulated")
    number = await env.ledger.seed("shadow", 50_00)
    recovery = env.mesh.runtimes[0]._servicers["authorization"].recovery
    fault(env, "http-500", "/*", count=50)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.mesh.stub("authorization").Authorize(apb.AuthorizeRequest(
            request_id=ref("rq"), order_id="o-1", card=card(number), amount=usd(20_00)),
            metadata=env.metadata(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    httpx.delete(f"{env.simulator.base_url}/_sim/faults", timeout=5).raise_for_status()
    time.sleep(0.6)  # the breaker's cool-down (harness: 0.5 s)
    with merchant_call("shadow", 30.0, f"Bearer {MERCHANT_KEYS['shadow']}"):
        counts = await recovery._logic.resolve_pending("shadow", 0)
    assert (counts["reversed"], counts["failed"]) == (1, 0)
    assert available(env, number) == 50_00


async def test_circuit_breaker_opens_fails_fast_and_recovers(env):
    number = await env.ledger.seed("shadow", 10_00)
    gauge = env.mesh.runtimes[0].telemetry.providers.breaker_state.labels(env.vendor)
    fault(env, "http-503", "/*", count=100)
    for _ in range(3):  # threshold 3 (harness); reads are retried inside each call
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await env.call("GetBalance", pb.GetBalanceRequest(card=card(number)))
        assert details(caught.value)[:2] == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert gauge._value.get() == 2  # open
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.call("GetBalance", pb.GetBalanceRequest(card=card(number)))
    code, reason, metadata = details(caught.value)
    assert (code, reason, metadata.get("circuit")) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE", "open")
    assert time.monotonic() - started < 1.0  # no vendor call: the breaker answers at once
    httpx.delete(f"{env.simulator.base_url}/_sim/faults", timeout=5)
    time.sleep(0.6)
    reply = await env.call("GetBalance", pb.GetBalanceRequest(card=card(number)))
    assert reply.balance.amount_minor == 10_00
    assert gauge._value.get() == 0  # closed again after the half-open probe


async def test_no_request_to_a_hung_vendor_waits_past_its_deadline(env):
    number = await env.ledger.seed("shadow", 10_00)
    fault(env, "timeout-before=10s", "/*", count=100)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.mesh.stub("gateway").GetBalance(pb.GetBalanceRequest(card=card(number)),
                                                  metadata=env.metadata(), timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The vendor hangs 10 s; the bound leaves room for a loaded 2-core machine's scheduling.
    assert time.monotonic() - started < 2.0
    # The adapter itself stops at the caller's deadline (not only the gRPC client giving up).
    router = env.mesh.runtimes[0]._servicers["gateway"]._router
    from common.cards import CardId

    target = router.route("shadow", CardId("card_number", number))
    started = time.monotonic()
    with merchant_call("shadow", 0.25):
        with pytest.raises(MeshError) as raised:
            await target.balance("shadow", CardId("card_number", number))
    assert raised.value.reason == "PROVIDER_TIMEOUT"
    assert time.monotonic() - started < 2.0
