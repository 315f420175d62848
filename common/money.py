"""Money: integer minor units of an ISO 4217 currency. Decimal appears only at a vendor's wire edge."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import grpc

from babel.numbers import get_currency_precision, list_currencies

from common.errors import CURRENCY_MISMATCH, MeshError, invalid_argument

# Largest single amount the mesh accepts (10^12 minor units = 10 billion dollars): far above any
# gift card, far below int64 so sums of many amounts cannot overflow.
MAX_AMOUNT_MINOR = 10**12

_KNOWN_CURRENCIES = frozenset(list_currencies())


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str

    def __add__(self, other: "Money") -> "Money":
        _same_currency(self, other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: "Money") -> "Money":
        _same_currency(self, other)
        return Money(self.amount_minor - other.amount_minor, self.currency)


def _same_currency(a: Money, b: Money) -> None:
    if a.currency != b.currency:
        raise MeshError(
            grpc.StatusCode.INVALID_ARGUMENT, CURRENCY_MISMATCH,
            f"currency {b.currency} does not match {a.currency}",
        )


def is_known_currency(code: str) -> bool:
    return code in _KNOWN_CURRENCIES


def exponent(currency: str) -> int:
    """Number of minor-unit digits of a currency (USD 2, JPY 0, BHD 3)."""
    return get_currency_precision(currency)


def validate_currency(code: str, field: str, allowed: list[str] | None = None) -> str:
    if not code:
        raise invalid_argument(field, "currency_code is required")
    if not is_known_currency(code):
        raise invalid_argument(field, "currency_code is not an ISO 4217 code", "UNKNOWN_CURRENCY")
    if allowed is not None and code not in allowed:
        raise invalid_argument(field, f"currency {code} is not accepted by this merchant", "CURRENCY_NOT_ACCEPTED")
    return code


def validate_amount(
    amount_minor: int, currency: str, field: str, *, allowed_currencies: list[str] | None = None,
    allow_zero: bool = False,
) -> Money:
    """A request amount: positive (or zero where allowed), bounded, in an accepted currency."""
    validate_currency(currency, f"{field}.currency_code", allowed_currencies)
    if amount_minor < 0 or (amount_minor == 0 and not allow_zero):
        raise invalid_argument(f"{field}.amount_minor", "amount must be greater than zero", "INVALID_AMOUNT")
    if amount_minor > MAX_AMOUNT_MINOR:
        raise MeshError(
            grpc.StatusCode.OUT_OF_RANGE, "AMOUNT_TOO_LARGE",
            f"amount exceeds the maximum of {MAX_AMOUNT_MINOR} minor units", field=f"{field}.amount_minor",
        )
    return Money(amount_minor, currency)


def to_decimal(money: Money) -> Decimal:
    """Minor units -> a Decimal in major units with the currency's exponent (1234 USD -> 12.34)."""
    return Decimal(money.amount_minor).scaleb(-exponent(money.currency))


def from_decimal(value: Decimal | str, currency: str) -> Money:
    """A vendor's decimal amount -> minor units; refuses values finer than the currency allows."""
    try:
        decimal = Decimal(value)
    except (InvalidOperation, TypeError) as exc:
        raise ValueError("not a decimal amount") from exc
    if not decimal.is_finite():
        raise ValueError("not a finite amount")
    scaled = decimal.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"more decimals than {currency} allows")
    return Money(int(scaled), currency)


def format_decimal(money: Money) -> str:
    """The wire string of a decimal amount, fixed to the currency's exponent ("12.30")."""
    return f"{to_decimal(money):.{exponent(money.currency)}f}"
