"""SmartClixx gift card wire models (JSON over HTTPS, camelCase), exactly as
gateway/simulators/smartclixx/WIRE.md.

SmartClixx's document describes physical activation, e-card retrieval (number + CVV2) then
activation, settlement per shipment and authorization reversal, but no wire format; the designed
JSON model and every assumption are listed in gateway/adapters/README.md. Requests refuse unknown
fields; replies ignore fields they do not know. Card numbers and CVV2s are `SecretStr`; `body()`
reveals them only to build the request. No currency travels on this wire (README: assumption).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import SecretStr, StringConstraints

from gateway.adapters.json_wire import CamelReply, CamelRequest, WireDecimal

BASE_PATH = "/api/v1/"

Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]

APPROVED, DECLINED, ERROR = "APPROVED", "DECLINED", "ERROR"


class _Request(CamelRequest):
    PATH: ClassVar[str]


_Reply = CamelReply


class RetrieveECardRequest(_Request):
    PATH: ClassVar[str] = "ecards/retrieve"
    # SmartClixx replays the first reply for a repeated requestId with the same body (WIRE.md).
    request_id: Id
    program_id: Id | None = None
    order_id: Id | None = None


class ActivateRequest(_Request):
    PATH: ClassVar[str] = "cards/activate"
    request_id: Id
    card_number: SecretStr
    cvv2: SecretStr | None = None
    amount: WireDecimal
    order_id: Id | None = None


class BalanceRequest(_Request):
    PATH: ClassVar[str] = "cards/balance"
    card_number: SecretStr
    cvv2: SecretStr | None = None


class AuthorizeRequest(_Request):
    PATH: ClassVar[str] = "authorizations"
    request_id: Id
    card_number: SecretStr
    cvv2: SecretStr | None = None
    amount: WireDecimal
    order_id: Id | None = None


class SettleRequest(_Request):
    PATH: ClassVar[str] = "settlements"
    request_id: Id
    authorization_id: Id
    amount: WireDecimal
    order_id: Id | None = None


class ReverseAuthorizationRequest(_Request):
    """Release `amount` of what is left on the authorization; absent = all of it."""

    PATH: ClassVar[str] = "authorizations/reversal"
    request_id: Id
    authorization_id: Id
    amount: WireDecimal | None = None
    order_id: Id | None = None


SmartClixxRequest = (
    RetrieveECardRequest | ActivateRequest | BalanceRequest | AuthorizeRequest | SettleRequest
    | ReverseAuthorizationRequest
)


class Reply(_Reply):
    """Every SmartClixx reply (untagged: `status` says which fields are set)."""

    status: Literal["APPROVED", "DECLINED", "ERROR"]
    error_code: str | None = None
    error_message: str | None = None
    field: str | None = None
    # Masked by SmartClixx, except ecards/retrieve, which carries the full new number and CVV2.
    card_number: SecretStr | None = None
    cvv2: SecretStr | None = None
    program_id: str | None = None
    transaction_id: str | None = None
    authorization_id: str | None = None
    settlement_id: str | None = None
    reversal_id: str | None = None
    activated_amount: WireDecimal | None = None
    approved_amount: WireDecimal | None = None
    settled_amount: WireDecimal | None = None
    reversed_amount: WireDecimal | None = None
    authorization_remaining: WireDecimal | None = None
    balance: WireDecimal | None = None
    available_balance: WireDecimal | None = None
    active: bool | None = None
