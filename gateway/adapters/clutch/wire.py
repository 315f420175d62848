"""Clutch gift card wire models (JSON over HTTPS, camelCase), exactly as
gateway/simulators/clutch/WIRE.md.

Clutch's document describes the operations (balance, hold with partial approval, settlement that
releases the rest, hold reversal as a $0 settlement, allocate by CardsetID, activation, issuance)
but no wire format; the designed JSON model and every assumption are listed in
gateway/adapters/README.md. Requests refuse unknown fields; replies ignore fields they do not
know. Card numbers and PINs are `SecretStr`; `body()` reveals them only to build the request.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import SecretStr, StringConstraints

from gateway.adapters.json_wire import CamelReply, CamelRequest, WireDecimal

BASE_PATH = "/merchant/"
# Sent on every call besides HTTP Basic auth (from the profile's options).
CONTEXT_HEADERS = ("brand", "location", "terminal")

Ref = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class _Request(CamelRequest):
    PATH: ClassVar[str]


_Reply = CamelReply


class BalanceRequest(_Request):
    PATH: ClassVar[str] = "balance"
    card_number: SecretStr
    pin: SecretStr | None = None


class HoldRequest(_Request):
    PATH: ClassVar[str] = "hold"
    card_number: SecretStr
    pin: SecretStr | None = None
    amount: WireDecimal
    # Clutch replays the first reply for a repeated requestRef with the same body (WIRE.md).
    request_ref: Ref


class SettlementRequest(_Request):
    """Redeem `amount` of the hold and release the rest; `"0.00"` is the hold reversal."""

    PATH: ClassVar[str] = "settlement"
    hold_id: Ref
    amount: WireDecimal
    request_ref: Ref


class AllocateRequest(_Request):
    PATH: ClassVar[str] = "allocate"
    card_set_id: Ref
    request_ref: Ref


class ActivateRequest(_Request):
    PATH: ClassVar[str] = "activate"
    card_number: SecretStr
    pin: SecretStr | None = None
    request_ref: Ref


class IssueRequest(_Request):
    PATH: ClassVar[str] = "issue"
    card_number: SecretStr
    pin: SecretStr | None = None
    amount: WireDecimal
    request_ref: Ref


ClutchRequest = BalanceRequest | HoldRequest | SettlementRequest | AllocateRequest | ActivateRequest | IssueRequest


class Reply(_Reply):
    """Every Clutch reply (untagged: `success` says which fields are set)."""

    success: bool
    error_code: str | None = None
    error_message: str | None = None
    field: str | None = None
    transaction_id: str | None = None
    hold_id: str | None = None
    # Masked by Clutch, except allocate's reply, which carries the full new number.
    card_number: SecretStr | None = None
    pin: SecretStr | None = None
    card_set_id: str | None = None
    active: bool | None = None
    requested_amount: WireDecimal | None = None
    approved_amount: WireDecimal | None = None
    redeemed_amount: WireDecimal | None = None
    released_amount: WireDecimal | None = None
    amount: WireDecimal | None = None
    balance: WireDecimal | None = None
    available_balance: WireDecimal | None = None
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None
