"""Clutch translation (gateway/adapters/clutch/translate.py): wire requests exactly as WIRE.md,
replies to mesh results, and the one error table."""

from __future__ import annotations

import grpc
import pytest

from common.cards import CardId
from common.errors import (
    AMOUNT_EXCEEDS_OPEN,
    CARD_ALREADY_ACTIVE,
    CARD_INACTIVE,
    HOLD_NOT_FOUND,
    HOLD_NOT_OPEN,
    IDEMPOTENCY_KEY_REUSED,
    INSUFFICIENT_FUNDS,
    INVALID_PIN,
    PROVIDER_ERROR,
    MeshError,
)
from common.money import Money
from gateway.adapters.clutch import translate, wire
from gateway.ports import ACTIVE, INACTIVE

CARD = CardId("card_number", "6391001234567890", pin="9876")
USD = lambda minor: Money(minor, "USD")  # noqa: E731


def test_hold_request_carries_card_pin_decimal_amount_and_request_ref():
    assert translate.hold("ref-1", CARD, USD(1000)).body() == {
        "cardNumber": "6391001234567890", "pin": "9876", "amount": "10.00", "requestRef": "ref-1",
    }
    assert "6391001234567890" not in repr(translate.hold("ref-1", CARD, USD(1000)))


def test_hold_reversal_is_a_zero_settlement_and_steps_get_their_own_request_ref():
    assert translate.hold_reversal("ref-1", "H1", "undo").body() == {
        "holdId": "H1", "amount": "0.00", "requestRef": "ref-1:undo"}
    assert translate.settlement("ref-1", "H1", USD(250)).body() == {"holdId": "H1", "amount": "2.50", "requestRef": "ref-1"}


def test_request_refs_fit_64_characters_and_are_stable():
    long_ref = "r" * 128
    assert len(translate.request_ref(long_ref, "s")) <= 64
    assert translate.request_ref(long_ref, "s") == translate.request_ref(long_ref, "s")
    assert translate.request_ref(long_ref, "s") != translate.request_ref(long_ref, "h")


def test_allocate_activate_issue_requests():
    assert translate.allocate("a1", "EGIFT").body() == {"cardSetId": "EGIFT", "requestRef": "a1"}
    assert translate.activate("a2", CardId("card_number", "6392001234567890")).body() == {
        "cardNumber": "6392001234567890", "requestRef": "a2"}
    assert translate.issue("a3", CARD, USD(2500)).body()["amount"] == "25.00"


def test_balance_reply_reports_held_as_balance_minus_available():
    reply = translate.parse_reply("balance", {
        "success": True, "cardNumber": "639100******7890", "active": True, "balance": "25.00",
        "availableBalance": "15.00", "currency": "USD",
    })
    info = translate.balance_info(reply, CARD)
    assert (info.status, info.balance, info.held, info.masked_number) == (ACTIVE, USD(2500), USD(1000), "639100******7890")


def test_partial_hold_reply_reports_the_approved_amount_open():
    reply = translate.parse_reply("hold", {
        "success": True, "transactionId": "T1", "holdId": "H1", "cardNumber": "639100******7890",
        "requestedAmount": "30.00", "approvedAmount": "25.00", "balance": "25.00", "availableBalance": "0.00",
        "currency": "USD",
    })
    result = translate.hold_result(reply, CARD)
    assert (result.amount, result.open, result.hold_id, result.provider_transaction_id) == (USD(2500), USD(2500), "H1", "T1")


def test_settlement_closes_the_hold_and_reports_redeemed_or_released():
    reply = translate.parse_reply("settlement", {
        "success": True, "transactionId": "T2", "holdId": "H1", "redeemedAmount": "10.00",
        "releasedAmount": "15.00", "balance": "15.00", "availableBalance": "15.00", "currency": "USD",
    })
    capture = translate.settlement_result(reply, CARD)
    assert (capture.amount, capture.open, capture.balance) == (USD(1000), USD(0), USD(1500))
    assert translate.settlement_result(reply, CARD, released=True).amount == USD(1500)


def test_allocation_returns_full_number_and_optional_pin_inactive():
    reply = translate.parse_reply("allocate", {"success": True, "cardSetId": "EGIFT", "cardNumber": "6391000011112222", "pin": "1111"})
    allocation = translate.allocation(reply, "USD")
    assert (allocation.card_number, allocation.pin, allocation.activated, allocation.result.status) == (
        "6391000011112222", "1111", False, INACTIVE)
    nopin = translate.allocation(translate.parse_reply("allocate", {"success": True, "cardNumber": "6392000011112222"}), "USD")
    assert nopin.pin == ""


@pytest.mark.parametrize("vendor_code, code, reason", [
    ("InsufficientFunds", grpc.StatusCode.FAILED_PRECONDITION, INSUFFICIENT_FUNDS),
    ("CardAlreadyActive", grpc.StatusCode.FAILED_PRECONDITION, CARD_ALREADY_ACTIVE),
    ("CardNotActive", grpc.StatusCode.FAILED_PRECONDITION, CARD_INACTIVE),
    ("PinRequired", grpc.StatusCode.PERMISSION_DENIED, INVALID_PIN),
    ("InvalidPin", grpc.StatusCode.PERMISSION_DENIED, INVALID_PIN),
    ("HoldNotFound", grpc.StatusCode.NOT_FOUND, HOLD_NOT_FOUND),
    ("HoldClosed", grpc.StatusCode.FAILED_PRECONDITION, HOLD_NOT_OPEN),
    ("AmountExceedsHold", grpc.StatusCode.FAILED_PRECONDITION, AMOUNT_EXCEEDS_OPEN),
    ("RequestRefReused", grpc.StatusCode.FAILED_PRECONDITION, IDEMPOTENCY_KEY_REUSED),
    ("CardSetNotFound", grpc.StatusCode.NOT_FOUND, translate.CARD_SET_NOT_FOUND),
    ("Forbidden", grpc.StatusCode.INTERNAL, PROVIDER_ERROR),
    ("Brand-new", grpc.StatusCode.INTERNAL, PROVIDER_ERROR),
])
def test_every_error_code_maps_to_one_mesh_error(vendor_code, code, reason):
    err = translate.error(wire.Reply(success=False, error_code=vendor_code, error_message="x"), "hold")
    assert (err.code, err.reason, err.metadata["provider"]) == (code, reason, "clutch")


def test_reply_without_currency_is_a_provider_error():
    reply = translate.parse_reply("balance", {"success": True, "balance": "1.00", "availableBalance": "1.00", "active": True})
    with pytest.raises(MeshError) as caught:
        translate.balance_info(reply, CARD)
    assert caught.value.reason == PROVIDER_ERROR
