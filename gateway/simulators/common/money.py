"""Decimal money at the simulated vendor's wire edge.

Simulators speak the vendors' decimal amounts; inside a simulator a balance is a `Decimal` with at most
two places (never a float). JSON numbers are parsed with `parse_float=Decimal` (see `jsonio.py`), so a
number such as `10.10` arrives here as `Decimal("10.10")`, never as a binary float.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
# A sanity ceiling no vendor document states; it keeps absurd inputs out of the ledger.
MAX_AMOUNT = Decimal("1000000.00")

_DECIMAL_STRING = re.compile(r"^[0-9]+(\.[0-9]{1,2})?$")


class AmountError(ValueError):
    """The value is not a valid wire amount; the message says why (never echoes card data)."""


def parse_amount(
    value: object,
    *,
    allow_string: bool = True,
    allow_number: bool = False,
    allow_zero: bool = False,
) -> Decimal:
    """Parse a wire amount strictly: digits with at most two decimals, positive (or zero if allowed).

    Strings must look like `10`, `10.5` or `10.50` (no sign, exponent, spaces or thousands separator).
    Numbers (only if `allow_number`) must be ints or Decimals from the JSON parser with at most two
    decimals as written, so `10.000` is rejected just as the string would be.
    """
    if isinstance(value, bool):
        raise AmountError("must be a decimal amount, not a boolean")
    if isinstance(value, str):
        if not allow_string:
            raise AmountError("must be a JSON number")
        if not _DECIMAL_STRING.match(value):
            raise AmountError("must be a decimal string with at most 2 decimal places")
        amount = Decimal(value)
    elif isinstance(value, (int, Decimal)):
        if not allow_number:
            raise AmountError("must be a decimal string")
        try:
            amount = Decimal(value)
        except InvalidOperation as exc:  # pragma: no cover - Decimal(int) never fails
            raise AmountError("must be a decimal amount") from exc
        if not amount.is_finite():
            raise AmountError("must be a finite amount")
        exponent = amount.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -2:
            raise AmountError("must have at most 2 decimal places")
        if amount < 0:
            raise AmountError("must not be negative")
    else:
        raise AmountError("must be a decimal amount")
    if amount == 0 and not allow_zero:
        raise AmountError("must be greater than zero")
    if amount > MAX_AMOUNT:
        raise AmountError(f"must not exceed {MAX_AMOUNT}")
    return amount.quantize(CENT)


def to_decimal(value: object) -> Decimal:
    """Seed-data amounts (admin API): the same strict rules, accepting strings or numbers, zero ok."""
    return parse_amount(value, allow_number=True, allow_zero=True)


def fmt(amount: Decimal) -> str:
    """Two-decimal string, e.g. `25.00` (the form Paytronix documents for its Decimals)."""
    return str(amount.quantize(CENT))


def mask_number(number: str) -> str:
    """First 6 / last 4 at most, as house rules allow; short numbers show only the last 4."""
    if len(number) >= 16:
        return number[:6] + "*" * (len(number) - 10) + number[-4:]
    if len(number) > 4:
        return "*" * (len(number) - 4) + number[-4:]
    return "*" * len(number)
