"""Radial storedvalue wire models (JSON over HTTPS), exactly as gateway/simulators/radial/WIRE.md.

Radial's document names the calls and fields but gives no wire format; the shapes here are the
designed JSON model the simulator speaks (PascalCase, `Amount` as `{"Value": "25.00",
"CurrencyCode": "USD"}`), listed with every assumption in gateway/adapters/README.md.

Requests refuse unknown fields (a typo is a bug here, not a vendor refusal); replies ignore fields
they do not know (a vendor may add some). Card numbers, PINs and claim links are `SecretStr`, so
a repr or a log line of a model never shows them; `body()` reveals them only to build the request.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, SecretStr, StringConstraints
from pydantic.alias_generators import to_pascal

from gateway.adapters.json_wire import PascalReply, PascalRequest, WireDecimal

BASE_PATH = "/v1.0/stores/{store_id}/storedvalue/"

RequestIdText = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
OrderIdText = Annotated[str, StringConstraints(min_length=1, max_length=64)]

SUCCESS, FAIL, TIMEOUT = "Success", "Fail", "Timeout"


class _Request(PascalRequest):
    OPERATION: ClassVar[str]


_Reply = PascalReply


class Amount(_Reply):
    """`<Amount currencyCode="USD">25.00</Amount>` in JSON. Used in requests and replies."""

    model_config = ConfigDict(alias_generator=to_pascal, populate_by_name=True, extra="forbid", frozen=True)
    value: WireDecimal
    currency_code: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class FundAndActivateRequest(_Request):
    OPERATION: ClassVar[str] = "FundAndActivate"
    request_id: RequestIdText
    card_type: Literal["Physical", "Virtual"]
    amount: Amount
    # Physical only (Virtual cards are created by Radial).
    payment_account_unique_id: SecretStr | None = None
    pin: SecretStr | None = None
    promo_code: Annotated[str, StringConstraints(max_length=64)] | None = None
    order_id: OrderIdText | None = None


class FundRequest(_Request):
    OPERATION: ClassVar[str] = "Fund"
    request_id: RequestIdText
    payment_account_unique_id: SecretStr
    pin: SecretStr | None = None
    amount: Amount
    order_id: OrderIdText | None = None


class RedeemRequest(_Request):
    OPERATION: ClassVar[str] = "Redeem"
    request_id: RequestIdText
    payment_account_unique_id: SecretStr
    pin: SecretStr | None = None
    amount: Amount
    # Required: with the card and Amount it is how RedeemVoid finds this redemption.
    order_id: OrderIdText


class RedeemVoidRequest(_Request):
    OPERATION: ClassVar[str] = "RedeemVoid"
    request_id: RequestIdText
    payment_account_unique_id: SecretStr
    pin: SecretStr | None = None
    amount: Amount
    order_id: OrderIdText


class BalanceInquiryRequest(_Request):
    OPERATION: ClassVar[str] = "BalanceInquiry"
    request_id: RequestIdText
    payment_account_unique_id: SecretStr
    pin: SecretStr | None = None


class CashOutRequest(_Request):
    OPERATION: ClassVar[str] = "CashOut"
    request_id: RequestIdText
    payment_account_unique_id: SecretStr
    pin: SecretStr | None = None
    order_id: OrderIdText | None = None


RadialRequest = (
    FundAndActivateRequest | FundRequest | RedeemRequest | RedeemVoidRequest | BalanceInquiryRequest
    | CashOutRequest
)


class Reply(_Reply):
    """Every Radial reply, success or not (untagged: `ResponseCode` says which fields are set)."""

    response_code: Literal["Success", "Fail", "Timeout"]
    request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_field: str | None = None
    amount_funded: Amount | None = None
    amount_redeemed: Amount | None = None
    amount_voided: Amount | None = None
    amount_cashed_out: Amount | None = None
    balance_amount: Amount | None = None
    # Virtual FundAndActivate: the new card (or a proxy number with a claim link, and no PIN).
    payment_account_unique_id: SecretStr | None = None
    pin: SecretStr | None = None
    card_claim_link: SecretStr | None = None
