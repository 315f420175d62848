"""Radial translation (gateway/adapters/radial/translate.py): wire requests exactly as WIRE.md,
replies to mesh results, and the one error table."""

from __future__ import annotations

import grpc
import pytest

from common.cards import CardId
from common.errors import (
    CARD_ALREADY_ACTIVE,
    CARD_INACTIVE,
    INSUFFICIENT_FUNDS,
    INVALID_PIN,
    PROVIDER_ERROR,
    TRANSACTION_NOT_FOUND,
    TRANSACTION_REVERSED,
    MeshError,
)
from common.money import Money
from gateway.adapters.radial import translate, wire
from gateway.ports import ACTIVE, DEACTIVATED

CARD = CardId("card_number", "6006491234567890", pin="1234")
USD = lambda minor: Money(minor, "USD")  # noqa: E731


def test_redeem_request_is_the_documented_json_with_decimal_string_amount():
    request = translate.redeem("ref-1", CARD, USD(1050), "order-9")
    assert request.OPERATION == "Redeem"
    assert request.body() == {
        "RequestId": "ref-1", "PaymentAccountUniqueId": "6006491234567890", "Pin": "1234",
        "Amount": {"Value": "10.50", "CurrencyCode": "USD"}, "OrderId": "order-9",
    }


def test_request_repr_never_shows_card_number_or_pin():
    text = repr(translate.redeem("ref-1", CARD, USD(100), "o")) + str(translate.redeem("ref-1", CARD, USD(100), "o"))
    assert "6006491234567890" not in text and "1234'" not in text


def test_pinless_card_omits_pin_and_zero_decimal_currency_has_no_fraction():
    request = translate.fund("r", CardId("card_number", "6006491234567890"), Money(500, "JPY"), "o")
    assert request.body() == {
        "RequestId": "r", "PaymentAccountUniqueId": "6006491234567890",
        "Amount": {"Value": "500", "CurrencyCode": "JPY"}, "OrderId": "o",
    }


def test_virtual_fund_and_activate_sends_no_card_and_physical_requires_pin():
    virtual = translate.activate_virtual("r", USD(2500), "PROMO1", "o").body()
    assert virtual == {"RequestId": "r", "CardType": "Virtual", "Amount": {"Value": "25.00", "CurrencyCode": "USD"},
                       "PromoCode": "PROMO1", "OrderId": "o"}
    physical = translate.activate_physical("r", CARD, USD(2500), "", "o").body()
    assert physical["CardType"] == "Physical" and physical["Pin"] == "1234" and "PromoCode" not in physical
    with pytest.raises(MeshError) as caught:
        translate.activate_physical("r", CardId("card_number", "6006491234567890"), USD(2500), "", "o")
    assert caught.value.reason == INVALID_PIN and caught.value.field == "card.pin"


def test_request_ids_are_new_per_attempt_and_fit_radials_64_characters():
    assert translate.request_id("ref-1", 0) == "ref-1"
    assert translate.request_id("ref-1", 2) == "ref-1:2"
    long_ref = "x" * 128
    ids = {translate.request_id(long_ref, n) for n in range(5)}
    assert len(ids) == 5 and all(len(i) <= 64 for i in ids)
    assert translate.wire_id(long_ref) == translate.wire_id(long_ref)  # stable for the void


def test_redemption_handle_round_trips_order_and_amount():
    handle = translate.redemption_handle("ord:with:colons", USD(1234))
    assert translate.parse_redemption_handle(handle) == translate.Redemption("ord:with:colons", USD(1234))
    assert translate.parse_redemption_handle("ref-1") is None
    assert translate.parse_redemption_handle("R:12x:USD:o") is None


def test_redeem_reply_maps_amount_and_balance():
    reply = translate.parse_reply("redeem", {
        "ResponseCode": "Success", "RequestId": "r", "AmountRedeemed": {"Value": "10.50", "CurrencyCode": "USD"},
        "BalanceAmount": {"Value": "14.50", "CurrencyCode": "USD"}, "Unknown": 1,
    })
    result = translate.operation_result(reply, CARD.masked, reply.amount_redeemed, "AmountRedeemed", "h")
    assert (result.amount, result.balance, result.status, result.masked_number) == (
        USD(1050), USD(1450), ACTIVE, "600649******7890")


