"""Radial storedvalue sandbox over real HTTP: the six calls, ResponseCode Fail/Timeout, RequestIds."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

VENDOR = "radial"
CREDENTIALS = {"headers": {"apiKey": "radial-sim-key"}}
OPTIONS = {"stores": {
    "STORE1": {"claim_link": False, "promo_codes": None},
    "CLAIM": {"claim_link": True, "promo_codes": None},
    "PROMO": {"claim_link": False, "promo_codes": ["SPRING25"]},
}}

PAN = "6006491234567890"
PIN = "1234"
_ids = itertools.count(1)


def rid() -> str:
    return f"req-{next(_ids)}"


def usd(value: str) -> dict[str, str]:
    return {"Value": value, "CurrencyCode": "USD"}


def call(api: httpx.Client, op: str, payload: dict[str, Any], store: str = "STORE1", **kw: Any) -> httpx.Response:
    payload = {"RequestId": rid(), **payload}
    return api.post(f"/v1.0/stores/{store}/storedvalue/{op}", json=payload, **kw)


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["ResponseCode"] == "Success", data
    return data


def fail(response: httpx.Response, code: str, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    data = response.json()
    assert data["ResponseCode"] == "Fail" and data["ErrorCode"] == code and data["ErrorMessage"], data
    return data


def card(**extra: Any) -> dict[str, Any]:
    return {"PaymentAccountUniqueId": PAN, "Pin": PIN, **extra}


def luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_fund_and_activate_physical_card(api, seed, state):
    seed(number=PAN, pin=PIN, status="inactive")
    data = ok(call(api, "FundAndActivate", card(CardType="Physical", Amount=usd("25.00"), OrderId="o-1")))
    assert data["AmountFunded"] == usd("25.00") and data["BalanceAmount"] == usd("25.00")
    assert data["RequestId"].startswith("req-")
    assert "Pin" not in data
    assert state(PAN)["status"] == "active"


def test_fund_and_activate_of_an_active_card_fails(api, seed, state):
    seed(number=PAN, pin=PIN, balance="5.00")
    fail(call(api, "FundAndActivate", card(CardType="Physical", Amount=usd("25.00"))), "CardAlreadyActive")
    assert state(PAN)["balance"] == "5.00"


def test_physical_activation_needs_the_pin(api, seed):
    seed(number=PAN, pin=PIN, status="inactive")
    data = fail(call(api, "FundAndActivate", {"CardType": "Physical", "PaymentAccountUniqueId": PAN,
                                              "Amount": usd("25.00")}), "InvalidRequest", 400)
    assert data["ErrorField"] == "Pin"


def test_virtual_activation_returns_number_and_pin(api):
    data = ok(call(api, "FundAndActivate", {"CardType": "Virtual", "Amount": usd("50.00")}))
    number, pin = data["PaymentAccountUniqueId"], data["Pin"]
    assert len(number) == 16 and number.isdigit() and luhn_ok(number) and len(pin) == 4
    balance = ok(call(api, "BalanceInquiry", {"PaymentAccountUniqueId": number, "Pin": pin}))
    assert balance["BalanceAmount"] == usd("50.00")


def test_virtual_activation_at_a_claim_link_store_returns_proxy_and_link_without_pin(api):
    data = ok(call(api, "FundAndActivate", {"CardType": "Virtual", "Amount": usd("40.00")}, store="CLAIM"))
    assert data["CardClaimLink"].startswith("https://")
    assert "Pin" not in data
    proxy = data["PaymentAccountUniqueId"]
    balance = ok(call(api, "BalanceInquiry", {"PaymentAccountUniqueId": proxy}, store="CLAIM"))
    assert balance["BalanceAmount"] == usd("40.00")
    cashed = ok(call(api, "CashOut", {"PaymentAccountUniqueId": proxy}, store="CLAIM"))
    assert cashed["AmountCashedOut"] == usd("40.00")


def test_virtual_activation_must_not_carry_a_pan(api):
    fail(call(api, "FundAndActivate", {"CardType": "Virtual", "PaymentAccountUniqueId": PAN, "Amount": usd("1.00")}),
         "InvalidRequest", 400)


def test_promo_code_store_requires_a_valid_code(api, seed):
    seed(number=PAN, pin=PIN, status="inactive")
    payload = card(CardType="Physical", Amount=usd("25.00"))
    fail(call(api, "FundAndActivate", payload, store="PROMO"), "PromoCodeRequired")
    fail(call(api, "FundAndActivate", {**payload, "PromoCode": "WINTER"}, store="PROMO"), "InvalidPromoCode")
    ok(call(api, "FundAndActivate", {**payload, "PromoCode": "SPRING25"}, store="PROMO"))


def test_fund_adds_value(api, seed):
    seed(number=PAN, pin=PIN, balance="5.00")
    data = ok(call(api, "Fund", card(Amount=usd("20.00"))))
    assert data["AmountFunded"] == usd("20.00") and data["BalanceAmount"] == usd("25.00")


def test_redeem_then_void_restores_the_balance_once(api, seed, state):
    seed(number=PAN, pin=PIN, balance="30.00")
    redeemed = ok(call(api, "Redeem", card(Amount=usd("12.34"), OrderId="order-9")))
    assert redeemed["AmountRedeemed"] == usd("12.34") and redeemed["BalanceAmount"] == usd("17.66")
    voided = ok(call(api, "RedeemVoid", card(Amount=usd("12.34"), OrderId="order-9")))
    assert voided["AmountVoided"] == usd("12.34") and voided["BalanceAmount"] == usd("30.00")
    fail(call(api, "RedeemVoid", card(Amount=usd("12.34"), OrderId="order-9")), "RedemptionAlreadyVoided")
    assert state(PAN)["balance"] == "30.00"


def test_redeem_void_without_a_matching_redemption_fails(api, seed):
    seed(number=PAN, pin=PIN, balance="30.00")
    ok(call(api, "Redeem", card(Amount=usd("10.00"), OrderId="order-1")))
    fail(call(api, "RedeemVoid", card(Amount=usd("9.99"), OrderId="order-1")), "RedemptionNotFound")
    fail(call(api, "RedeemVoid", card(Amount=usd("10.00"), OrderId="order-2")), "RedemptionNotFound")


def test_redeem_more_than_the_balance_fails_with_insufficient_funds(api, seed, state):
    seed(number=PAN, pin=PIN, balance="10.00")
    fail(call(api, "Redeem", card(Amount=usd("10.01"), OrderId="o")), "InsufficientFunds")
    assert state(PAN)["balance"] == "10.00"


def test_pin_is_required_and_checked(api, seed):
    seed(number=PAN, pin=PIN, balance="10.00")
    fail(call(api, "BalanceInquiry", {"PaymentAccountUniqueId": PAN}), "PinRequired")
    fail(call(api, "BalanceInquiry", {"PaymentAccountUniqueId": PAN, "Pin": "9999"}), "InvalidPin")


def test_cash_out_devalues_and_deactivates(api, seed, state):
    seed(number=PAN, pin=PIN, balance="10.00")
    data = ok(call(api, "CashOut", card()))
    assert data["AmountCashedOut"] == usd("10.00") and data["BalanceAmount"] == usd("0.00")
    assert state(PAN)["status"] == "closed"
    fail(call(api, "BalanceInquiry", card()), "CardDeactivated")


def test_a_request_id_is_used_once(api, seed, state):
    seed(number=PAN, pin=PIN, balance="30.00")
    payload = {"RequestId": "fixed-1", **card(Amount=usd("5.00"), OrderId="o")}
    ok(api.post("/v1.0/stores/STORE1/storedvalue/Redeem", json=payload))
    fail(api.post("/v1.0/stores/STORE1/storedvalue/Redeem", json=payload), "DuplicateRequestId")
    assert state(PAN)["balance"] == "25.00"


def test_vendor_timeout_applies_nothing_and_the_retry_needs_a_new_request_id(api, seed, state):
    seed(number=PAN, pin=PIN, balance="30.00")
    payload = {"RequestId": "t-1", **card(Amount=usd("5.00"), OrderId="o")}
    path = "/v1.0/stores/STORE1/storedvalue/Redeem"
    timed_out = api.post(path, json=payload, headers={"X-Sim-Fault": "vendor-timeout"}).json()
    assert timed_out["ResponseCode"] == "Timeout" and timed_out["RequestId"] == "t-1"
    assert state(PAN)["balance"] == "30.00"
    fail(api.post(path, json=payload), "DuplicateRequestId")
    ok(api.post(path, json={**payload, "RequestId": "t-2"}))
    assert state(PAN)["balance"] == "25.00"


def test_currency_must_match_the_card(api, seed):
    seed(number=PAN, pin=PIN, balance="30.00")
    fail(call(api, "Redeem", card(Amount={"Value": "1.00", "CurrencyCode": "CAD"}, OrderId="o")), "CurrencyMismatch")


@pytest.mark.parametrize("op, payload, field", [
    ("Redeem", card(Amount=usd("1.00")), "OrderId"),
    ("Redeem", card(Amount="1.00", OrderId="o"), "Amount"),
    ("Redeem", card(Amount=usd("1.005"), OrderId="o"), "Amount.Value"),
    ("Redeem", card(Amount=usd("0.00"), OrderId="o"), "Amount.Value"),
    ("Redeem", card(Amount={"Value": 1, "CurrencyCode": "USD"}, OrderId="o"), "Amount.Value"),
    ("Redeem", card(Amount={"Value": "1.00", "CurrencyCode": "usd"}, OrderId="o"), "Amount.CurrencyCode"),
    ("Redeem", card(Amount={"Value": "1.00"}, OrderId="o"), "Amount.CurrencyCode"),
    ("Redeem", card(Amount=usd("1.00"), OrderId="o" * 65), "OrderId"),
    ("BalanceInquiry", {"PaymentAccountUniqueId": "60064912ABCD7890", "Pin": PIN}, "PaymentAccountUniqueId"),
    ("BalanceInquiry", {"Pin": PIN}, "PaymentAccountUniqueId"),
    ("BalanceInquiry", card(Amount=usd("1.00")), "Amount"),
    ("FundAndActivate", card(Amount=usd("1.00")), "CardType"),
    ("FundAndActivate", card(CardType="Plastic", Amount=usd("1.00")), "CardType"),
])
def test_malformed_requests_fail_with_invalid_request(api, seed, state, op, payload, field):
    seed(number=PAN, pin=PIN, balance="30.00")
    data = fail(call(api, op, payload), "InvalidRequest", 400)
    assert data["ErrorField"] == field
    assert state(PAN)["balance"] == "30.00"


def test_request_id_is_required_and_bounded(api):
    fail(api.post("/v1.0/stores/STORE1/storedvalue/BalanceInquiry", json=card()), "InvalidRequest", 400)
    fail(api.post("/v1.0/stores/STORE1/storedvalue/BalanceInquiry", json={"RequestId": "r" * 65, **card()}),
         "InvalidRequest", 400)


def test_unknown_store_and_missing_api_key_are_refused(api, running):
    fail(call(api, "BalanceInquiry", card(), store="NOPE"), "StoreNotFound", 404)
    fail(httpx.post(running.base_url + "/v1.0/stores/STORE1/storedvalue/BalanceInquiry",
                    json={"RequestId": "x", **card()}), "Unauthorized", 401)


def test_wrong_answer_misstates_the_balance_amount(api, seed, state):
    seed(number=PAN, pin=PIN, balance="30.00")
    data = call(api, "BalanceInquiry", card(), headers={"X-Sim-Fault": "wrong-answer"}).json()
    assert data["BalanceAmount"] == usd("31.00")
    assert state(PAN)["balance"] == "30.00"
