"""A provider wrapped with the card limits of common/limits.py (velocity, unknown-card lookups).

Wrapping the provider port (as MeasuredProvider does for metrics) puts the limits where every card
operation of every service passes, in all-in-one and microservices mode alike, without touching
the servicers. Only customer operations are limited: captures, releases, reversals, refund credits
and the rest finish or undo an operation that was already admitted, and refusing them would leave
money held or taken (the settlement jobs and compensations must always get through).
"""

from __future__ import annotations

import asyncio
import functools

from common.errors import CARD_NOT_FOUND, MeshError
from common.limits import MeshLimits

# Operation -> position of the CardId among the arguments after `merchant`.
CARD_OPERATIONS = {"balance": 0, "place_hold": 1, "redeem": 1, "activate": 1, "cash_out": 1, "credit": 1}


class LimitedProvider:
    def __init__(self, provider, limits: MeshLimits) -> None:
        self._provider = provider
        self._limits = limits

    def __getattr__(self, name: str):
        target = getattr(self._provider, name)
        if name not in CARD_OPERATIONS:
            return target
        return functools.partial(self._limited, name, target)

    async def _limited(self, operation: str, target, merchant: str, *args, **kwargs):
        if operation == "credit" and kwargs.get("kind") == "refund":
            return await target(merchant, *args, **kwargs)
        reserved = await self._limits.admit_card_operation(merchant, args[CARD_OPERATIONS[operation]])
        unknown = False
        try:
            return await target(merchant, *args, **kwargs)
        except MeshError as error:
            unknown = error.reason == CARD_NOT_FOUND
            raise
        finally:
            if reserved and not unknown:  # only a lookup that found no card spends the budget
                await asyncio.shield(self._limits.card_found(merchant))
