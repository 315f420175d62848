"""Validation of request fields shared by every servicer: bad input -> INVALID_ARGUMENT naming the
field, before anything is changed. Messages never echo card data."""

from __future__ import annotations

import re

from common.cards import CardId
from common.errors import invalid_argument
from common.money import Money, validate_amount

MAX_ID_LENGTH = 128
_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]+$")
_DIGITS = re.compile(r"^[0-9]+$")
_MAX_IDENTIFIER = {"card_number": 32, "track_data": 128, "barcode": 128, "phone_number": 20,
                   "account_token": 128, "proxy_number": 64}


def require_id(value: str, field: str, *, required: bool = True) -> str:
    """An identifier (order id, hold id, client transaction id...): printable, bounded."""
    if not value:
        if required:
            raise invalid_argument(field, f"{field} is required")
        return value
    if len(value) > MAX_ID_LENGTH:
        raise invalid_argument(field, f"{field} is longer than {MAX_ID_LENGTH} characters")
    if not _ID_PATTERN.match(value):
        raise invalid_argument(field, f"{field} may contain only letters, digits and . _ : -")
    return value


def card_from_proto(card, field: str = "card") -> CardId:
    """A `giftcard.type.v1.CardRef` -> CardId; exactly one identifier, sane lengths, digits where due."""
    kind = card.WhichOneof("identifier") if card is not None else None
    if kind is None:
        raise invalid_argument(field, f"{field} must set one identifier (card_number, barcode, ...)")
    value = getattr(card, kind)
    limit = _MAX_IDENTIFIER[kind]
    if not value or len(value) > limit:
        raise invalid_argument(f"{field}.{kind}", f"{kind} must be 1..{limit} characters")
    if kind == "card_number" and (not _DIGITS.match(value) or len(value) < 6):
        raise invalid_argument(f"{field}.{kind}", "card_number must be 6..32 digits")
    if not value.isprintable():
        raise invalid_argument(f"{field}.{kind}", f"{kind} has non-printable characters")
    pin = card.pin or None
    if pin is not None and (len(pin) > 16 or not pin.isalnum()):
        raise invalid_argument(f"{field}.pin", "pin must be 1..16 letters or digits")
    return CardId(kind=kind, value=value, pin=pin)


def money_from_proto(
    money, field: str, *, allowed_currencies: list[str] | None = None, allow_zero: bool = False
) -> Money:
    if money is None:
        raise invalid_argument(field, f"{field} is required")
    return validate_amount(
        money.amount_minor, money.currency_code, field,
        allowed_currencies=allowed_currencies, allow_zero=allow_zero,
    )


def optional_money(message, name: str, field: str, **kwargs) -> Money | None:
    """The Money field `name` of `message` when set, else None."""
    return money_from_proto(getattr(message, name), field, **kwargs) if message.HasField(name) else None


def timestamp_ms(timestamp, field: str) -> int:
    """A `google.protobuf.Timestamp` -> epoch milliseconds; one outside 0001..9999 or with nanos
    outside 0..999999999 is INVALID_ARGUMENT (protobuf raises ValueError, which would be INTERNAL)."""
    try:
        return timestamp.ToMilliseconds()
    except ValueError:
        raise invalid_argument(field, f"{field} is not a valid timestamp") from None
