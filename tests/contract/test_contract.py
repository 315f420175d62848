"""The same scenarios through the gateway's gRPC API against every vendor adapter + its simulator
over real HTTP (and the native ledger). What a vendor cannot do must answer UNIMPLEMENTED naming
the vendor and the operation; everything else must leave the vendor's own ledger exactly right."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from google.protobuf import timestamp_pb2

from giftcard.gateway.v1 import gateway_pb2 as pb
from giftcard.type.v1 import card_pb2, money_pb2
from tests.contract.conftest import details

MODES = ("shadow", "redeem_at_authorize")


def card(number: str, pin: str = "") -> card_pb2.CardRef:
    return card_pb2.CardRef(card_number=number, pin=pin)


def usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code="USD")


def ref(prefix: str = "ref") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def expiry(seconds: int = 3600) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(int((time.time() + seconds) * 1000))
    return stamp


async def expect_error(env, rpc, request, mode="shadow"):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.call(rpc, request, mode)
    return details(caught.value)


async def expect_unimplemented(env, rpc, request, operation: str):
    code, reason, metadata = await expect_error(env, rpc, request)
    assert (code, reason) == (grpc.StatusCode.UNIMPLEMENTED, "OPERATION_NOT_SUPPORTED")
    assert metadata["provider"] == env.vendor and metadata["operation"] == operation


# -- balance, capabilities ---------------------------------------------------------------------

async def test_balance_is_the_vendor_balance(env):
    number = await env.ledger.seed("shadow", 50_00)
    reply = await env.call("GetBalance", pb.GetBalanceRequest(card=card(number)))
    assert (reply.provider, reply.balance.amount_minor, reply.held.amount_minor) == (env.vendor, 50_00, 0)
    assert reply.status == card_pb2.CARD_STATUS_ACTIVE
    assert reply.masked_number == number[:6] + "******" + number[-4:]


async def test_capabilities_name_the_vendor_and_its_hold_mode(env):
    for mode, expected in (("shadow", card_pb2.HOLD_MODE_SHADOW), ("redeem_at_authorize", card_pb2.HOLD_MODE_REDEEM_AT_AUTHORIZE)):
        reply = await env.call("GetCapabilities", pb.GetCapabilitiesRequest(), mode)
        assert reply.provider == env.vendor
        if env.vendor == "native" or env.harness.native_holds:
            assert reply.capabilities.hold_mode == card_pb2.HOLD_MODE_NATIVE
        else:
            assert reply.capabilities.hold_mode == expected
        assert reply.capabilities.tip == ("tip" not in env.harness.unsupported)
        assert reply.capabilities.exchange == ("exchange" not in env.harness.unsupported)
        assert reply.capabilities.allocate == ("allocate" not in env.harness.unsupported)


# -- holds (native or emulated) ------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
async def test_hold_capture_and_release_move_exactly_the_captured_amount(env, mode):
    number = await env.ledger.seed(mode, 50_00)
    placed = await env.call("PlaceHold", pb.PlaceHoldRequest(
        reference_id=ref(), card=card(number), amount=usd(30_00), expire_time=expiry()), mode)
    assert placed.result.amount.amount_minor == 30_00 and placed.provider_hold_id
    balance = await env.call("GetBalance", pb.GetBalanceRequest(card=card(number)), mode)
    if mode == "redeem_at_authorize" and env.vendor != "native" and not env.harness.native_holds:
        assert (await env.ledger.balance(mode, number), balance.held.amount_minor) == (20_00, 0)
    else:
        assert (balance.balance.amount_minor, balance.held.amount_minor) == (50_00, 30_00)
    captured = await env.call("CaptureHold", pb.CaptureHoldRequest(
        reference_id=ref(), card=card(number), provider_hold_id=placed.provider_hold_id, amount=usd(20_00)), mode)
    assert (captured.result.amount.amount_minor, captured.open.amount_minor) == (20_00, 10_00)
    released = await env.call("ReleaseHold", pb.ReleaseHoldRequest(
        reference_id=ref(), card=card(number), provider_hold_id=placed.provider_hold_id), mode)
    assert (released.result.amount.amount_minor, released.open.amount_minor) == (10_00, 0)
    assert await env.ledger.balance(mode, number) == 30_00
    balance = await env.call("GetBalance", pb.GetBalanceRequest(card=card(number)), mode)
    assert (balance.balance.amount_minor, balance.held.amount_minor) == (30_00, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_capture_with_release_remainder_gives_the_rest_back(env, mode):
    number = await env.ledger.seed(mode, 50_00)
    placed = await env.call("PlaceHold", pb.PlaceHoldRequest(
        reference_id=ref(), card=card(number), amount=usd(30_00), expire_time=expiry()), mode)
    captured = await env.call("CaptureHold", pb.CaptureHoldRequest(
        reference_id=ref(), card=card(number), provider_hold_id=placed.provider_hold_id, amount=usd(12_50),
        release_remainder=True), mode)
    assert (captured.result.amount.amount_minor, captured.open.amount_minor) == (12_50, 0)
    assert await env.ledger.balance(mode, number) == 37_50


@pytest.mark.parametrize("mode", MODES)
async def test_full_release_of_an_untouched_hold_restores_the_card(env, mode):
    number = await env.ledger.seed(mode, 40_00)
    placed = await env.call("PlaceHold", pb.PlaceHoldRequest(
        reference_id=ref(), card=card(number), amount=usd(25_00), expire_time=expiry()), mode)
    released = await env.call("ReleaseHold", pb.ReleaseHoldRequest(
        reference_id=ref(), card=card(number), provider_hold_id=placed.provider_hold_id), mode)
    assert (released.result.amount.amount_minor, released.open.amount_minor) == (25_00, 0)
    assert await env.ledger.balance(mode, number) == 40_00


@pytest.mark.parametrize("mode", MODES)
async def test_partial_approval_of_a_hold_takes_what_is_available(env, mode):
    number = await env.ledger.seed(mode, 20_00)
    code, reason, _ = await expect_error(env, "PlaceHold", pb.PlaceHoldRequest(
        reference_id=ref(), card=card(number), amount=usd(30_00), expire_time=expiry()), mode)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    placed = await env.call("PlaceHold", pb.PlaceHoldRequest(
        reference_id=ref(), card=card(number), amount=usd(30_00), allow_partial=True, expire_time=expiry()), mode)
    assert placed.result.amount.amount_minor == 20_00


async def test_a_second_shadow_hold_sees_the_first(env):
    number = await env.ledger.seed("shadow", 50_00)
    await env.call("PlaceHold", pb.PlaceHoldRequest(
        reference_id=ref(), card=card(number), amount=usd(40_00), expire_time=expiry()))
    code, reason, _ = await expect_error(env, "PlaceHold", pb.PlaceHoldRequest(
        reference_id=ref(), card=card(number), amount=usd(20_00), expire_time=expiry()))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert await env.ledger.balance("shadow", number) == 50_00


async def test_place_hold_retried_with_the_same_reference_is_one_hold(env):
    number = await env.ledger.seed("shadow", 50_00)
    request = pb.PlaceHoldRequest(reference_id=ref(), card=card(number), amount=usd(10_00), expire_time=expiry())
    first = await env.call("PlaceHold", request)
    second = await env.call("PlaceHold", request)
    assert second.provider_hold_id == first.provider_hold_id and second.result.replayed
    balance = await env.call("GetBalance", pb.GetBalanceRequest(card=card(number)))
    assert balance.held.amount_minor == 10_00


# -- redeem ------------------------------------------------------------------------------------

async def test_strict_redeem_is_refused_when_short_and_partial_takes_the_balance(env):
    number = await env.ledger.seed("shadow", 15_00)
    code, reason, _ = await expect_error(env, "Redeem", pb.RedeemRequest(
        reference_id=ref(), card=card(number), amount=usd(20_00)))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert await env.ledger.balance("shadow", number) == 15_00
    reply = await env.call("Redeem", pb.RedeemRequest(
        reference_id=ref(), card=card(number), amount=usd(20_00), allow_partial=True))
    assert (reply.result.amount.amount_minor, reply.result.balance.amount_minor) == (15_00, 0)
    assert await env.ledger.balance("shadow", number) == 0


async def test_redeem_takes_exactly_the_amount(env):
    number = await env.ledger.seed("shadow", 50_00)
    reply = await env.call("Redeem", pb.RedeemRequest(reference_id=ref(), card=card(number), amount=usd(12_34)))
    assert (reply.result.amount.amount_minor, reply.result.balance.amount_minor) == (12_34, 37_66)
    assert reply.result.provider == env.vendor and reply.result.provider_transaction_id
    assert await env.ledger.balance("shadow", number) == 37_66


async def test_tip_is_taken_with_the_amount_where_supported(env):
    number = await env.ledger.seed("shadow", 50_00)
    request = pb.RedeemRequest(reference_id=ref(), card=card(number), amount=usd(10_00), tip=usd(2_00))
    if "tip" in env.harness.unsupported:
        await expect_unimplemented(env, "Redeem", request, "tip")
        assert await env.ledger.balance("shadow", number) == 50_00
        return
    reply = await env.call("Redeem", request)
    assert (reply.result.amount.amount_minor, reply.result.balance.amount_minor) == (12_00, 38_00)


async def test_redeem_reversed_by_provider_transaction_id_restores_the_card(env):
    number = await env.ledger.seed("shadow", 50_00)
    redeemed = await env.call("Redeem", pb.RedeemRequest(reference_id=ref(), card=card(number), amount=usd(20_00)))
    request = pb.ReverseRequest(
        reference_id=ref(), card=card(number), provider_transaction_id=redeemed.result.provider_transaction_id)
    if "reverse_settlement" in env.harness.unsupported:
        await expect_unimplemented(env, "Reverse", request, "reverse_settlement")
        return
    reply = await env.call("Reverse", request)
    assert reply.reversed and reply.result.amount.amount_minor == 20_00
    assert await env.ledger.balance("shadow", number) == 50_00


async def test_insufficient_funds_is_a_refusal_not_a_fault(env):
    number = await env.ledger.seed("shadow", 5_00)
    code, reason, _ = await expect_error(env, "Redeem", pb.RedeemRequest(reference_id=ref(), card=card(number), amount=usd(5_01)))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")


# -- reload, refund, cash-out, exchange ------------------------------------------------------------

@pytest.mark.parametrize("kind", [pb.CREDIT_KIND_RELOAD, pb.CREDIT_KIND_REFUND])
async def test_reload_and_refund_add_value(env, kind):
    number = await env.ledger.seed("shadow", 10_00)
    request = pb.CreditRequest(reference_id=ref(), card=card(number), amount=usd(15_00), kind=kind)
    if "credit" in env.harness.unsupported:
        await expect_unimplemented(env, "Credit", request, "credit")
        return
    reply = await env.call("Credit", request)
    assert (reply.result.amount.amount_minor, reply.result.balance.amount_minor) == (15_00, 25_00)
    assert await env.ledger.balance("shadow", number) == 25_00


async def test_cash_out_empties_the_card(env):
    number = await env.ledger.seed("shadow", 33_33)
    if "cash_out" in env.harness.unsupported:
        await expect_unimplemented(env, "CashOut", pb.CashOutRequest(reference_id=ref(), card=card(number)), "cash_out")
        assert await env.ledger.balance("shadow", number) == 33_33
        return
    reply = await env.call("CashOut", pb.CashOutRequest(reference_id=ref(), card=card(number)))
    assert (reply.result.amount.amount_minor, reply.result.balance.amount_minor) == (33_33, 0)
    assert await env.ledger.balance("shadow", number) == 0


async def test_exchange_moves_the_balance_or_is_unimplemented(env):
    old = await env.ledger.seed("shadow", 25_00)
    new = await env.ledger.seed("shadow", 0, active=False)
    request = pb.ExchangeRequest(reference_id=ref(), from_card=card(old), to_card=card(new))
    if "exchange" in env.harness.unsupported:
        await expect_unimplemented(env, "Exchange", request, "exchange")
        return
    reply = await env.call("Exchange", request)
    assert reply.result.amount.amount_minor == 25_00
    assert reply.to_masked_number == new[:6] + "******" + new[-4:]
    assert (await env.ledger.balance("shadow", old), await env.ledger.balance("shadow", new)) == (0, 25_00)


# -- activation ------------------------------------------------------------------------------------

async def test_activation_loads_once_and_a_second_is_card_already_active(env):
    pin = env.harness.activation_pin
    number = await env.ledger.seed("shadow", 0, active=False, pin=pin or None)
    reply = await env.call("Activate", pb.ActivateRequest(reference_id=ref(), card=card(number, pin), amount=usd(25_00)))
    assert (reply.result.amount.amount_minor, reply.result.balance.amount_minor) == (25_00, 25_00)
    code, reason, _ = await expect_error(env, "Activate", pb.ActivateRequest(reference_id=ref(), card=card(number, pin), amount=usd(25_00)))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CARD_ALREADY_ACTIVE")
    assert await env.ledger.balance("shadow", number) == 25_00


async def test_balance_of_an_inactive_card_reports_it_inactive(env):
    number = await env.ledger.seed("shadow", 0, active=False)
    reply = await env.call("GetBalance", pb.GetBalanceRequest(card=card(number)))
    assert (reply.status, reply.balance.amount_minor) == (card_pb2.CARD_STATUS_INACTIVE, 0)


async def test_redeem_on_an_inactive_card_is_card_inactive(env):
    number = await env.ledger.seed("shadow", 0, active=False)
    code, reason, _ = await expect_error(env, "Redeem", pb.RedeemRequest(reference_id=ref(), card=card(number), amount=usd(1_00)))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CARD_INACTIVE")


async def test_unknown_card_is_card_not_found(env):
    code, reason, _ = await expect_error(env, "Redeem", pb.RedeemRequest(reference_id=ref(), card=card("6035999999999999"), amount=usd(1_00)))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CARD_NOT_FOUND")


# -- what a vendor cannot do ------------------------------------------------------------------------

async def test_operations_a_vendor_cannot_do_are_unimplemented_naming_vendor_and_operation(env):
    number = await env.ledger.seed("shadow", 10_00)
    if "allocate" in env.harness.unsupported:
        await expect_unimplemented(env, "Allocate", pb.AllocateRequest(reference_id=ref(), program_id="p1", amount=usd(10_00)), "allocate")
    if "issue_value" in env.harness.unsupported:
        await expect_unimplemented(env, "IssueValue", pb.IssueValueRequest(reference_id=ref(), card=card(number), amount=usd(10_00)), "issue_value")
    assert await env.ledger.balance("shadow", number) == 10_00


async def test_partial_redeem_with_a_tip_covers_the_amount_first(env):
    if "tip" in env.harness.unsupported:
        pytest.skip(f"{env.vendor} takes no tip")
    number = await env.ledger.seed("shadow", 11_00)
    reply = await env.call("Redeem", pb.RedeemRequest(
        reference_id=ref(), card=card(number), amount=usd(10_00), tip=usd(2_00), allow_partial=True))
    assert (reply.result.amount.amount_minor, reply.result.balance.amount_minor) == (11_00, 0)
    assert await env.ledger.balance("shadow", number) == 0
