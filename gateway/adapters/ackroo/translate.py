"""Pure translation between the provider port and Ackroo wire shapes, and the ONE error table."""

from __future__ import annotations

from typing import Any

import grpc

from common.errors import (
    CARD_ALREADY_ACTIVE,
    CARD_INACTIVE,
    CARD_NOT_FOUND,
    INSUFFICIENT_FUNDS,
    PROVIDER_ERROR,
    TRANSACTION_NOT_FOUND,
    TRANSACTION_NOT_REVERSIBLE,
    TRANSACTION_REVERSED,
    MeshError,
    invalid_argument,
)
from common.money import Money
from gateway.adapters.ackroo import wire
from gateway.adapters.http import (
    VendorErrorRule,
    VendorReply,
    parse_amount,
    raise_vendor_error,
    unusable_reply,
)
from gateway.ports import ACTIVE, CardId, OperationResult

VENDOR = "ackroo"
_FP = grpc.StatusCode.FAILED_PRECONDITION

# Every Ackroo error name the adapter knows (CardAlreadyActive and InsufficientFunds are the
# document's; the others the simulator's, WIRE.md). Anything else -> PROVIDER_ERROR naming it.
ERRORS: dict[str, VendorErrorRule] = {
    "InvalidRequest": VendorErrorRule(grpc.StatusCode.INVALID_ARGUMENT, PROVIDER_ERROR, "provider ackroo refused the request as invalid"),
    "Unauthorized": VendorErrorRule(grpc.StatusCode.INTERNAL, PROVIDER_ERROR, "provider ackroo refused the configured token"),
    "CardNotFound": VendorErrorRule(grpc.StatusCode.NOT_FOUND, CARD_NOT_FOUND, "card not found"),
    "TransactionNotFound": VendorErrorRule(grpc.StatusCode.NOT_FOUND, TRANSACTION_NOT_FOUND, "transaction not found"),
    "CardAlreadyActive": VendorErrorRule(_FP, CARD_ALREADY_ACTIVE, "card is already active"),
    "TransactionAlreadyReversed": VendorErrorRule(_FP, TRANSACTION_REVERSED, "transaction already reversed"),
    "InsufficientFunds": VendorErrorRule(_FP, INSUFFICIENT_FUNDS, "balance does not cover the amount"),
    "CardNotActive": VendorErrorRule(_FP, CARD_INACTIVE, "card is not active"),
    "TransactionNotReversible": VendorErrorRule(_FP, TRANSACTION_NOT_REVERSIBLE, "transaction cannot be reversed"),
}


def cardnumber(card: CardId, field: str = "card") -> str:
    if card.kind != "card_number":
        raise invalid_argument(f"{field}.{card.kind}", f"provider ackroo does not identify cards by {card.kind}")
    if not card.value.isdigit() or len(card.value) > wire.MAX_CARDNUMBER:
        raise invalid_argument(f"{field}.card_number", "ackroo card numbers are up to 32 digits")
    return card.value


def success_or_raise(operation: str, reply: VendorReply) -> dict[str, Any]:
    body = reply.json_object
    if body.get("success") is True:
        return body
    if body.get("success") is False and isinstance(body.get("error"), str):
        raise raise_vendor_error(VENDOR, operation, body["error"], ERRORS)
    raise unusable_reply(VENDOR, operation, f"HTTP {reply.status_code}, neither success nor error")


def failure_name(reply: VendorReply) -> str | None:
    body = reply.json_object
    return body.get("error") if body.get("success") is False else None


def to_result(operation: str, body: dict[str, Any], card: CardId, currency: str) -> OperationResult:
    """A success reply -> OperationResult. One we cannot read may still have moved money: outcome
    unknown, never a decline."""
    number = body.get("transaction_number")
    if not isinstance(number, str) or not number:
        raise unusable_reply(VENDOR, operation, "no transaction_number")
    try:
        amount = parse_amount(VENDOR, operation, body.get("amount"), currency)
        balance = parse_amount(VENDOR, operation, body.get("gc_balance"), currency)
    except MeshError:
        raise unusable_reply(VENDOR, operation, "bad amount") from None
    return OperationResult(provider_transaction_id=number, amount=amount, balance=balance,
                           masked_number=card.masked, status=ACTIVE)


def balance_of(body: dict[str, Any], currency: str) -> Money:
    return parse_amount(VENDOR, "balance", body.get("gc_balance"), currency)
