"""Clutch <-> mesh translation: pure functions, no I/O.

Normalized operation -> wire request, wire reply -> `OperationResult` / `BalanceInfo` /
`Allocation`, and every Clutch `errorCode` -> `MeshError` through ONE table (`ERRORS`).
Amounts are integer minor units inside the mesh and Decimal strings only here; Clutch replies
carry their `currency`, requests do not (the card's currency is Clutch's).
"""

from __future__ import annotations

import hashlib

import grpc
from pydantic import ValidationError

from common.cards import CardId, mask_number
from common.errors import (
    AMOUNT_EXCEEDS_OPEN,
    CARD_ALREADY_ACTIVE,
    CARD_INACTIVE,
    CARD_NOT_FOUND,
    HOLD_NOT_FOUND,
    HOLD_NOT_OPEN,
    IDEMPOTENCY_KEY_REUSED,
    INSUFFICIENT_FUNDS,
    INVALID_PIN,
    PROVIDER_ERROR,
    MeshError,
    invalid_argument,
)
from common.money import Money
from gateway.adapters.clutch import wire
from gateway.adapters.http import (
    VendorErrorRule,
    parse_amount,
    provider_error,
    raise_vendor_error,
    wire_amount,
)
from gateway.ports import ACTIVE, INACTIVE, Allocation, BalanceInfo, OperationResult

VENDOR = "clutch"

# Reasons this adapter adds (candidates for common/errors.py).
CARD_SET_NOT_FOUND = "CARD_SET_NOT_FOUND"

_FP, _NF, _PD = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED
# errorCode -> mesh error: exhaustive over WIRE.md; an unknown code is PROVIDER_ERROR (INTERNAL).
ERRORS: dict[str, VendorErrorRule] = {
    "InvalidRequest": VendorErrorRule(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT",
                                      "clutch refused the request as malformed"),
    "Unauthorized": VendorErrorRule(grpc.StatusCode.INTERNAL, PROVIDER_ERROR, "clutch refused the API key"),
    "Forbidden": VendorErrorRule(grpc.StatusCode.INTERNAL, PROVIDER_ERROR, "clutch refused the brand"),
    "CardNotFound": VendorErrorRule(_NF, CARD_NOT_FOUND, "card not found"),
    "HoldNotFound": VendorErrorRule(_NF, HOLD_NOT_FOUND, "hold not found"),
    "CardSetNotFound": VendorErrorRule(_NF, CARD_SET_NOT_FOUND, "card set not found"),
    "CardAlreadyActive": VendorErrorRule(_FP, CARD_ALREADY_ACTIVE, "card is already active"),
    # Clutch closes a hold at its one settlement (or $0 reversal).
    "HoldClosed": VendorErrorRule(_FP, HOLD_NOT_OPEN, "hold is already settled or reversed"),
    "RequestRefReused": VendorErrorRule(_FP, IDEMPOTENCY_KEY_REUSED,
                                        "clutch already saw this reference with a different request"),
    "CardNotActive": VendorErrorRule(_FP, CARD_INACTIVE, "card is not active"),
    "PinRequired": VendorErrorRule(_PD, INVALID_PIN, "a PIN is required for this card"),
    "InvalidPin": VendorErrorRule(_PD, INVALID_PIN, "incorrect PIN"),
    "InsufficientFunds": VendorErrorRule(_FP, INSUFFICIENT_FUNDS, "insufficient funds"),
    "AmountExceedsHold": VendorErrorRule(_FP, AMOUNT_EXCEEDS_OPEN, "amount exceeds what the hold reserves"),
}

# requestRef is at most 64 characters; mesh references up to 128 (long ones hashed, stable).
_MAX_REF = 60


def request_ref(reference_id: str, step: str = "") -> str:
    """The Clutch idempotency key of one step of a mesh operation (`step` "" for the main call).
    Stable, so a retry of the same operation replays at Clutch instead of moving money again."""
    ref = f"{reference_id}:{step}" if step else reference_id
    if len(ref) <= _MAX_REF:
        return ref
    return "h." + hashlib.sha256(ref.encode()).hexdigest()[: _MAX_REF - 2]


def _card(card: CardId) -> dict:
    if card.kind != "card_number":
        raise invalid_argument(f"card.{card.kind}", "clutch identifies cards by card_number")
    return {"card_number": card.value, "pin": card.pin or None}


# -- requests ------------------------------------------------------------------------------------

def balance(card: CardId) -> wire.BalanceRequest:
    return wire.BalanceRequest(**_card(card))


def hold(reference_id: str, card: CardId, amount: Money, step: str = "") -> wire.HoldRequest:
    return wire.HoldRequest(amount=wire_amount(amount), request_ref=request_ref(reference_id, step), **_card(card))


