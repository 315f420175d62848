"""Radial <-> mesh translation: pure functions, no I/O.

Normalized operation -> wire request, wire reply -> `OperationResult` / `BalanceInfo` /
`Allocation`, and every Radial `ErrorCode` -> `MeshError` through ONE mapping (`ERRORS`).
Amounts are integer minor units inside the mesh and Decimal strings only here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import grpc
from pydantic import ValidationError

from common.cards import CardId, mask_number
from common.errors import (
    CARD_ALREADY_ACTIVE,
    CARD_INACTIVE,
    CARD_NOT_FOUND,
    CURRENCY_MISMATCH,
    INSUFFICIENT_FUNDS,
    INVALID_PIN,
    PROVIDER_ERROR,
    PROVIDER_TIMEOUT,
    TRANSACTION_NOT_FOUND,
    TRANSACTION_REVERSED,
    MeshError,
    invalid_argument,
)
from common.money import Money, format_decimal
from gateway.adapters.http import VendorErrorRule, parse_amount, provider_error, raise_vendor_error
from gateway.adapters.radial import wire
from gateway.ports import ACTIVE, DEACTIVATED, INACTIVE, Allocation, BalanceInfo, OperationResult

VENDOR = "radial"

# Reasons this adapter adds (candidates for common/errors.py).
PROMO_CODE_REQUIRED = "PROMO_CODE_REQUIRED"
INVALID_PROMO_CODE = "INVALID_PROMO_CODE"
# Radial already holds this RequestId: an earlier attempt reached it and its outcome is not known here.
PROVIDER_OUTCOME_UNKNOWN = "PROVIDER_OUTCOME_UNKNOWN"

_FP, _NF, _PD = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED
# ErrorCode -> mesh error: exhaustive over WIRE.md; an unknown code is PROVIDER_ERROR (INTERNAL).
# Messages are ours, never the vendor's text (which is not ours to vouch for).
ERRORS: dict[str, VendorErrorRule] = {
    # Our request broke Radial's rules: a bug or a mesh input Radial is stricter about (PIN length).
    "InvalidRequest": VendorErrorRule(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT",
                                      "radial refused the request as malformed"),
    "Unauthorized": VendorErrorRule(grpc.StatusCode.INTERNAL, PROVIDER_ERROR, "radial refused the apiKey"),
    "StoreNotFound": VendorErrorRule(grpc.StatusCode.INTERNAL, PROVIDER_ERROR, "radial does not know the store id"),
    "CardNotFound": VendorErrorRule(_NF, CARD_NOT_FOUND, "card not found"),
    "CardNotActive": VendorErrorRule(_FP, CARD_INACTIVE, "card is not active"),
    "CardDeactivated": VendorErrorRule(_FP, CARD_INACTIVE, "card is deactivated"),
    "CardAlreadyActive": VendorErrorRule(_FP, CARD_ALREADY_ACTIVE, "card is already active"),
    "PinRequired": VendorErrorRule(_PD, INVALID_PIN, "a PIN is required for this card"),
    "InvalidPin": VendorErrorRule(_PD, INVALID_PIN, "incorrect PIN"),
    "InsufficientFunds": VendorErrorRule(_FP, INSUFFICIENT_FUNDS, "insufficient funds"),
    "CurrencyMismatch": VendorErrorRule(_FP, CURRENCY_MISMATCH, "currency does not match the card's"),
    "PromoCodeRequired": VendorErrorRule(grpc.StatusCode.INVALID_ARGUMENT, PROMO_CODE_REQUIRED,
                                         "this store requires a promo code"),
    "InvalidPromoCode": VendorErrorRule(grpc.StatusCode.INVALID_ARGUMENT, INVALID_PROMO_CODE,
                                        "the promo code is not valid for this store"),
    "RedemptionNotFound": VendorErrorRule(_NF, TRANSACTION_NOT_FOUND, "no such redemption"),
    "RedemptionAlreadyVoided": VendorErrorRule(_FP, TRANSACTION_REVERSED, "the redemption is already voided"),
    # ABORTED is not final for the mesh: the intent stays pending and is resolved by reversal.
    "DuplicateRequestId": VendorErrorRule(grpc.StatusCode.ABORTED, PROVIDER_OUTCOME_UNKNOWN,
                                          "radial already received this request; its outcome is unknown",
                                          outcome_unknown=True),
}

# Wire ids are at most 64 characters; mesh references up to 128. Long ones are hashed (stable).
_MAX_BASE = 56


def wire_id(reference_id: str) -> str:
    """The mesh reference as a Radial id (`OrderId`, base of `RequestId`): itself when short
    enough, else a stable hash, so a retry and a reversal derive the same id."""
    if len(reference_id) <= _MAX_BASE:
        return reference_id
    return "h." + hashlib.sha256(reference_id.encode()).hexdigest()[: _MAX_BASE - 2]


def request_id(reference_id: str, attempt: int) -> str:
    """Radial accepts each RequestId once (a `Timeout` spends it too): attempt n > 0 gets a suffix."""
    base = wire_id(reference_id)
    return base if attempt == 0 else f"{base}:{attempt}"


# -- money ---------------------------------------------------------------------------------------

def amount(money: Money) -> wire.Amount:
    return wire.Amount(value=format_decimal(money), currency_code=money.currency)


def money(value: wire.Amount | None, what: str) -> Money:
    if value is None:
        raise protocol_error(f"reply has no {what}")
    return parse_amount(VENDOR, what, value.value, value.currency_code)


# -- requests ------------------------------------------------------------------------------------

def _account(card: CardId) -> dict:
    if card.kind not in ("card_number", "proxy_number"):
        raise invalid_argument(f"card.{card.kind}", "radial identifies cards by card_number or proxy_number")
    return {"payment_account_unique_id": card.value, "pin": card.pin or None}


def activate_physical(rid: str, card: CardId, value: Money, promo_code: str, order_id: str) -> wire.FundAndActivateRequest:
    if not card.pin:
        raise invalid_argument("card.pin", "radial activates physical cards with their PIN", INVALID_PIN)
    return wire.FundAndActivateRequest(
        request_id=rid, card_type="Physical", amount=amount(value), promo_code=promo_code or None,
        order_id=order_id, **_account(card),
    )


def activate_virtual(rid: str, value: Money, promo_code: str, order_id: str) -> wire.FundAndActivateRequest:
    return wire.FundAndActivateRequest(
        request_id=rid, card_type="Virtual", amount=amount(value), promo_code=promo_code or None,
        order_id=order_id,
    )


def fund(rid: str, card: CardId, value: Money, order_id: str) -> wire.FundRequest:
    return wire.FundRequest(request_id=rid, amount=amount(value), order_id=order_id, **_account(card))


def redeem(rid: str, card: CardId, value: Money, order_id: str) -> wire.RedeemRequest:
    return wire.RedeemRequest(request_id=rid, amount=amount(value), order_id=order_id, **_account(card))


def redeem_void(rid: str, card: CardId, value: Money, order_id: str) -> wire.RedeemVoidRequest:
    return wire.RedeemVoidRequest(request_id=rid, amount=amount(value), order_id=order_id, **_account(card))


def balance_inquiry(rid: str, card: CardId) -> wire.BalanceInquiryRequest:
    return wire.BalanceInquiryRequest(request_id=rid, **_account(card))


def cash_out(rid: str, card: CardId, order_id: str) -> wire.CashOutRequest:
    return wire.CashOutRequest(request_id=rid, order_id=order_id, **_account(card))


# -- redemption handles --------------------------------------------------------------------------
# Radial returns no transaction id and voids a redemption by card + OrderId + Amount, so the
# provider transaction id the mesh keeps for a redemption carries exactly that (no card data).

@dataclass(frozen=True, slots=True)
class Redemption:
    order_id: str
    amount: Money


def redemption_handle(order_id: str, value: Money) -> str:
    return f"R:{value.amount_minor}:{value.currency}:{order_id}"


def parse_redemption_handle(handle: str) -> Redemption | None:
    parts = handle.split(":", 3)
    if len(parts) != 4 or parts[0] != "R" or not parts[1].isdigit() or len(parts[2]) != 3 or not parts[3]:
        return None
    return Redemption(order_id=parts[3], amount=Money(int(parts[1]), parts[2]))


# -- replies -------------------------------------------------------------------------------------

def protocol_error(message: str) -> MeshError:
    """A reply the adapter cannot read (INTERNAL: for a write the outcome is unknown, not final)."""
    return provider_error(VENDOR, "reply", message)


def parse_reply(operation: str, body: object) -> wire.Reply:
    try:
        return wire.Reply.model_validate(body)
    except ValidationError:
        raise provider_error(VENDOR, operation, "malformed reply") from None


def error(reply: wire.Reply, operation: str) -> MeshError:
    """The one mapping from a Radial `Fail` to the mesh's error (through `ERRORS`)."""
    vendor_code = reply.error_code or "Error"
    err = raise_vendor_error(VENDOR, operation, vendor_code, ERRORS)
    if vendor_code == "CardDeactivated":
        err.metadata["card_status"] = DEACTIVATED
    if vendor_code in ("PinRequired", "InvalidPin"):
        err.field = "card.pin"
    elif vendor_code in ("PromoCodeRequired", "InvalidPromoCode"):
        err.field = "promo_code"
    elif vendor_code == "InvalidRequest" and reply.error_field:
        err.metadata["vendor_field"] = reply.error_field
    return err


