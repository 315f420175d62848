"""Generating vendor-side card credentials (e-gift numbers, PINs, CVV2s, proxy numbers).

Numbers carry a Luhn check digit so adapters that validate them accept them. The RNG is the
simulator's own seeded `random.Random`, so a run is reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def luhn_check_digit(partial: str) -> str:
    total = 0
    for index, char in enumerate(reversed(partial)):
        digit = int(char)
        if index % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def digits(rng: random.Random, count: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(count))


def new_card_number(rng: random.Random, prefix: str, taken: Callable[[str], bool], length: int = 16) -> str:
    """A Luhn-valid number starting with `prefix` that `taken` says is not in use yet."""
    while True:
        partial = prefix + digits(rng, length - len(prefix) - 1)
        number = partial + luhn_check_digit(partial)
        if not taken(number):
            return number