def test_json_number_amount_is_a_provider_error_not_a_guess():
    with pytest.raises(MeshError) as caught:
        translate.parse_reply("redeem", {"ResponseCode": "Success", "BalanceAmount": {"Value": 14.5, "CurrencyCode": "USD"}})
    assert caught.value.reason == PROVIDER_ERROR


@pytest.mark.parametrize("vendor_code, code, reason", [
    ("InsufficientFunds", grpc.StatusCode.FAILED_PRECONDITION, INSUFFICIENT_FUNDS),
    ("CardAlreadyActive", grpc.StatusCode.FAILED_PRECONDITION, CARD_ALREADY_ACTIVE),
    ("CardNotActive", grpc.StatusCode.FAILED_PRECONDITION, CARD_INACTIVE),
    ("CardDeactivated", grpc.StatusCode.FAILED_PRECONDITION, CARD_INACTIVE),
    ("InvalidPin", grpc.StatusCode.PERMISSION_DENIED, INVALID_PIN),
    ("PinRequired", grpc.StatusCode.PERMISSION_DENIED, INVALID_PIN),
    ("RedemptionNotFound", grpc.StatusCode.NOT_FOUND, TRANSACTION_NOT_FOUND),
    ("RedemptionAlreadyVoided", grpc.StatusCode.FAILED_PRECONDITION, TRANSACTION_REVERSED),
    ("DuplicateRequestId", grpc.StatusCode.ABORTED, translate.PROVIDER_OUTCOME_UNKNOWN),
    ("PromoCodeRequired", grpc.StatusCode.INVALID_ARGUMENT, translate.PROMO_CODE_REQUIRED),
    ("Unauthorized", grpc.StatusCode.INTERNAL, PROVIDER_ERROR),
    ("SomethingNew", grpc.StatusCode.INTERNAL, PROVIDER_ERROR),
])
def test_every_error_code_maps_to_one_mesh_error(vendor_code, code, reason):
    reply = wire.Reply(response_code="Fail", error_code=vendor_code, error_message="card 6006491234567890 bad")
    err = translate.error(reply, "redeem")
    assert (err.code, err.reason) == (code, reason)
    assert err.metadata["provider"] == "radial" and "6006491234567890" not in err.message


def test_duplicate_request_id_is_marked_outcome_unknown_and_deactivated_card_says_so():
    dup = translate.error(wire.Reply(response_code="Fail", error_code="DuplicateRequestId"), "redeem")
    assert dup.metadata["outcome"] == "unknown"
    gone = translate.error(wire.Reply(response_code="Fail", error_code="CardDeactivated"), "redeem")
    assert gone.metadata["card_status"] == DEACTIVATED


def test_virtual_allocation_returns_number_and_pin_or_claim_link_with_proxy():
    plain = translate.parse_reply("allocate", {
        "ResponseCode": "Success", "AmountFunded": {"Value": "25.00", "CurrencyCode": "USD"},
        "BalanceAmount": {"Value": "25.00", "CurrencyCode": "USD"}, "PaymentAccountUniqueId": "6006000011112222",
        "Pin": "4321",
    })
    allocation = translate.virtual_allocation(plain, "r")
    assert (allocation.card_number, allocation.pin, allocation.activated) == ("6006000011112222", "4321", True)
    assert allocation.result.amount == USD(2500) and "6006000011112222" not in repr(allocation)
    link = translate.parse_reply("allocate", {
        "ResponseCode": "Success", "AmountFunded": {"Value": "25.00", "CurrencyCode": "USD"},
        "BalanceAmount": {"Value": "25.00", "CurrencyCode": "USD"}, "PaymentAccountUniqueId": "9990000011112222",
        "CardClaimLink": "https://claim.giftcards.example/c/abc",
    })
    claimed = translate.virtual_allocation(link, "r")
    assert (claimed.card_number, claimed.pin, claimed.proxy_number, claimed.claim_url) == (
        "", "", "9990000011112222", "https://claim.giftcards.example/c/abc")


def test_inactive_card_balance_is_zero_with_its_status():
    info = translate.inactive_balance(CARD, "CardDeactivated", "USD")
    assert (info.status, info.balance, info.held) == (DEACTIVATED, USD(0), USD(0))
