"""Clutch sandbox over real HTTP: balance, hold with partial approval, settlement ($0 = reversal),
allocate by card set, activation, issuance, requestRef replay, errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

VENDOR = "clutch"
CLUTCH_HEADERS = {"brand": "SIMBRAND", "location": "WEB", "terminal": "OMS-1"}
CREDENTIALS = {"auth": ("clutch-sim-key", "clutch-sim-secret"), "headers": CLUTCH_HEADERS}

CARD = "6391000000000001"


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["success"] is True
    return data


def err(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    data = response.json()
    assert data["success"] is False and data["errorCode"] == code and data["errorMessage"]
    return data


def test_balance_reports_balance_and_available(api, seed):
    seed(number=CARD, balance="50.00", pin="1111")
    data = ok(api.post("/merchant/balance", json={"cardNumber": CARD, "pin": "1111"}))
    assert (data["balance"], data["availableBalance"], data["active"]) == ("50.00", "50.00", True)
    assert data["cardNumber"] == "639100******0001"


def test_hold_for_less_than_available_is_approved_in_full(api, seed, state):
    seed(number=CARD, balance="50.00")
    data = ok(api.post("/merchant/hold", json={"cardNumber": CARD, "amount": "20.00"}))
    assert (data["requestedAmount"], data["approvedAmount"]) == ("20.00", "20.00")
    assert (data["balance"], data["availableBalance"]) == ("50.00", "30.00")
    assert state(CARD)["available"] == "30.00"


def test_hold_for_more_than_available_is_partially_approved(api, seed):
    seed(number=CARD, balance="15.00")
    data = ok(api.post("/merchant/hold", json={"cardNumber": CARD, "amount": "40.00"}))
    assert (data["requestedAmount"], data["approvedAmount"], data["availableBalance"]) == ("40.00", "15.00", "0.00")


def test_hold_with_nothing_available_is_insufficient_funds(api, seed):
    seed(number=CARD, balance="0.00")
    err(api.post("/merchant/hold", json={"cardNumber": CARD, "amount": "1.00"}), 422, "InsufficientFunds")


def test_settlement_redeems_and_releases_the_rest_of_the_hold(api, seed, state):
    seed(number=CARD, balance="50.00")
    hold = ok(api.post("/merchant/hold", json={"cardNumber": CARD, "amount": "30.00"}))
    data = ok(api.post("/merchant/settlement", json={"holdId": hold["holdId"], "amount": "12.00"}))
    assert (data["redeemedAmount"], data["releasedAmount"]) == ("12.00", "18.00")
    assert (data["balance"], data["availableBalance"]) == ("38.00", "38.00")
    err(api.post("/merchant/settlement", json={"holdId": hold["holdId"], "amount": "1.00"}), 409, "HoldClosed")
    assert state(CARD)["holds"][0]["status"] == "closed"


def test_zero_settlement_is_a_hold_reversal(api, seed):
    seed(number=CARD, balance="50.00")
    hold = ok(api.post("/merchant/hold", json={"cardNumber": CARD, "amount": "30.00"}))
    data = ok(api.post("/merchant/settlement", json={"holdId": hold["holdId"], "amount": "0.00"}))
    assert (data["redeemedAmount"], data["releasedAmount"]) == ("0.00", "30.00")
    assert (data["balance"], data["availableBalance"]) == ("50.00", "50.00")
    err(api.post("/merchant/settlement", json={"holdId": hold["holdId"], "amount": "0"}), 409, "HoldClosed")


def test_settlement_above_the_hold_is_refused(api, seed, state):
    seed(number=CARD, balance="50.00")
    hold = ok(api.post("/merchant/hold", json={"cardNumber": CARD, "amount": "10.00"}))
    err(api.post("/merchant/settlement", json={"holdId": hold["holdId"], "amount": "10.01"}), 422, "AmountExceedsHold")
    assert state(CARD)["balance"] == "50.00"
    err(api.post("/merchant/settlement", json={"holdId": "H404", "amount": "1.00"}), 404, "HoldNotFound")


def test_request_ref_replays_a_hold_instead_of_placing_a_second_one(api, seed, state):
    seed(number=CARD, balance="50.00")
    payload = {"cardNumber": CARD, "amount": "20.00", "requestRef": "order-1-hold"}
    first = ok(api.post("/merchant/hold", json=payload))
    again = ok(api.post("/merchant/hold", json=payload))
    assert again == first
    assert state(CARD)["available"] == "30.00"
    err(api.post("/merchant/hold", json={**payload, "amount": "21.00"}), 409, "RequestRefReused")


def test_allocate_activate_issue_an_egift(api, state):
    allocated = ok(api.post("/merchant/allocate", json={"cardSetId": "EGIFT"}))
    number, pin = allocated["cardNumber"], allocated["pin"]
    assert number.startswith("6391") and len(number) == 16 and len(pin) == 4
    assert state(number)["status"] == "inactive"
    activated = ok(api.post("/merchant/activate", json={"cardNumber": number, "pin": pin}))
    assert activated["active"] is True and activated["balance"] == "0.00"
    issued = ok(api.post("/merchant/issue", json={"cardNumber": number, "pin": pin, "amount": "25.00"}))
    assert (issued["amount"], issued["balance"]) == ("25.00", "25.00")


def test_allocate_from_a_card_set_without_pins(api):
    allocated = ok(api.post("/merchant/allocate", json={"cardSetId": "EGIFT-NOPIN"}))
    assert "pin" not in allocated
    err(api.post("/merchant/allocate", json={"cardSetId": "NOPE"}), 404, "CardSetNotFound")


def test_activation_of_an_active_card_is_card_already_active(api, seed, state):
    seed(number=CARD, balance="5.00")
    err(api.post("/merchant/activate", json={"cardNumber": CARD}), 409, "CardAlreadyActive")
    assert state(CARD)["balance"] == "5.00"


def test_issuance_to_an_inactive_card_is_refused(api, seed):
    seed(number=CARD, status="inactive")
    err(api.post("/merchant/issue", json={"cardNumber": CARD, "amount": "5.00"}), 422, "CardNotActive")


def test_pin_is_required_when_the_card_has_one(api, seed):
    seed(number=CARD, balance="5.00", pin="1111")
    err(api.post("/merchant/balance", json={"cardNumber": CARD}), 422, "PinRequired")
    err(api.post("/merchant/balance", json={"cardNumber": CARD, "pin": "2222"}), 422, "InvalidPin")


@pytest.mark.parametrize("path, payload, field", [
    ("/merchant/hold", {"cardNumber": CARD}, "amount"),
    ("/merchant/hold", {"cardNumber": CARD, "amount": 5}, "amount"),
    ("/merchant/hold", {"cardNumber": CARD, "amount": "0.00"}, "amount"),
    ("/merchant/hold", {"cardNumber": CARD, "amount": "5.555"}, "amount"),
    ("/merchant/hold", {"amount": "5.00"}, "cardNumber"),
    ("/merchant/hold", {"cardNumber": CARD, "amount": "5.00", "requestRef": "r" * 65}, "requestRef"),
    ("/merchant/settlement", {"holdId": "H1", "amount": "-1.00"}, "amount"),
    ("/merchant/settlement", {"amount": "1.00"}, "holdId"),
    ("/merchant/allocate", {}, "cardSetId"),
    ("/merchant/balance", {"cardNumber": CARD, "PIN": "1"}, "PIN"),
])
def test_malformed_requests_are_invalid_request(api, seed, state, path, payload, field):
    seed(number=CARD, balance="50.00")
    assert err(api.post(path, json=payload), 400, "InvalidRequest")["field"] == field
    assert state(CARD)["available"] == "50.00"


def test_credentials_and_headers_are_required(running, seed):
    seed(number=CARD, balance="5.00")
    url = running.base_url + "/merchant/balance"
    auth = ("clutch-sim-key", "clutch-sim-secret")
    err(httpx.post(url, json={"cardNumber": CARD}, headers=CLUTCH_HEADERS), 401, "Unauthorized")
    err(httpx.post(url, json={"cardNumber": CARD}, auth=auth, headers={"brand": "SIMBRAND"}), 400, "InvalidRequest")
    err(httpx.post(url, json={"cardNumber": CARD}, auth=auth, headers={**CLUTCH_HEADERS, "brand": "OTHER"}),
        403, "Forbidden")


def test_wrong_answer_misstates_the_available_balance(api, seed, state):
    seed(number=CARD, balance="50.00")
    data = api.post("/merchant/balance", json={"cardNumber": CARD}, headers={"X-Sim-Fault": "wrong-answer"}).json()
    assert data["availableBalance"] == "51.00"
    assert state(CARD)["available"] == "50.00"