def settlement(reference_id: str, hold_id: str, amount: Money, step: str = "") -> wire.SettlementRequest:
    """Redeem `amount` of the hold and release the rest (Clutch closes the hold either way)."""
    return wire.SettlementRequest(hold_id=hold_id, amount=wire_amount(amount), request_ref=request_ref(reference_id, step))


def hold_reversal(reference_id: str, hold_id: str, step: str = "") -> wire.SettlementRequest:
    """Clutch's hold reversal is a settlement of 0.00: releases everything, closes the hold."""
    return wire.SettlementRequest(hold_id=hold_id, amount="0.00", request_ref=request_ref(reference_id, step))


def allocate(reference_id: str, card_set_id: str) -> wire.AllocateRequest:
    return wire.AllocateRequest(card_set_id=card_set_id, request_ref=request_ref(reference_id))


def activate(reference_id: str, card: CardId) -> wire.ActivateRequest:
    return wire.ActivateRequest(request_ref=request_ref(reference_id), **_card(card))


def issue(reference_id: str, card: CardId, amount: Money, step: str = "") -> wire.IssueRequest:
    return wire.IssueRequest(amount=wire_amount(amount), request_ref=request_ref(reference_id, step), **_card(card))


# -- replies -------------------------------------------------------------------------------------

def parse_reply(operation: str, body: object) -> wire.Reply:
    try:
        return wire.Reply.model_validate(body)
    except ValidationError:
        raise provider_error(VENDOR, operation, "malformed reply") from None


def error(reply: wire.Reply, operation: str) -> MeshError:
    """The one mapping from a Clutch error reply to the mesh's error (through `ERRORS`)."""
    vendor_code = reply.error_code or "Error"
    err = raise_vendor_error(VENDOR, operation, vendor_code, ERRORS)
    if vendor_code in ("PinRequired", "InvalidPin"):
        err.field = "card.pin"
    elif vendor_code == "InvalidRequest" and reply.field:
        err.metadata["vendor_field"] = reply.field
    return err


def _currency(reply: wire.Reply, operation: str) -> str:
    if not reply.currency:
        raise provider_error(VENDOR, operation, "reply has no currency")
    return reply.currency


def amount(reply: wire.Reply, operation: str, value: str | None) -> Money:
    return parse_amount(VENDOR, operation, value, _currency(reply, operation))


def balance_info(reply: wire.Reply, card: CardId) -> BalanceInfo:
    """`availableBalance` is the balance less Clutch's open holds: the difference is held."""
    total = amount(reply, "balance", reply.balance)
    available = amount(reply, "balance", reply.available_balance)
    return BalanceInfo(
        masked_number=card.masked, status=ACTIVE if reply.active else INACTIVE, balance=total,
        held=total - available,
    )


def hold_result(reply: wire.Reply, card: CardId) -> OperationResult:
    approved = amount(reply, "hold", reply.approved_amount)
    if not reply.hold_id:
        raise provider_error(VENDOR, "hold", "reply has no holdId")
    return OperationResult(
        provider_transaction_id=reply.transaction_id or "", amount=approved, masked_number=card.masked,
        balance=amount(reply, "hold", reply.balance), hold_id=reply.hold_id, open=approved,
    )


def settlement_result(reply: wire.Reply, card: CardId, *, released: bool = False) -> OperationResult:
    """A settlement closes the hold: nothing stays open. `released` reports the released amount
    (a hold reversal), else the redeemed one."""
    moved = amount(reply, "settlement", reply.released_amount if released else reply.redeemed_amount)
    return OperationResult(
        provider_transaction_id=reply.transaction_id or "", amount=moved, masked_number=card.masked,
        balance=amount(reply, "settlement", reply.balance), hold_id=reply.hold_id,
        open=Money(0, moved.currency),
    )


def released(reply: wire.Reply) -> Money:
    return amount(reply, "settlement", reply.released_amount)


def card_result(reply: wire.Reply, card: CardId, operation: str, moved: str | None) -> OperationResult:
    """activate (moves nothing: Clutch activates with a zero balance) and issue."""
    balance_ = amount(reply, operation, reply.balance)
    return OperationResult(
        provider_transaction_id=reply.transaction_id or "",
        amount=amount(reply, operation, moved) if moved is not None else Money(0, balance_.currency),
        masked_number=card.masked, balance=balance_,
    )


def allocation(reply: wire.Reply, currency: str) -> Allocation:
    """Allocate returns a new, inactive card (full number, PIN only for card sets with PINs);
    activate and issue follow (capabilities.issue_value)."""
    number = reply.card_number.get_secret_value() if reply.card_number else ""
    if not number.isdigit():
        raise provider_error(VENDOR, "allocate", "reply has no card number")
    return Allocation(
        result=OperationResult(
            provider_transaction_id="", amount=Money(0, currency), masked_number=mask_number(number),
            balance=Money(0, currency), status=INACTIVE,
        ),
        card_number=number, pin=reply.pin.get_secret_value() if reply.pin else "",
    )
