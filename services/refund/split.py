"""How a refund of an amount is split across the gift card payments of one order.

Pure arithmetic on integer minor units, so it can be checked exhaustively without Redis:

- LAST_PAID_FIRST (the default): the most recent payment first, each up to what is left to refund
  of it, then the one before, ...
- FIRST_PAID_FIRST: the same from the oldest payment.
- PRO_RATA: in proportion to what is left to refund of each payment; cents by the largest
  remainder, ties to the earlier payment, so the parts always add up to the amount exactly and no
  part exceeds its payment's refundable amount.

The order flow that uses it is RefundService.Refund by order_id (logic.py refund_order), over the
order index in services/shared/orders.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

LAST_PAID_FIRST, FIRST_PAID_FIRST, PRO_RATA = "LAST_PAID_FIRST", "FIRST_PAID_FIRST", "PRO_RATA"


@dataclass(frozen=True)
class Payment:
    transaction_id: str
    paid_at_ms: int
    refundable_minor: int  # debited - voided - already refunded (or reserved)


class RefundTooLarge(ValueError):
    def __init__(self, refundable_minor: int) -> None:
        super().__init__("refund exceeds what is refundable")
        self.refundable_minor = refundable_minor


def split_refund(amount_minor: int, payments: Sequence[Payment], strategy: str) -> list[tuple[str, int]]:
    """[(transaction_id, part)] with part > 0, in payment order (oldest first)."""
    if amount_minor <= 0:
        raise ValueError("amount must be positive")
    ordered = sorted(payments, key=lambda p: (p.paid_at_ms, p.transaction_id))
    refundable = sum(max(p.refundable_minor, 0) for p in ordered)
    if amount_minor > refundable:
        raise RefundTooLarge(refundable)
    if strategy == PRO_RATA:
        parts = _pro_rata(amount_minor, ordered, refundable)
    elif strategy in (LAST_PAID_FIRST, FIRST_PAID_FIRST):
        parts = _sequential(amount_minor, ordered if strategy == FIRST_PAID_FIRST else ordered[::-1])
    else:
        raise ValueError(f"unknown strategy {strategy}")
    return [(p.transaction_id, parts[p.transaction_id]) for p in ordered if parts.get(p.transaction_id, 0) > 0]


def _sequential(amount_minor: int, payments: Sequence[Payment]) -> dict[str, int]:
    parts: dict[str, int] = {}
    left = amount_minor
    for payment in payments:
        take = min(left, max(payment.refundable_minor, 0))
        if take:
            parts[payment.transaction_id] = take
            left -= take
    return parts


def _pro_rata(amount_minor: int, payments: Sequence[Payment], refundable: int) -> dict[str, int]:
    shares = []
    for index, payment in enumerate(payments):
        base = max(payment.refundable_minor, 0)
        whole, remainder = divmod(amount_minor * base, refundable)
        shares.append([whole, remainder, index, payment])
    left = amount_minor - sum(share[0] for share in shares)
    # Largest remainder first, earlier payment on ties; a share never passes its refundable
    # amount because whole + 1 <= base whenever remainder > 0.
    for share in sorted(shares, key=lambda s: (-s[1], s[2]))[:left]:
        share[0] += 1
    return {share[3].transaction_id: share[0] for share in shares}
