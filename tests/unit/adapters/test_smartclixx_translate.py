"""SmartClixx translation (gateway/adapters/smartclixx/translate.py): wire requests exactly as
WIRE.md, replies to mesh results, and the one error table."""

from __future__ import annotations

import grpc
import pytest

from common.cards import CardId
from common.errors import (
    AMOUNT_EXCEEDS_OPEN,
    CARD_ALREADY_ACTIVE,
    HOLD_NOT_OPEN,
    IDEMPOTENCY_KEY_REUSED,
    INSUFFICIENT_FUNDS,
    INVALID_PIN,
    PROVIDER_ERROR,
)
from common.money import Money
from gateway.adapters.smartclixx import translate, wire
from gateway.ports import ACTIVE, INACTIVE

ECARD = CardId("card_number", "7777001234567890", pin="123")  # pin carries the CVV2
PHYSICAL = CardId("card_number", "5555001234567890")
USD = lambda minor: Money(minor, "USD")  # noqa: E731


def test_card_pin_is_sent_as_cvv2_and_physical_cards_send_none():
    assert translate.authorize("ref", ECARD, USD(1000)).body() == {
        "requestId": "ref", "cardNumber": "7777001234567890", "cvv2": "123", "amount": "10.00"}
    assert translate.balance(PHYSICAL).body() == {"cardNumber": "5555001234567890"}
    assert "7777001234567890" not in repr(translate.authorize("ref", ECARD, USD(1000)))


def test_settlement_and_reversal_requests():
    assert translate.settle("ref", "A1", USD(300), "s").body() == {
        "requestId": "ref:s", "authorizationId": "A1", "amount": "3.00"}
    assert translate.reverse_authorization("ref", "A1", None).body() == {"requestId": "ref", "authorizationId": "A1"}
    assert translate.reverse_authorization("ref", "A1", USD(100)).body()["amount"] == "1.00"


def test_retrieve_and_activate_requests():
    assert translate.retrieve_ecard("a1", "EGIFT").body() == {"requestId": "a1", "programId": "EGIFT"}
    assert translate.activate("a2", ECARD, USD(2500)).body() == {
        "requestId": "a2", "cardNumber": "7777001234567890", "cvv2": "123", "amount": "25.00"}


def test_authorization_reply_is_a_hold_with_its_remainder_open():
    reply = translate.parse_reply("authorize", {
        "status": "APPROVED", "authorizationId": "A1", "approvedAmount": "10.00", "authorizationRemaining": "10.00",
        "cardNumber": "777700******7890", "balance": "25.00", "availableBalance": "15.00"})
    result = translate.authorization_result(reply, ECARD, "USD")
    assert (result.hold_id, result.amount, result.open, result.balance) == ("A1", USD(1000), USD(1000), USD(2500))


def test_settlement_reply_reports_settled_and_what_stays_open():
    reply = translate.parse_reply("settle", {
        "status": "APPROVED", "settlementId": "S1", "authorizationId": "A1", "settledAmount": "3.00",
        "authorizationRemaining": "7.00", "cardNumber": "777700******7890", "balance": "22.00",
        "availableBalance": "15.00"})
    result = translate.settlement_result(reply, ECARD, "USD")
    assert (result.provider_transaction_id, result.amount, result.open, result.balance) == ("S1", USD(300), USD(700), USD(2200))


def test_balance_reply_status_and_held():
    reply = translate.parse_reply("balance", {"status": "APPROVED", "cardNumber": "x", "balance": "25.00",
                                              "availableBalance": "20.00", "active": False})
    info = translate.balance_info(reply, ECARD, "USD")
    assert (info.status, info.balance, info.held) == (INACTIVE, USD(2500), USD(500))
    reply = translate.parse_reply("balance", {"status": "APPROVED", "balance": "1.00", "availableBalance": "1.00", "active": True})
    assert translate.balance_info(reply, ECARD, "USD").status == ACTIVE


def test_ecard_allocation_returns_number_and_cvv2():
    reply = translate.parse_reply("retrieve", {"status": "APPROVED", "cardNumber": "7777000011112222", "cvv2": "321", "programId": "EGIFT"})
    allocation = translate.allocation(reply, "USD")
    assert (allocation.card_number, allocation.cvv2, allocation.pin, allocation.activated) == (
        "7777000011112222", "321", "", False)
    assert "321" not in repr(allocation)


@pytest.mark.parametrize("vendor_code, code, reason", [
    ("INSUFFICIENT_FUNDS", grpc.StatusCode.FAILED_PRECONDITION, INSUFFICIENT_FUNDS),
    ("CARD_ALREADY_ACTIVE", grpc.StatusCode.FAILED_PRECONDITION, CARD_ALREADY_ACTIVE),
    ("CVV2_REQUIRED", grpc.StatusCode.PERMISSION_DENIED, INVALID_PIN),
    ("INVALID_CVV2", grpc.StatusCode.PERMISSION_DENIED, INVALID_PIN),
    ("AUTHORIZATION_CLOSED", grpc.StatusCode.FAILED_PRECONDITION, HOLD_NOT_OPEN),
    ("AMOUNT_EXCEEDS_AUTHORIZATION", grpc.StatusCode.FAILED_PRECONDITION, AMOUNT_EXCEEDS_OPEN),
    ("REQUEST_ID_REUSED", grpc.StatusCode.FAILED_PRECONDITION, IDEMPOTENCY_KEY_REUSED),
    ("UNAUTHORIZED", grpc.StatusCode.INTERNAL, PROVIDER_ERROR),
    ("NEVER_SEEN", grpc.StatusCode.INTERNAL, PROVIDER_ERROR),
])
def test_every_error_code_maps_to_one_mesh_error(vendor_code, code, reason):
    err = translate.error(wire.Reply(status="DECLINED", error_code=vendor_code), "authorize")
    assert (err.code, err.reason, err.metadata["provider"]) == (code, reason, "smartclixx")
