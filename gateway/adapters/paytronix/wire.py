"""Paytronix gift service wire shapes (shared/seeds Paytronix "Gift Service" page; WIRE.md of the
simulator lists what the page leaves open). Field names exactly as Paytronix spells them.

Requests are POST JSON to `{base_url}/gift/<endpoint>.json`; Decimals are sent as strings with the
currency's exponent ("10.50"). Replies are either Success or Failure, told apart by `result`
(business refusals come back as HTTP 200 + Failure).
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

# Endpoint per operation (the page's names; its prose for balance/redeem is swapped, names trusted).
SELL, RELOAD, BALANCE, REDEEM = "/gift/sell.json", "/gift/reload.json", "/gift/balance.json", "/gift/redeem.json"
REVERSE, CASH_OUT, EXCHANGE = "/gift/reverse.json", "/gift/cashOut.json", "/gift/exchange.json"

# Limits stated by the page.
MAX_EXTERNAL_ID = 128
MAX_CASHIER = 100
MAX_TERMINAL = 100
MAX_CHECK = 255


class CardInfo(TypedDict, total=False):
    printedCardNumber: str
    trackInfo: str
    barcode: str
    phoneNumber: str
    appleNfcVasPayload: str
    googleNfcVasPayload: str
    accountToken: str
    cardRegCode: str  # acts as a PIN: checked only when sent


class Common(TypedDict):
    merchantId: int
    storeCode: str
    checkNumber: NotRequired[str]
    cashier: NotRequired[str]
    terminalId: NotRequired[str]


class CardRequest(Common):
    """sell / reload / redeem / cashOut / balance (balance: no amount, no externalTransactionId)."""

    cardInfo: CardInfo
    amount: NotRequired[str]
    tip: NotRequired[str]
    externalTransactionId: NotRequired[str]


class ReverseRequest(Common):
    pxTransactionId: NotRequired[int]  # a Long: kept as a Python int, never 32-bit
    externalTransactionId: NotRequired[str]


class ExchangeRequest(Common):
    cardInfo: CardInfo
    newCardInfo: CardInfo


class Success(TypedDict):
    result: Literal["success"]
    pxTransactionId: int
    pxAuthCode: str
    currentBalance: str
    previousBalance: NotRequired[str]
    transactionAmount: NotRequired[str]
    printedCardNumber: str  # the full number: never logged, never returned to callers
    maskedCardNumber: str


class Failure(TypedDict):
    result: Literal["failure"]
    errorCode: str
    errorMessage: str
