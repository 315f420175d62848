"""SmartClixx <-> mesh translation: pure functions, no I/O.

Normalized operation -> wire request, wire reply -> `OperationResult` / `BalanceInfo` /
`Allocation`, and every SmartClixx `errorCode` -> `MeshError` through ONE table (`ERRORS`).
Amounts are integer minor units inside the mesh and Decimal strings only here. No currency travels
on SmartClixx's wire: the profile's `options.currency` (default USD) is the program's currency.

The card's secret for SmartClixx is its CVV2 (e-cards); the mesh carries it in `CardRef.pin`
(as the fulfillment service does for CVV2 programs), so `CardId.pin` is sent as `cvv2`.
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
from gateway.adapters.http import (
    VendorErrorRule,
    parse_amount,
    provider_error,
    raise_vendor_error,
    wire_amount,
)
from gateway.adapters.smartclixx import wire
from gateway.ports import ACTIVE, INACTIVE, Allocation, BalanceInfo, OperationResult

VENDOR = "smartclixx"

_FP, _NF, _PD = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED
# errorCode -> mesh error: exhaustive over WIRE.md; an unknown code is PROVIDER_ERROR (INTERNAL).
ERRORS: dict[str, VendorErrorRule] = {
    # status ERROR
    "INVALID_REQUEST": VendorErrorRule(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT",
                                       "smartclixx refused the request as malformed"),
    "UNAUTHORIZED": VendorErrorRule(grpc.StatusCode.INTERNAL, PROVIDER_ERROR, "smartclixx refused the API key"),
    "REQUEST_ID_REUSED": VendorErrorRule(_FP, IDEMPOTENCY_KEY_REUSED,
                                         "smartclixx already saw this request id with a different request"),
    # status DECLINED
    "CARD_NOT_FOUND": VendorErrorRule(_NF, CARD_NOT_FOUND, "card not found"),
    "AUTHORIZATION_NOT_FOUND": VendorErrorRule(_NF, HOLD_NOT_FOUND, "authorization not found"),
    "CARD_ALREADY_ACTIVE": VendorErrorRule(_FP, CARD_ALREADY_ACTIVE, "card is already active"),
    "AUTHORIZATION_CLOSED": VendorErrorRule(_FP, HOLD_NOT_OPEN, "authorization is fully settled or reversed"),
    "CARD_NOT_ACTIVE": VendorErrorRule(_FP, CARD_INACTIVE, "card is not active"),
    "CVV2_REQUIRED": VendorErrorRule(_PD, INVALID_PIN, "a CVV2 is required for this card"),
    "INVALID_CVV2": VendorErrorRule(_PD, INVALID_PIN, "incorrect CVV2"),
    "INSUFFICIENT_FUNDS": VendorErrorRule(_FP, INSUFFICIENT_FUNDS, "insufficient funds"),
    "AMOUNT_EXCEEDS_AUTHORIZATION": VendorErrorRule(_FP, AMOUNT_EXCEEDS_OPEN,
                                                    "amount exceeds what is left on the authorization"),
}

_MAX_ID = 60


def request_id(reference_id: str, step: str = "") -> str:
    """SmartClixx's idempotency key for one step of a mesh operation: stable, so a retry replays."""
    rid = f"{reference_id}:{step}" if step else reference_id
    if len(rid) <= _MAX_ID:
        return rid
    return "h." + hashlib.sha256(rid.encode()).hexdigest()[: _MAX_ID - 2]


def _card(card: CardId) -> dict:
    if card.kind != "card_number":
        raise invalid_argument(f"card.{card.kind}", "smartclixx identifies cards by card_number")
    return {"card_number": card.value, "cvv2": card.pin or None}


# -- requests ------------------------------------------------------------------------------------

def retrieve_ecard(reference_id: str, program_id: str) -> wire.RetrieveECardRequest:
    return wire.RetrieveECardRequest(request_id=request_id(reference_id), program_id=program_id or None)


def activate(reference_id: str, card: CardId, amount: Money) -> wire.ActivateRequest:
    return wire.ActivateRequest(request_id=request_id(reference_id), amount=wire_amount(amount), **_card(card))


def balance(card: CardId) -> wire.BalanceRequest:
    return wire.BalanceRequest(**_card(card))


def authorize(reference_id: str, card: CardId, amount: Money, step: str = "") -> wire.AuthorizeRequest:
    return wire.AuthorizeRequest(request_id=request_id(reference_id, step), amount=wire_amount(amount), **_card(card))


