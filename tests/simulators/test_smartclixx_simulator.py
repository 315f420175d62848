"""SmartClixx sandbox over real HTTP: physical activation, e-card retrieval + activation, balance,
authorization, several settlements per authorization, full and partial authorization reversal."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

VENDOR = "smartclixx"
CREDENTIALS = {"headers": {"X-Api-Key": "smartclixx-sim-key"}}

CARD = "7777000000000001"
_ids = itertools.count(1)


def rid() -> str:
    return f"r-{next(_ids)}"


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["status"] == "APPROVED", data
    return data


def err(response: httpx.Response, status: int, outcome: str, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    data = response.json()
    assert (data["status"], data["errorCode"]) == (outcome, code) and data["errorMessage"], data
    return data


def authorize(api: httpx.Client, amount: str, **extra: Any) -> dict[str, Any]:
    return ok(api.post("/api/v1/authorizations", json={"requestId": rid(), "cardNumber": CARD,
                                                       "amount": amount, **extra}))


def test_physical_activation_loads_the_card(api, seed, state):
    seed(number=CARD, status="inactive")
    data = ok(api.post("/api/v1/cards/activate", json={"requestId": rid(), "cardNumber": CARD, "amount": "25.00"}))
    assert (data["activatedAmount"], data["balance"]) == ("25.00", "25.00")
    assert data["cardNumber"] == "777700******0001"
    assert state(CARD)["status"] == "active"


def test_activation_of_an_active_card_is_refused(api, seed, state):
    seed(number=CARD, balance="5.00")
    err(api.post("/api/v1/cards/activate", json={"requestId": rid(), "cardNumber": CARD, "amount": "25.00"}),
        409, "DECLINED", "CARD_ALREADY_ACTIVE")
    assert state(CARD)["balance"] == "5.00"


def test_ecard_retrieval_returns_number_and_cvv2_then_activate_loads_it(api, state):
    ecard = ok(api.post("/api/v1/ecards/retrieve", json={"requestId": rid(), "programId": "HOLIDAY"}))
    number, cvv2 = ecard["cardNumber"], ecard["cvv2"]
    assert number.startswith("7777") and len(number) == 16 and len(cvv2) == 3
    assert state(number)["status"] == "inactive"
    err(api.post("/api/v1/cards/activate", json={"requestId": rid(), "cardNumber": number, "amount": "50.00"}),
        422, "DECLINED", "CVV2_REQUIRED")
    err(api.post("/api/v1/cards/activate", json={"requestId": rid(), "cardNumber": number, "amount": "50.00",
                                                 "cvv2": "000" if cvv2 != "000" else "111"}),
        422, "DECLINED", "INVALID_CVV2")
    data = ok(api.post("/api/v1/cards/activate", json={"requestId": rid(), "cardNumber": number,
                                                       "cvv2": cvv2, "amount": "50.00"}))
    assert data["balance"] == "50.00"
    assert "cvv2" not in str(state(number)["attributes"])


def test_balance(api, seed):
    seed(number=CARD, balance="42.00")
    data = ok(api.post("/api/v1/cards/balance", json={"cardNumber": CARD}))
    assert (data["balance"], data["availableBalance"], data["active"]) == ("42.00", "42.00", True)


def test_authorization_holds_funds(api, seed, state):
    seed(number=CARD, balance="100.00")
    data = authorize(api, "60.00", orderId="o-1")
    assert (data["approvedAmount"], data["authorizationRemaining"]) == ("60.00", "60.00")
    assert (data["balance"], data["availableBalance"]) == ("100.00", "40.00")


def test_authorization_over_available_is_declined(api, seed):
    seed(number=CARD, balance="10.00")
    err(api.post("/api/v1/authorizations", json={"requestId": rid(), "cardNumber": CARD, "amount": "10.01"}),
        422, "DECLINED", "INSUFFICIENT_FUNDS")


def test_each_settlement_reduces_what_is_left_on_the_authorization(api, seed, state):
    seed(number=CARD, balance="100.00")
    auth = authorize(api, "60.00")
    first = ok(api.post("/api/v1/settlements", json={"requestId": rid(), "authorizationId": auth["authorizationId"],
                                                     "amount": "25.00"}))
    assert (first["settledAmount"], first["authorizationRemaining"]) == ("25.00", "35.00")
    assert (first["balance"], first["availableBalance"]) == ("75.00", "40.00")
    second = ok(api.post("/api/v1/settlements", json={"requestId": rid(), "authorizationId": auth["authorizationId"],
                                                      "amount": "35.00"}))
    assert (second["authorizationRemaining"], second["balance"], second["availableBalance"]) == \
        ("0.00", "40.00", "40.00")
    err(api.post("/api/v1/settlements", json={"requestId": rid(), "authorizationId": auth["authorizationId"],
                                              "amount": "0.01"}), 409, "DECLINED", "AUTHORIZATION_CLOSED")


def test_settlement_above_what_is_left_is_refused(api, seed, state):
    seed(number=CARD, balance="100.00")
    auth = authorize(api, "10.00")
    err(api.post("/api/v1/settlements", json={"requestId": rid(), "authorizationId": auth["authorizationId"],
                                              "amount": "10.01"}), 422, "DECLINED", "AMOUNT_EXCEEDS_AUTHORIZATION")
    assert state(CARD)["balance"] == "100.00"


def test_partial_then_full_reversal_releases_the_hold_once(api, seed, state):
    seed(number=CARD, balance="100.00")
    auth = authorize(api, "60.00")
    partial = ok(api.post("/api/v1/authorizations/reversal", json={
        "requestId": rid(), "authorizationId": auth["authorizationId"], "amount": "10.00"}))
    assert (partial["reversedAmount"], partial["authorizationRemaining"], partial["availableBalance"]) == \
        ("10.00", "50.00", "50.00")
    full = ok(api.post("/api/v1/authorizations/reversal", json={"requestId": rid(),
                                                                "authorizationId": auth["authorizationId"]}))
    assert (full["reversedAmount"], full["authorizationRemaining"], full["availableBalance"]) == \
        ("50.00", "0.00", "100.00")
    again = {"requestId": rid(), "authorizationId": auth["authorizationId"]}
    err(api.post("/api/v1/authorizations/reversal", json=again), 409, "DECLINED", "AUTHORIZATION_CLOSED")
    assert state(CARD)["balance"] == "100.00"


def test_request_id_replays_a_settlement_instead_of_capturing_twice(api, seed, state):
    seed(number=CARD, balance="100.00")
    auth = authorize(api, "60.00")
    payload = {"requestId": "ship-1", "authorizationId": auth["authorizationId"], "amount": "20.00"}
    first = ok(api.post("/api/v1/settlements", json=payload))
    assert ok(api.post("/api/v1/settlements", json=payload)) == first
    assert state(CARD)["balance"] == "80.00"
    err(api.post("/api/v1/settlements", json={**payload, "amount": "21.00"}), 409, "ERROR", "REQUEST_ID_REUSED")


@pytest.mark.parametrize("path, payload, field", [
    ("/api/v1/authorizations", {"requestId": "x", "cardNumber": CARD}, "amount"),
    ("/api/v1/authorizations", {"requestId": "x", "cardNumber": CARD, "amount": "1.234"}, "amount"),
    ("/api/v1/authorizations", {"requestId": "x", "cardNumber": CARD, "amount": 1}, "amount"),
    ("/api/v1/authorizations", {"cardNumber": CARD, "amount": "1.00"}, "requestId"),
    ("/api/v1/authorizations", {"requestId": "x" * 65, "cardNumber": CARD, "amount": "1.00"}, "requestId"),
    ("/api/v1/authorizations", {"requestId": "x", "cardNumber": "77770000", "amount": "1.00"}, "cardNumber"),
    ("/api/v1/authorizations", {"requestId": "x", "cardNumber": CARD, "amount": "1.00", "cvv2": "12"}, "cvv2"),
    ("/api/v1/settlements", {"requestId": "x", "amount": "1.00"}, "authorizationId"),
    ("/api/v1/authorizations/reversal", {"requestId": "x", "authorizationId": "H1", "amount": "0"}, "amount"),
    ("/api/v1/cards/activate", {"requestId": "x", "cardNumber": CARD, "amount": "1.00", "pin": "1"}, "pin"),
])
def test_malformed_requests_are_invalid_request(api, seed, state, path, payload, field):
    seed(number=CARD, balance="100.00")
    assert err(api.post(path, json=payload), 400, "ERROR", "INVALID_REQUEST")["field"] == field
    assert state(CARD)["available"] == "100.00"


def test_missing_api_key_is_unauthorized(running):
    err(httpx.post(running.base_url + "/api/v1/cards/balance", json={"cardNumber": CARD}),
        401, "ERROR", "UNAUTHORIZED")


def test_wrong_answer_misstates_the_available_balance(api, seed, state):
    seed(number=CARD, balance="100.00")
    data = api.post("/api/v1/cards/balance", json={"cardNumber": CARD}, headers={"X-Sim-Fault": "wrong-answer"}).json()
    assert data["availableBalance"] == "101.00"
    assert state(CARD)["available"] == "100.00"
