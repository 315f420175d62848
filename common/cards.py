"""Card identity: the identifier a caller gave, kept out of reprs, logs and errors, and its mask."""

from __future__ import annotations

from dataclasses import dataclass, field

CARD_ID_KINDS = ("card_number", "track_data", "barcode", "phone_number", "account_token", "proxy_number")


def mask_number(number: str) -> str:
    """First 6 / last 4 at most; short numbers show only the last 4 (or fewer)."""
    if len(number) >= 16:
        return number[:6] + "*" * (len(number) - 10) + number[-4:]
    keep = min(4, max(len(number) - 4, 0))
    return "*" * (len(number) - keep) + number[len(number) - keep:]


@dataclass(frozen=True, slots=True)
class CardId:
    """How a card is identified at its provider: one identifier of `kind`, plus an optional PIN."""

    kind: str  # one of CARD_ID_KINDS
    value: str = field(repr=False)
    pin: str | None = field(default=None, repr=False)

    @property
    def masked(self) -> str:
        return mask_number(self.value)
