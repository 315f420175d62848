"""Paytronix sandbox over real HTTP: every gift/*.json endpoint, Failure shapes, reversal rules."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

VENDOR = "paytronix"
CREDENTIALS = {"auth": ("paytronix-sim", "paytronix-sim-secret")}

CARD = "6035710000000001"
NEW_CARD = "6035710000000002"
BASE = {"merchantId": 1, "storeCode": "STORE-1"}


def body(**fields: Any) -> dict[str, Any]:
    return {**BASE, **fields}


def card_info(number: str = CARD, **extra: Any) -> dict[str, Any]:
    return {"printedCardNumber": number, **extra}


def post(api: httpx.Client, op: str, payload: dict[str, Any]) -> httpx.Response:
    return api.post(f"/gift/{op}.json", json=payload)


def assert_failure(response: httpx.Response, code: str, status: int = 200) -> None:
    assert response.status_code == status, response.text
    data = response.json()
    assert set(data) == {"result", "errorCode", "errorMessage"}
    assert data["result"] == "failure"
    assert data["errorCode"] == code
    assert isinstance(data["errorMessage"], str) and data["errorMessage"]


def assert_success_shape(data: dict[str, Any]) -> None:
    assert data["result"] == "success"
    assert isinstance(data["pxTransactionId"], int) and data["pxTransactionId"] > 2**32
    assert len(data["pxAuthCode"]) == 6 and data["pxAuthCode"].isdigit()
    assert isinstance(data["cardTemplateCode"], int) and isinstance(data["tierCode"], int)
    assert isinstance(data["cardTemplateName"], str) and isinstance(data["tierName"], str)
    assert data["posMessages"] == []
    assert data["maskedCardNumber"].endswith(data["printedCardNumber"][-4:])
    assert data["printedCardNumber"][6:-4] not in data["maskedCardNumber"]


# ------------------------------------------------------------------ success paths

def test_sell_activates_an_inactive_card_and_adds_the_amount(api, seed, state):
    seed(number=CARD, status="inactive")
    response = post(api, "sell", body(cardInfo=card_info(), amount="10.00", externalTransactionId="ext-1"))
    assert response.status_code == 200
    data = response.json()
    assert_success_shape(data)
    assert (data["previousBalance"], data["transactionAmount"], data["currentBalance"]) == ("0.00", "10.00", "10.00")
    assert data["printedCardNumber"] == CARD
    assert state(CARD)["status"] == "active"


def test_sell_on_an_active_card_is_refused_and_loads_nothing(api, seed, state):
    seed(number=CARD, balance="5.00")
    assert_failure(post(api, "sell", body(cardInfo=card_info(), amount="10.00")), "gift.card_already_active")
    assert state(CARD)["balance"] == "5.00"


def test_reload_adds_value_to_an_active_card(api, seed):
    seed(number=CARD, balance="5.00")
    data = post(api, "reload", body(cardInfo=card_info(), amount=12.5)).json()  # JSON number: Decimal
    assert (data["previousBalance"], data["transactionAmount"], data["currentBalance"]) == ("5.00", "12.50", "17.50")


def test_reload_of_an_inactive_card_is_refused(api, seed):
    seed(number=CARD, status="inactive")
    assert_failure(post(api, "reload", body(cardInfo=card_info(), amount="1.00")), "gift.card_not_active")


def test_balance_reports_the_balance_without_change_fields(api, seed):
    seed(number=CARD, balance="25.00")
    data = post(api, "balance", body(cardInfo=card_info(), cashier="c-1", terminalId="t-1")).json()
    assert_success_shape(data)
    assert data["currentBalance"] == "25.00"
    assert "previousBalance" not in data and "transactionAmount" not in data


@pytest.mark.parametrize("identifier", [
    {"barcode": "BC-0001"}, {"phoneNumber": "+15555550100"}, {"accountToken": "tok-1"},
    {"trackInfo": CARD + "=2912101"}, {"appleNfcVasPayload": "QUJDRA=="},
])
def test_card_can_be_identified_by_any_documented_identifier(api, seed, identifier):
    seed(number=CARD, balance="7.00", aliases={"barcode": "BC-0001", "phoneNumber": "+15555550100",
                                                "accountToken": "tok-1", "appleNfcVasPayload": "QUJDRA=="})
    data = post(api, "balance", body(cardInfo=identifier)).json()
    assert data["result"] == "success" and data["printedCardNumber"] == CARD


def test_redeem_takes_amount_plus_tip(api, seed, state):
    seed(number=CARD, balance="25.00")
    data = post(api, "redeem", body(cardInfo=card_info(), amount="10.00", tip="1.50")).json()
    assert (data["previousBalance"], data["transactionAmount"], data["currentBalance"]) == ("25.00", "11.50", "13.50")
    assert state(CARD)["balance"] == "13.50"


def test_redeem_more_than_the_balance_is_refused_and_takes_nothing(api, seed, state):
    seed(number=CARD, balance="25.00")
    assert_failure(post(api, "redeem", body(cardInfo=card_info(), amount="25.00", tip="0.01")),
                   "gift.insufficient_balance")
    assert state(CARD)["balance"] == "25.00"


def test_registration_code_is_checked_only_when_sent(api, seed):
    seed(number=CARD, balance="25.00", pin="4321")
    ok = post(api, "balance", body(cardInfo=card_info(cardRegCode=None))).json()
    assert ok["result"] == "success"
    assert post(api, "balance", body(cardInfo=card_info(cardRegCode="4321"))).json()["result"] == "success"
    assert_failure(post(api, "balance", body(cardInfo=card_info(cardRegCode="0000"))),
                   "gift.invalid_registration_code")


def test_cash_out_empties_the_card_and_leaves_it_active(api, seed, state):
    seed(number=CARD, balance="18.25")
    data = post(api, "cashOut", body(cardInfo=card_info(), externalTransactionId="co-1")).json()
    assert (data["previousBalance"], data["transactionAmount"], data["currentBalance"]) == ("18.25", "18.25", "0.00")
    assert state(CARD)["status"] == "active"


def test_exchange_moves_the_balance_to_the_inactive_card_and_closes_the_old_one(api, seed, state):
    seed(number=CARD, balance="30.00")
    seed(number=NEW_CARD, status="inactive")
    data = post(api, "exchange", body(cardInfo=card_info(), newCardInfo=card_info(NEW_CARD))).json()
    assert data["result"] == "success"
    assert data["printedCardNumber"] == NEW_CARD and data["currentBalance"] == "30.00"
    assert (state(CARD)["status"], state(CARD)["balance"]) == ("closed", "0.00")
    assert (state(NEW_CARD)["status"], state(NEW_CARD)["balance"]) == ("active", "30.00")
    assert_failure(post(api, "balance", body(cardInfo=card_info())), "gift.card_deactivated")


def test_exchange_onto_an_active_card_is_refused(api, seed, state):
    seed(number=CARD, balance="30.00")
    seed(number=NEW_CARD, balance="1.00")
    assert_failure(post(api, "exchange", body(cardInfo=card_info(), newCardInfo=card_info(NEW_CARD))),
                   "gift.card_already_active")
    assert state(CARD)["balance"] == "30.00"


# ---------------------------------------------------------------------- reversal

def test_reverse_by_px_transaction_id_restores_the_balance_once(api, seed, state):
    seed(number=CARD, balance="25.00")
    redeemed = post(api, "redeem", body(cardInfo=card_info(), amount="10.00")).json()
    reverse = body(pxTransactionId=redeemed["pxTransactionId"])
    data = post(api, "reverse", reverse).json()
    assert data["result"] == "success"
    assert (data["previousBalance"], data["transactionAmount"], data["currentBalance"]) == ("15.00", "10.00", "25.00")
    assert_failure(post(api, "reverse", reverse), "transaction.already_reversed")
    assert state(CARD)["balance"] == "25.00"


def test_reverse_of_a_timed_out_redeem_by_external_transaction_id(api, seed, state):
    seed(number=CARD, balance="25.00")
    with pytest.raises(httpx.ReadTimeout):
        api.post("/gift/redeem.json", json=body(cardInfo=card_info(), amount="10.00", externalTransactionId="t-1"),
                 headers={"X-Sim-Fault": "timeout-after"}, timeout=0.3)
    assert state(CARD)["balance"] == "15.00"  # applied even though the caller never heard back
    data = post(api, "reverse", body(externalTransactionId="t-1")).json()
    assert data["result"] == "success" and data["currentBalance"] == "25.00"
    assert state(CARD)["balance"] == "25.00"


def test_reverse_of_an_unknown_external_id_blocks_a_late_arrival(api, seed, state):
    seed(number=CARD, balance="25.00")
    assert_failure(post(api, "reverse", body(externalTransactionId="never-seen")), "transaction.not_found")
    late = post(api, "redeem", body(cardInfo=card_info(), amount="10.00", externalTransactionId="never-seen"))
    assert_failure(late, "transaction.reversed")
    assert state(CARD)["balance"] == "25.00"


def test_external_transaction_id_cannot_be_reused(api, seed, state):
    seed(number=CARD, balance="25.00")
    first = post(api, "redeem", body(cardInfo=card_info(), amount="1.00", externalTransactionId="x"))
    assert first.json()["result"] == "success"
    assert_failure(post(api, "redeem", body(cardInfo=card_info(), amount="1.00", externalTransactionId="x")),
                   "transaction.duplicate_external_id")
    assert state(CARD)["balance"] == "24.00"


def test_reverse_of_sell_deactivates_the_card_again(api, seed, state):
    seed(number=CARD, status="inactive")
    sold = post(api, "sell", body(cardInfo=card_info(), amount="10.00")).json()
    assert post(api, "reverse", body(pxTransactionId=sold["pxTransactionId"])).json()["currentBalance"] == "0.00"
    assert state(CARD)["status"] == "inactive"


def test_balance_inquiry_cannot_be_reversed(api, seed):
    seed(number=CARD, balance="5.00")
    inquiry = post(api, "balance", body(cardInfo=card_info())).json()
    assert_failure(post(api, "reverse", body(pxTransactionId=inquiry["pxTransactionId"])),
                   "transaction.not_reversible")


def test_reverse_of_a_spent_reload_is_refused(api, seed, state):
    seed(number=CARD, balance="0.00")
    loaded = post(api, "reload", body(cardInfo=card_info(), amount="10.00")).json()
    post(api, "redeem", body(cardInfo=card_info(), amount="5.00"))
    assert_failure(post(api, "reverse", body(pxTransactionId=loaded["pxTransactionId"])), "gift.insufficient_balance")
    assert state(CARD)["balance"] == "5.00"


def test_reverse_needs_one_of_the_two_ids(api):
    assert_failure(post(api, "reverse", body()), "request.invalid", 400)


# -------------------------------------------------------------------- validation

@pytest.mark.parametrize("payload, field", [
    ({"storeCode": "S", "cardInfo": {"printedCardNumber": CARD}, "amount": "1.00"}, "merchantId"),
    (body(merchantId="1", cardInfo=card_info(), amount="1.00"), "merchantId"),
    (body(merchantId=True, cardInfo=card_info(), amount="1.00"), "merchantId"),
    (body(cardInfo=card_info()), "amount"),
    (body(cardInfo=card_info(), amount="1.001"), "amount"),
    (body(cardInfo=card_info(), amount="-1.00"), "amount"),
    (body(cardInfo=card_info(), amount="0"), "amount"),
    (body(cardInfo=card_info(), amount="1e3"), "amount"),
    (body(cardInfo=card_info(), amount=1.005), "amount"),
    (body(cardInfo=card_info(), amount="1.00", checkNumber="c" * 256), "checkNumber"),
    (body(cardInfo=card_info(), amount="1.00", cashier="c" * 101), "cashier"),
    (body(cardInfo=card_info(), amount="1.00", terminalId="t" * 101), "terminalId"),
    (body(cardInfo=card_info(), amount="1.00", externalTransactionId="e" * 129), "externalTransactionId"),
    (body(cardInfo=card_info(), amount="1.00", tip="-0.01"), "tip"),
    (body(cardInfo={}, amount="1.00"), "cardInfo"),
    (body(cardInfo={"printedCardNumber": CARD, "barcode": "B"}, amount="1.00"), "cardInfo"),
    (body(cardInfo={"cardNumber": CARD}, amount="1.00"), "cardInfo.cardNumber"),
    (body(cardInfo=card_info(), amount="1.00", pin="1234"), "pin"),
    ({"merchantId": 1, "cardInfo": card_info(), "amount": "1.00"}, "storeCode"),
])
def test_malformed_redeem_gets_a_failure_naming_the_field(api, seed, state, payload, field):
    seed(number=CARD, balance="25.00")
    response = post(api, "redeem", payload)
    assert_failure(response, "request.invalid", 400)
    assert response.json()["errorMessage"].startswith(field + " ")
    assert state(CARD)["balance"] == "25.00"


def test_fields_at_their_documented_maximum_length_are_accepted(api, seed):
    seed(number=CARD, balance="25.00")
    response = post(api, "redeem", body(cardInfo=card_info(), amount="1.00", checkNumber="c" * 255,
                                        cashier="c" * 100, terminalId="t" * 100, externalTransactionId="e" * 128))
    assert response.json()["result"] == "success"


def test_balance_does_not_take_an_amount_or_external_id(api, seed):
    seed(number=CARD, balance="25.00")
    assert_failure(post(api, "balance", body(cardInfo=card_info(), amount="1.00")), "request.invalid", 400)
    assert_failure(post(api, "balance", body(cardInfo=card_info(), externalTransactionId="e")), "request.invalid", 400)


def test_non_json_body_is_refused_in_the_failure_shape(api):
    response = api.post("/gift/balance.json", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_failure(response, "request.invalid", 400)
    assert_failure(api.post("/gift/balance.json", content=b"{}", headers={"Content-Type": "text/plain"}),
                   "request.invalid", 400)


def test_unknown_card_is_refused(api):
    assert_failure(post(api, "balance", body(cardInfo=card_info("6035719999999999"))), "gift.card_not_found")


# ---------------------------------------------------------------------------- auth

def test_missing_or_wrong_credentials_are_refused(running, seed):
    seed(number=CARD, balance="25.00")
    payload = body(cardInfo=card_info())
    assert_failure(httpx.post(running.base_url + "/gift/balance.json", json=payload), "auth.failed", 401)
    assert_failure(httpx.post(running.base_url + "/gift/balance.json", json=payload, auth=("paytronix-sim", "x")),
                   "auth.failed", 401)


def test_other_merchant_id_is_refused(api, seed):
    seed(number=CARD, balance="25.00")
    assert_failure(post(api, "balance", body(merchantId=2, cardInfo=card_info())),
                   "auth.merchant_not_authorized", 403)


def test_wrong_answer_misstates_the_balance_but_not_the_ledger(api, seed, state):
    seed(number=CARD, balance="25.00")
    response = api.post("/gift/balance.json", json=body(cardInfo=card_info()), headers={"X-Sim-Fault": "wrong-answer"})
    assert response.json()["currentBalance"] == "26.00"
    assert state(CARD)["balance"] == "25.00"


def test_concurrent_reversals_of_one_transaction_succeed_exactly_once(api, seed, state):
    from concurrent.futures import ThreadPoolExecutor

    seed(number=CARD, balance="25.00")
    redeemed = post(api, "redeem", body(cardInfo=card_info(), amount="10.00")).json()
    reverse = body(pxTransactionId=redeemed["pxTransactionId"])
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: post(api, "reverse", reverse).json(), range(8)))
    assert [r["result"] for r in results].count("success") == 1
    assert {r["errorCode"] for r in results if r["result"] == "failure"} == {"transaction.already_reversed"}
    assert state(CARD)["balance"] == "25.00"
