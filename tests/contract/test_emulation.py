"""Hold emulation (gateway/emulation.py) through the gateway API against the vendors without
holds: expiry, reversal of a hold by its reference (the resolver's path), replayed captures, and a
shadow hold whose money was spent outside the mesh."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from giftcard.gateway.v1 import gateway_pb2 as pb
from tests.contract.conftest import build_env
from tests.contract.harness import HARNESSES
from tests.contract.test_contract import MODES, card, expect_error, expiry, ref, usd

EMULATED = [name for name, h in HARNESSES.items() if h.simulator and name in ("paytronix", "ackroo")]


@pytest.fixture(params=EMULATED)
async def env(request, simulators, redis_client, redis_url):
    built = await build_env(request.param, simulators, redis_url)
    yield built
    await built.mesh.close()


async def test_an_expired_shadow_hold_stops_counting_and_cannot_be_captured(env):
    number = await env.ledger.seed("shadow", 50_00)
    placed = await env.call("PlaceHold", pb.PlaceHoldRequest(
        reference_id=ref(), card=card(number), amount=usd(40_00), expire_time=expiry(1)))
    await asyncio.sleep(1.1)
    balance = await env.call("GetBalance", pb.GetBalanceRequest(card=card(number)))
    assert balance.held.amount_minor == 0
    code, reason, _ = await expect_error(env, "CaptureHold", pb.CaptureHoldRequest(
        reference_id=ref(), card=card(number), provider_hold_id=placed.provider_hold_id, amount=usd(10_00)))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_EXPIRED")
    assert await env.ledger.balance("shadow", number) == 50_00


@pytest.mark.parametrize("mode", MODES)
async def test_reversing_a_hold_by_its_reference_gives_everything_back(env, mode):
    number = await env.ledger.seed(mode, 50_00)
    reference = ref()
    await env.call("PlaceHold", pb.PlaceHoldRequest(reference_id=reference, card=card(number), amount=usd(30_00), expire_time=expiry()), mode)
    reply = await env.call("Reverse", pb.ReverseRequest(reference_id=ref(), card=card(number), original_reference_id=reference), mode)
    assert reply.reversed and reply.result.amount.amount_minor == 30_00
    assert await env.ledger.balance(mode, number) == 50_00
    balance = await env.call("GetBalance", pb.GetBalanceRequest(card=card(number)), mode)
    assert (balance.balance.amount_minor, balance.held.amount_minor) == (50_00, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_a_capture_retried_under_its_reference_is_replayed_not_repeated(env, mode):
    number = await env.ledger.seed(mode, 50_00)
    placed = await env.call("PlaceHold", pb.PlaceHoldRequest(reference_id=ref(), card=card(number), amount=usd(30_00), expire_time=expiry()), mode)
    capture = pb.CaptureHoldRequest(reference_id=ref(), card=card(number), provider_hold_id=placed.provider_hold_id, amount=usd(10_00))
    first = await env.call("CaptureHold", capture, mode)
    second = await env.call("CaptureHold", capture, mode)
    assert second.result.replayed and second.result.amount.amount_minor == first.result.amount.amount_minor == 10_00
    assert second.open.amount_minor == 20_00
    assert await env.ledger.balance(mode, number) == (40_00 if mode == "shadow" else 20_00)


async def test_capture_of_a_shadow_hold_spent_elsewhere_is_refused_and_the_hold_stays_open(env):
    number = await env.ledger.seed("shadow", 50_00)
    placed = await env.call("PlaceHold", pb.PlaceHoldRequest(reference_id=ref(), card=card(number), amount=usd(30_00), expire_time=expiry()))
    # Someone spends at the vendor outside the mesh (a POS swipe): shadow holds cannot see it.
    await env.call("Redeem", pb.RedeemRequest(reference_id=ref(), card=card(number), amount=usd(40_00)), "redeem_at_authorize")
    code, reason, _ = await expect_error(env, "CaptureHold", pb.CaptureHoldRequest(
        reference_id=ref(), card=card(number), provider_hold_id=placed.provider_hold_id, amount=usd(30_00)))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    released = await env.call("ReleaseHold", pb.ReleaseHoldRequest(reference_id=ref(), card=card(number), provider_hold_id=placed.provider_hold_id))
    assert released.result.amount.amount_minor == 30_00  # still open after the refused capture
    assert await env.ledger.balance("shadow", number) == 10_00


@pytest.mark.parametrize("mode", MODES)
async def test_reversing_a_captured_hold_by_its_reference_does_not_take_the_payment_back(env, mode):
    number = await env.ledger.seed(mode, 50_00)
    reference = ref()
    placed = await env.call("PlaceHold", pb.PlaceHoldRequest(reference_id=reference, card=card(number), amount=usd(30_00), expire_time=expiry()), mode)
    await env.call("CaptureHold", pb.CaptureHoldRequest(
        reference_id=ref(), card=card(number), provider_hold_id=placed.provider_hold_id, amount=usd(30_00)), mode)
    reply = await env.call("Reverse", pb.ReverseRequest(reference_id=ref(), card=card(number), original_reference_id=reference), mode)
    assert not reply.reversed and reply.result.amount.amount_minor == 0
    assert await env.ledger.balance(mode, number) == 20_00


async def test_a_shadow_hold_on_an_inactive_card_is_card_inactive(env):
    number = await env.ledger.seed("shadow", 0, active=False)
    code, reason, _ = await expect_error(env, "PlaceHold", pb.PlaceHoldRequest(
        reference_id=ref(), card=card(number), amount=usd(1_00), expire_time=expiry()))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CARD_INACTIVE")


async def test_reversing_a_shadow_hold_by_its_transaction_id_releases_it(env):
    number = await env.ledger.seed("shadow", 50_00)
    placed = await env.call("PlaceHold", pb.PlaceHoldRequest(reference_id=ref(), card=card(number), amount=usd(30_00), expire_time=expiry()))
    reply = await env.call("Reverse", pb.ReverseRequest(
        reference_id=ref(), card=card(number), provider_transaction_id=placed.result.provider_transaction_id))
    assert reply.reversed and reply.result.amount.amount_minor == 30_00
    balance = await env.call("GetBalance", pb.GetBalanceRequest(card=card(number)))
    assert (balance.balance.amount_minor, balance.held.amount_minor) == (50_00, 0)
