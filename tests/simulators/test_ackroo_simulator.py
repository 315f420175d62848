"""Ackroo sandbox over real HTTP: /device/card, every /transaction/gift/* call, reversal, errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

VENDOR = "ackroo"
CREDENTIALS = {"headers": {"Authorization": "Bearer ackroo-sim-token"}}

CARD = "612573981949778930"
DEVICE = "0d373af2942291bf"


def txn(**fields: Any) -> dict[str, Any]:
    return {"device_id": DEVICE, "cardnumber": CARD, "clerk_id": "POS Clerk", **fields}


def assert_error(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    data = response.json()
    assert data["success"] is False and data["error"] == name and data["message"]
    return data


def test_device_card_reports_status_and_gift_balance(api, seed):
    seed(number=CARD, status="inactive")
    data = api.post("/device/card", json={"device_id": DEVICE, "cardnumber": CARD}).json()
    assert data == {"success": True, "cardnumber": "612573********8930", "active": False, "gc_balance": "0.00"}


def test_issue_activates_and_loads_the_card(api, seed, state):
    seed(number=CARD, status="inactive")
    data = api.post("/transaction/gift/issue", json=txn(amount="10")).json()
    assert data["success"] is True and data["amount"] == "10.00" and data["gc_balance"] == "10.00"
    assert data["transaction_number"]
    assert api.post("/device/card", json={"device_id": DEVICE, "cardnumber": CARD}).json()["active"] is True
    assert state(CARD)["status"] == "active"


def test_issue_on_an_active_card_returns_card_already_active(api, seed, state):
    seed(number=CARD, balance="10.00")
    assert_error(api.post("/transaction/gift/issue", json=txn(amount="10")), 409, "CardAlreadyActive")
    assert state(CARD)["balance"] == "10.00"


def test_debit_takes_the_amount(api, seed):
    seed(number=CARD, balance="20.00")
    data = api.post("/transaction/gift/debit", json=txn(amount="5")).json()
    assert (data["amount"], data["gc_balance"]) == ("5.00", "15.00")


def test_debit_over_the_balance_returns_insufficient_funds(api, seed, state):
    seed(number=CARD, balance="20.00")
    assert_error(api.post("/transaction/gift/debit", json=txn(amount="50")), 422, "InsufficientFunds")
    assert state(CARD)["balance"] == "20.00"


def test_partial_debit_takes_everything_available_and_never_denies(api, seed):
    seed(number=CARD, balance="20.00")
    data = api.post("/transaction/gift/debit/partial", json=txn(amount="50")).json()
    assert (data["requested_amount"], data["amount"], data["gc_balance"]) == ("50.00", "20.00", "0.00")
    again = api.post("/transaction/gift/debit/partial", json=txn(amount="5")).json()
    assert again["success"] is True and (again["amount"], again["gc_balance"]) == ("0.00", "0.00")


def test_partial_debit_under_the_balance_takes_just_the_amount(api, seed):
    seed(number=CARD, balance="20.00")
    data = api.post("/transaction/gift/debit/partial", json=txn(amount="7.25")).json()
    assert (data["amount"], data["gc_balance"]) == ("7.25", "12.75")


def test_credit_reloads_and_its_reversal_restores_the_balance_once(api, seed, state):
    seed(number=CARD, balance="20.00")
    credited = api.post("/transaction/gift/credit", json=txn(amount="10")).json()
    assert credited["gc_balance"] == "30.00"
    reversal = {"device_id": DEVICE, "transaction_number": credited["transaction_number"]}
    reversed_ = api.post("/transaction/reversal", json=reversal).json()
    assert reversed_["success"] is True
    assert reversed_["reversed_transaction_number"] == credited["transaction_number"]
    assert (reversed_["amount"], reversed_["gc_balance"]) == ("10.00", "20.00")
    assert_error(api.post("/transaction/reversal", json=reversal), 409, "TransactionAlreadyReversed")
    assert state(CARD)["balance"] == "20.00"


def test_reversal_of_a_debit_gives_the_money_back(api, seed):
    seed(number=CARD, balance="20.00")
    debited = api.post("/transaction/gift/debit", json=txn(amount="5")).json()
    back = api.post("/transaction/reversal", json={"device_id": DEVICE,
                                                   "transaction_number": debited["transaction_number"]}).json()
    assert back["gc_balance"] == "20.00"


def test_reversal_of_a_reversal_and_of_an_unknown_number_are_refused(api, seed):
    seed(number=CARD, balance="20.00")
    debited = api.post("/transaction/gift/debit", json=txn(amount="5")).json()
    back = api.post("/transaction/reversal", json={"device_id": DEVICE,
                                                   "transaction_number": debited["transaction_number"]}).json()
    assert_error(api.post("/transaction/reversal", json={"device_id": DEVICE,
                                                         "transaction_number": back["transaction_number"]}),
                 422, "TransactionNotReversible")
    assert_error(api.post("/transaction/reversal", json={"device_id": DEVICE, "transaction_number": "nope"}),
                 404, "TransactionNotFound")


def test_cash_debits_the_whole_balance(api, seed, state):
    seed(number=CARD, balance="13.37")
    data = api.post("/transaction/gift/debit/cash", json=txn()).json()
    assert (data["amount"], data["gc_balance"]) == ("13.37", "0.00")
    assert state(CARD)["status"] == "active"


def test_refund_credits_the_card(api, seed):
    seed(number=CARD, balance="1.00")
    data = api.post("/transaction/gift/refund", json=txn(amount="10")).json()
    assert (data["amount"], data["gc_balance"]) == ("10.00", "11.00")


def test_transactions_on_an_inactive_card_are_refused(api, seed):
    seed(number=CARD, status="inactive")
    for path in ("/transaction/gift/debit", "/transaction/gift/credit", "/transaction/gift/refund"):
        assert_error(api.post(path, json=txn(amount="1")), 422, "CardNotActive")


def test_unknown_card_is_card_not_found(api):
    assert_error(api.post("/device/card", json={"device_id": DEVICE, "cardnumber": "1234"}), 404, "CardNotFound")


@pytest.mark.parametrize("path, payload, field", [
    ("/transaction/gift/debit", {"device_id": DEVICE, "cardnumber": CARD, "clerk_id": "c"}, "amount"),
    ("/transaction/gift/debit", txn(amount=5), "amount"),           # a JSON number, not a decimal string
    ("/transaction/gift/debit", txn(amount="5.001"), "amount"),
    ("/transaction/gift/debit", txn(amount="-5"), "amount"),
    ("/transaction/gift/debit", txn(amount="0"), "amount"),
    ("/transaction/gift/debit", txn(amount="five"), "amount"),
    ("/transaction/gift/debit", {"cardnumber": CARD, "amount": "5", "clerk_id": "c"}, "device_id"),
    ("/transaction/gift/debit", {"device_id": DEVICE, "cardnumber": CARD, "amount": "5"}, "clerk_id"),
    ("/transaction/gift/debit", txn(amount="5", clerk_id="c" * 101), "clerk_id"),
    ("/transaction/gift/debit", txn(amount="5", device_id="d" * 65), "device_id"),
    ("/transaction/gift/debit", txn(amount="5", cardnumber="6125-7398"), "cardnumber"),
    ("/transaction/gift/debit", txn(amount="5", cardNumber=CARD), "cardNumber"),
    ("/transaction/gift/debit/cash", txn(amount="5"), "amount"),
    ("/transaction/reversal", {"device_id": DEVICE}, "transaction_number"),
    ("/device/card", {"device_id": DEVICE}, "cardnumber"),
])
def test_malformed_requests_get_invalid_request_naming_the_field(api, seed, state, path, payload, field):
    seed(number=CARD, balance="20.00")
    data = assert_error(api.post(path, json=payload), 400, "InvalidRequest")
    assert data["field"] == field
    assert state(CARD)["balance"] == "20.00"


def test_missing_token_is_unauthorized(running, seed):
    seed(number=CARD, balance="20.00")
    assert_error(httpx.post(running.base_url + "/device/card", json={"device_id": DEVICE, "cardnumber": CARD}),
                 401, "Unauthorized")


def test_wrong_answer_misstates_gc_balance(api, seed, state):
    seed(number=CARD, balance="20.00")
    response = api.post("/transaction/gift/debit", json=txn(amount="5"), headers={"X-Sim-Fault": "wrong-answer"})
    assert response.json()["gc_balance"] == "16.00"
    assert state(CARD)["balance"] == "15.00"