def timeout_error(operation: str, attempts: int) -> MeshError:
    """Radial kept answering `Timeout` (nothing applied each time) until the deadline ran out."""
    return MeshError(
        grpc.StatusCode.UNAVAILABLE, PROVIDER_TIMEOUT,
        f"radial {operation}: the stored value provider timed out {attempts} time(s)",
        metadata={"provider": VENDOR, "operation": operation, "attempts": str(attempts)}, retryable=True,
    )


def operation_result(
    reply: wire.Reply, card_masked: str, moved: wire.Amount | None, what: str, transaction_id: str,
    *, status: str = ACTIVE, replayed: bool = False,
) -> OperationResult:
    return OperationResult(
        provider_transaction_id=transaction_id, amount=money(moved, what), masked_number=card_masked,
        balance=money(reply.balance_amount, "BalanceAmount"), status=status, replayed=replayed,
    )


def balance_info(reply: wire.Reply, card: CardId) -> BalanceInfo:
    balance = money(reply.balance_amount, "BalanceAmount")
    return BalanceInfo(masked_number=card.masked, status=ACTIVE, balance=balance, held=Money(0, balance.currency))


def inactive_balance(card: CardId, vendor_code: str, currency: str) -> BalanceInfo:
    """BalanceInquiry refuses cards that are not active; the mesh reports them with a zero balance."""
    status = DEACTIVATED if vendor_code == "CardDeactivated" else INACTIVE
    return BalanceInfo(masked_number=card.masked, status=status, balance=Money(0, currency), held=Money(0, currency))


def virtual_allocation(reply: wire.Reply, transaction_id: str) -> Allocation:
    """Virtual FundAndActivate: the card is created, activated and loaded in one call. A claim-link
    store answers a proxy number and the link instead of the number and PIN."""
    number = reply.payment_account_unique_id.get_secret_value() if reply.payment_account_unique_id else ""
    if not number:
        raise protocol_error("virtual FundAndActivate reply has no PaymentAccountUniqueId")
    link = reply.card_claim_link.get_secret_value() if reply.card_claim_link else ""
    result = operation_result(reply, mask_number(number), reply.amount_funded, "AmountFunded", transaction_id)
    if link:
        return Allocation(result=result, claim_url=link, proxy_number=number, activated=True)
    pin = reply.pin.get_secret_value() if reply.pin else ""
    return Allocation(result=result, card_number=number, pin=pin, activated=True)