def settle(reference_id: str, authorization_id: str, amount: Money, step: str = "") -> wire.SettleRequest:
    return wire.SettleRequest(
        request_id=request_id(reference_id, step), authorization_id=authorization_id, amount=wire_amount(amount),
    )


def reverse_authorization(
    reference_id: str, authorization_id: str, amount: Money | None, step: str = ""
) -> wire.ReverseAuthorizationRequest:
    """`amount` None releases everything left on the authorization."""
    return wire.ReverseAuthorizationRequest(
        request_id=request_id(reference_id, step), authorization_id=authorization_id,
        amount=wire_amount(amount) if amount is not None else None,
    )


# -- replies -------------------------------------------------------------------------------------

def parse_reply(operation: str, body: object) -> wire.Reply:
    try:
        return wire.Reply.model_validate(body)
    except ValidationError:
        raise provider_error(VENDOR, operation, "malformed reply") from None


def error(reply: wire.Reply, operation: str) -> MeshError:
    """The one mapping from a SmartClixx DECLINED / ERROR reply to the mesh's error."""
    vendor_code = reply.error_code or "ERROR"
    err = raise_vendor_error(VENDOR, operation, vendor_code, ERRORS)
    if vendor_code in ("CVV2_REQUIRED", "INVALID_CVV2"):
        err.field = "card.pin"
    elif vendor_code == "INVALID_REQUEST" and reply.field:
        err.metadata["vendor_field"] = reply.field
    return err


def amount(operation: str, value: str | None, currency: str) -> Money:
    return parse_amount(VENDOR, operation, value, currency)


def balance_info(reply: wire.Reply, card: CardId, currency: str) -> BalanceInfo:
    total = amount("balance", reply.balance, currency)
    available = amount("balance", reply.available_balance, currency)
    return BalanceInfo(
        masked_number=card.masked, status=ACTIVE if reply.active else INACTIVE, balance=total,
        held=total - available,
    )


def authorization_result(reply: wire.Reply, card: CardId, currency: str) -> OperationResult:
    if not reply.authorization_id:
        raise provider_error(VENDOR, "authorize", "reply has no authorizationId")
    return OperationResult(
        provider_transaction_id=reply.authorization_id, amount=amount("authorize", reply.approved_amount, currency),
        masked_number=card.masked, balance=amount("authorize", reply.balance, currency),
        hold_id=reply.authorization_id, open=amount("authorize", reply.authorization_remaining, currency),
    )


def settlement_result(reply: wire.Reply, card: CardId, currency: str) -> OperationResult:
    return OperationResult(
        provider_transaction_id=reply.settlement_id or "", amount=amount("settle", reply.settled_amount, currency),
        masked_number=card.masked, balance=amount("settle", reply.balance, currency),
        hold_id=reply.authorization_id, open=amount("settle", reply.authorization_remaining, currency),
    )


def reversal_result(reply: wire.Reply, card: CardId, currency: str) -> OperationResult:
    return OperationResult(
        provider_transaction_id=reply.reversal_id or "",
        amount=amount("reverse_authorization", reply.reversed_amount, currency), masked_number=card.masked,
        balance=amount("reverse_authorization", reply.balance, currency), hold_id=reply.authorization_id,
        open=amount("reverse_authorization", reply.authorization_remaining, currency),
    )


def activation_result(reply: wire.Reply, card: CardId, currency: str) -> OperationResult:
    return OperationResult(
        provider_transaction_id=reply.transaction_id or "",
        amount=amount("activate", reply.activated_amount, currency), masked_number=card.masked,
        balance=amount("activate", reply.balance, currency),
    )


def allocation(reply: wire.Reply, currency: str) -> Allocation:
    """E-card retrieval: a new inactive card with its number and CVV2; activate loads it."""
    number = reply.card_number.get_secret_value() if reply.card_number else ""
    cvv2 = reply.cvv2.get_secret_value() if reply.cvv2 else ""
    if not number.isdigit() or not cvv2:
        raise provider_error(VENDOR, "retrieve_ecard", "reply has no card number or CVV2")
    return Allocation(
        result=OperationResult(
            provider_transaction_id="", amount=Money(0, currency), masked_number=mask_number(number),
            balance=Money(0, currency), status=INACTIVE,
        ),
        card_number=number, cvv2=cvv2,
    )
