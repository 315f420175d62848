"""Pure translation between the provider port and Paytronix wire shapes, and the ONE error table."""

from __future__ import annotations

from typing import Any

import grpc

from common.errors import (
    CARD_ALREADY_ACTIVE,
    CARD_INACTIVE,
    CARD_NOT_FOUND,
    INSUFFICIENT_FUNDS,
    INVALID_PIN,
    PROVIDER_ERROR,
    PROVIDER_TIMEOUT,
    SAME_CARD,
    TRANSACTION_NOT_FOUND,
    TRANSACTION_NOT_REVERSIBLE,
    TRANSACTION_REVERSED,
    MeshError,
    invalid_argument,
)
from common.money import Money
from gateway.adapters.http import (
    VendorErrorRule,
    unusable_reply,
    VendorReply,
    parse_amount,
    raise_vendor_error,
    wire_amount,
)
from gateway.adapters.paytronix import wire
from gateway.ports import ACTIVE, CardId, OperationResult

VENDOR = "paytronix"

# CardId.kind -> cardInfo field. proxy_number has no Paytronix equivalent.
CARD_FIELDS = {
    "card_number": "printedCardNumber",
    "track_data": "trackInfo",
    "barcode": "barcode",
    "phone_number": "phoneNumber",
    "account_token": "accountToken",
}

_FP = grpc.StatusCode.FAILED_PRECONDITION
# Every Paytronix errorCode the adapter knows (the page documents none: these are the simulator's,
# WIRE.md, to verify with Paytronix). Anything else -> PROVIDER_ERROR naming the code.
ERRORS: dict[str, VendorErrorRule] = {
    "auth.failed": VendorErrorRule(grpc.StatusCode.INTERNAL, PROVIDER_ERROR, "provider paytronix refused the configured credentials"),
    "auth.merchant_not_authorized": VendorErrorRule(grpc.StatusCode.INTERNAL, PROVIDER_ERROR, "provider paytronix refused the configured merchantId"),
    "request.invalid": VendorErrorRule(grpc.StatusCode.INVALID_ARGUMENT, PROVIDER_ERROR, "provider paytronix refused the request as invalid"),
    "gift.card_not_found": VendorErrorRule(grpc.StatusCode.NOT_FOUND, CARD_NOT_FOUND, "card not found"),
    "gift.card_not_active": VendorErrorRule(_FP, CARD_INACTIVE, "card is not active"),
    "gift.card_deactivated": VendorErrorRule(_FP, CARD_INACTIVE, "card is deactivated"),
    "gift.card_already_active": VendorErrorRule(_FP, CARD_ALREADY_ACTIVE, "card is already active"),
    "gift.invalid_registration_code": VendorErrorRule(grpc.StatusCode.PERMISSION_DENIED, INVALID_PIN, "PIN does not match the card"),
    "gift.insufficient_balance": VendorErrorRule(_FP, INSUFFICIENT_FUNDS, "balance does not cover the amount"),
    "gift.same_card": VendorErrorRule(grpc.StatusCode.INVALID_ARGUMENT, SAME_CARD, "exchange needs two different cards"),
    "transaction.not_found": VendorErrorRule(grpc.StatusCode.NOT_FOUND, TRANSACTION_NOT_FOUND, "transaction not found"),
    "transaction.already_reversed": VendorErrorRule(_FP, TRANSACTION_REVERSED, "transaction already reversed"),
    "transaction.not_reversible": VendorErrorRule(_FP, TRANSACTION_NOT_REVERSIBLE, "transaction cannot be reversed"),
    # A new request reusing our reference: the original was applied and its reply lost. The
    # provider answers it from its journal (provider.py); only without a journal entry (an
    # in-memory journal after a restart) does it get here: outcome unknown, not a refusal.
    "transaction.duplicate_external_id": VendorErrorRule(
        grpc.StatusCode.UNAVAILABLE, PROVIDER_TIMEOUT, "an earlier attempt of this operation reached paytronix; outcome unknown",
        retryable=True, outcome_unknown=True),
    # Late arrival after a reversal by reference: nothing moved and nothing ever will.
    "transaction.reversed": VendorErrorRule(_FP, TRANSACTION_REVERSED, "operation was reversed before it arrived"),
    "system.error": VendorErrorRule(grpc.StatusCode.INTERNAL, PROVIDER_ERROR, "provider paytronix could not process the transaction"),
}


def card_info(card: CardId, field: str = "card") -> wire.CardInfo:
    name = CARD_FIELDS.get(card.kind)
    if name is None:
        raise invalid_argument(f"{field}.{card.kind}", f"provider paytronix does not identify cards by {card.kind}")
    info: wire.CardInfo = {name: card.value}  # type: ignore[misc]
    if card.pin:
        info["cardRegCode"] = card.pin
    return info


def common(merchant_id: int, store_code: str, pos: dict[str, str]) -> dict[str, Any]:
    return {"merchantId": merchant_id, "storeCode": store_code, **pos}


def external_id(reference_id: str) -> str:
    if not reference_id or len(reference_id) > wire.MAX_EXTERNAL_ID:
        raise invalid_argument("reference_id", f"paytronix externalTransactionId is 1-{wire.MAX_EXTERNAL_ID} characters")
    return reference_id


def amount_fields(amount: Money, tip: Money | None = None) -> dict[str, str]:
    fields = {"amount": wire_amount(amount)}
    if tip is not None and tip.amount_minor > 0:
        fields["tip"] = wire_amount(tip)
    return fields


def success_or_raise(operation: str, reply: VendorReply) -> dict[str, Any]:
    """The Success body, or the mapped MeshError for a Failure / unusable reply."""
    body = reply.json_object
    if body.get("result") == "success":
        return body
    if body.get("result") == "failure" and isinstance(body.get("errorCode"), str):
        raise raise_vendor_error(VENDOR, operation, body["errorCode"], ERRORS)
    raise unusable_reply(VENDOR, operation, f"HTTP {reply.status_code}, neither Success nor Failure")


def failure_code(reply: VendorReply) -> str | None:
    body = reply.json_object
    return body.get("errorCode") if body.get("result") == "failure" else None


def to_result(operation: str, body: dict[str, Any], card: CardId, currency: str, *, status: str = ACTIVE) -> OperationResult:
    """A Success -> OperationResult. `amount` is transactionAmount (what moved; 0 for inquiries).
    A Success we cannot read may still have moved money: outcome unknown, never a decline."""
    px_id = body.get("pxTransactionId")
    if not isinstance(px_id, int) or isinstance(px_id, bool):
        raise unusable_reply(VENDOR, operation, "no pxTransactionId")
    moved = body.get("transactionAmount")
    try:
        amount = parse_amount(VENDOR, operation, moved, currency) if moved is not None else Money(0, currency)
        balance = parse_amount(VENDOR, operation, body.get("currentBalance"), currency)
    except MeshError:
        raise unusable_reply(VENDOR, operation, "bad amount") from None
    return OperationResult(
        provider_transaction_id=str(px_id), amount=amount, balance=balance, masked_number=card.masked, status=status,
    )


