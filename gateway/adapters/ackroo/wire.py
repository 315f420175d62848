"""Ackroo gift API wire shapes (shared/seeds "Gift Card Integration Use Cases"; the simulator's
WIRE.md lists the response shapes, which the document does not give).

Requests: POST JSON, `amount` a decimal string ("10" / "10.50"), every listed field required.
Replies: `{"success": true, "transaction_number", "cardnumber" (masked), "amount", "gc_balance"}`
or `{"success": false, "error": "<Name>", "message"}`.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

CARD = "/device/card"
ISSUE = "/transaction/gift/issue"
DEBIT = "/transaction/gift/debit"
DEBIT_PARTIAL = "/transaction/gift/debit/partial"
CREDIT = "/transaction/gift/credit"
REFUND = "/transaction/gift/refund"
DEBIT_CASH = "/transaction/gift/debit/cash"
REVERSAL = "/transaction/reversal"

MAX_CARDNUMBER = 32
MAX_DEVICE_ID = 64
MAX_CLERK_ID = 100


class CardRequest(TypedDict):
    device_id: str
    cardnumber: str  # digits; never logged


class AmountRequest(CardRequest):
    amount: str
    clerk_id: str


class CashRequest(CardRequest):
    clerk_id: str


class ReversalRequest(TypedDict):
    device_id: str
    transaction_number: str


class Success(TypedDict):
    success: bool
    transaction_number: NotRequired[str]
    cardnumber: str
    amount: NotRequired[str]
    gc_balance: str
    active: NotRequired[bool]
    requested_amount: NotRequired[str]
    reversed_transaction_number: NotRequired[str]


class Failure(TypedDict):
    success: bool
    error: str
    message: str
