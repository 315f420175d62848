"""Balance and tender planning over the gateway.

Available = provider balance - what open holds the mesh knows of reserve, never below zero. For the
native ledger (and shadow holds) the gateway reports `held`; vendor-side native holds are already
deducted from the balance the vendor reports.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from common.cards import CardId
from common.errors import MeshError
from common.money import Money
from giftcard.gateway.v1 import gateway_pb2
from giftcard.type.v1 import card_pb2

# Planning more cards than this at once is not a real checkout and would fan out provider calls.
MAX_TENDER_CARDS = 20


@dataclass(frozen=True, slots=True)
class CardBalance:
    masked_number: str
    status: int  # giftcard.type.v1.CardStatus
    balance: Money
    held: Money
    provider: str

    @property
    def available(self) -> Money:
        return Money(max(self.balance.amount_minor - self.held.amount_minor, 0), self.balance.currency)


@dataclass(frozen=True, slots=True)
class Allocation:
    index: int
    masked_number: str
    status: int
    available: Money
    apply: Money
    skip_reason: str = ""


class BalanceLogic:
    def __init__(self, gateway) -> None:
        self._gateway = gateway

    async def balance(self, card_ref: card_pb2.CardRef) -> CardBalance:
        reply = await self._gateway.GetBalance(gateway_pb2.GetBalanceRequest(card=card_ref))
        return CardBalance(
            masked_number=reply.masked_number, status=reply.status,
            balance=Money(reply.balance.amount_minor, reply.balance.currency_code),
            held=Money(reply.held.amount_minor, reply.held.currency_code or reply.balance.currency_code),
            provider=reply.provider,
        )

    async def plan_tender(
        self, total: Money, cards: list[tuple[CardId, card_pb2.CardRef]]
    ) -> tuple[list[Allocation], Money]:
        """Apply min(available, remaining) per card, in the caller's order; one concurrent balance
        call per card. Unusable cards (inactive, wrong currency, unknown) get 0 and a reason."""
        lookups = await asyncio.gather(
            *(self.balance(ref) for _, ref in cards), return_exceptions=True
        )
        remaining = total.amount_minor
        plan: list[Allocation] = []
        for index, ((card, _), found) in enumerate(zip(cards, lookups)):
            if isinstance(found, MeshError):
                zero = Money(0, total.currency)
                plan.append(Allocation(index, card.masked, card_pb2.CARD_STATUS_UNSPECIFIED, zero, zero, found.reason))
                continue
            if isinstance(found, BaseException):
                raise found
            reason = ""
            if found.status != card_pb2.CARD_STATUS_ACTIVE:
                reason = "CARD_INACTIVE"
            elif found.balance.currency != total.currency:
                reason = "CURRENCY_MISMATCH"
            usable = found.available.amount_minor if not reason else 0
            apply = min(usable, remaining)
            remaining -= apply
            plan.append(Allocation(
                index, found.masked_number, found.status,
                Money(usable, total.currency), Money(apply, total.currency), reason,
            ))
        return plan, Money(remaining, total.currency)
