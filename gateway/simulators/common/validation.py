"""Strict, declarative request validation shared by every simulator.

Each vendor describes its request bodies as a tuple of `Field`s; `validate()` either returns the
cleaned values or raises `Invalid(field, message)`, which the vendor renders in its own error shape.
The simulators are deliberately stricter than a real vendor is likely to be: unknown fields are
rejected, so an adapter's typo (`cardNumber` for `cardnumber`) fails loudly instead of being ignored.
Messages name the field and the rule, never the value (it may be a card number or PIN).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .money import AmountError, parse_amount


class Invalid(Exception):
    """A request that does not match the vendor's documented shape."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class Str:
    max_len: int | None = None
    min_len: int = 1
    pattern: str | None = None
    pattern_hint: str = ""

    def clean(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(name, "must be a string")
        if len(value) < self.min_len:
            rule = "must not be empty" if self.min_len == 1 else f"must be at least {self.min_len} characters"
            raise Invalid(name, rule)
        if self.max_len is not None and len(value) > self.max_len:
            raise Invalid(name, f"must be at most {self.max_len} characters")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise Invalid(name, f"must be {self.pattern_hint or 'well formed'}")
        return value


@dataclass(frozen=True)
class Int:
    """A JSON integer (booleans and numeric strings are refused), optionally bounded."""

    minimum: int | None = None
    maximum: int | None = None

    def clean(self, name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(name, "must be an integer")
        if self.minimum is not None and value < self.minimum:
            raise Invalid(name, f"must be at least {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise Invalid(name, f"must be at most {self.maximum}")
        return value


@dataclass(frozen=True)
class Money:
    allow_string: bool = True
    allow_number: bool = False
    allow_zero: bool = False

    def clean(self, name: str, value: Any) -> Decimal:
        try:
            return parse_amount(
                value,
                allow_string=self.allow_string,
                allow_number=self.allow_number,
                allow_zero=self.allow_zero,
            )
        except AmountError as exc:
            raise Invalid(name, str(exc)) from None


@dataclass(frozen=True)
class OneOf:
    values: tuple[str, ...]

    def clean(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in self.values:
            raise Invalid(name, "must be one of " + ", ".join(self.values))
        return value


@dataclass(frozen=True)
class Obj:
    fields: tuple["Field", ...]

    def clean(self, name: str, value: Any) -> dict[str, Any]:
        return validate(value, self.fields, prefix=name + ".")


@dataclass(frozen=True)
class Field:
    name: str
    kind: Str | Int | Money | OneOf | Obj
    required: bool = False
    # Paytronix: "If null, then this param will be ignored" -> treat null as absent where a doc says so.
    null_is_absent: bool = False


def validate(body: Any, fields: Sequence[Field], *, prefix: str = "") -> dict[str, Any]:
    """Return {name: cleaned value} for the fields present; raise `Invalid` on the first problem."""
    if not isinstance(body, Mapping):
        raise Invalid(prefix.rstrip(".") or "body", "must be a JSON object")
    known = {f.name for f in fields}
    for key in body:
        if key not in known:
            raise Invalid(prefix + str(key), "is not a recognised field")
    cleaned: dict[str, Any] = {}
    for spec in fields:
        present = spec.name in body and not (spec.null_is_absent and body[spec.name] is None)
        if not present:
            if spec.required:
                raise Invalid(prefix + spec.name, "is required")
            continue
        value = body[spec.name]
        if value is None:
            raise Invalid(prefix + spec.name, "must not be null")
        cleaned[spec.name] = spec.kind.clean(prefix + spec.name, value)
    return cleaned


def exactly_one(cleaned: Mapping[str, Any], names: Sequence[str], *, where: str) -> str:
    """The one identifier present among `names`, or `Invalid` if none or several are given."""
    present = [n for n in names if n in cleaned]
    if len(present) != 1:
        raise Invalid(where, "exactly one of " + ", ".join(names) + " must be provided")
    return present[0]

