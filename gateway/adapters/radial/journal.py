"""Write-ahead record of Radial redemptions by mesh reference, for reversal by reference.

Radial voids a redemption by card + OrderId + Amount (RedeemVoid) and returns no transaction id.
When a Redeem timed out the mesh asks `reverse(original_reference_id=...)` with the card but not
the amount; this journal remembers, BEFORE each Redeem is sent, the OrderId and the amount sent
under that reference, so the reversal can name them. It holds no card data (the card comes with
the reversal request).

`RedisRedemptionJournal` survives restarts (what production uses); `MemoryRedemptionJournal` is
for a gateway built without Redis (tests, demos) and forgets on restart, so a reversal by
reference after a restart then finds nothing and reports `reversed=False` (documented gap).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from common.redis_scripts import hash_tag


@dataclass(frozen=True, slots=True)
class JournalEntry:
    order_id: str
    amount_minor: int
    currency: str


class RedemptionJournal(Protocol):
    async def record(self, merchant: str, reference_id: str, entry: JournalEntry) -> None: ...

    async def entries(self, merchant: str, reference_id: str) -> list[JournalEntry]: ...


class MemoryRedemptionJournal:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], list[JournalEntry]] = {}

    async def record(self, merchant: str, reference_id: str, entry: JournalEntry) -> None:
        self._entries.setdefault((merchant, reference_id), []).append(entry)

    async def entries(self, merchant: str, reference_id: str) -> list[JournalEntry]:
        return list(self._entries.get((merchant, reference_id), []))


class RedisRedemptionJournal:
    """One list per (merchant, reference) with a TTL longer than any hold (the longest a
    reversal by reference can come after the redemption, e.g. redeem-at-authorize holds)."""

    def __init__(self, redis, *, ttl_seconds: int = 40 * 24 * 3600) -> None:
        self._redis = redis
        self._ttl = ttl_seconds

    @staticmethod
    def key(merchant: str, reference_id: str) -> str:
        return f"mesh:radial:redeem:{hash_tag('radial', merchant)}:{reference_id}"

    async def record(self, merchant: str, reference_id: str, entry: JournalEntry) -> None:
        key = self.key(merchant, reference_id)
        value = json.dumps({"order_id": entry.order_id, "amount_minor": entry.amount_minor, "currency": entry.currency})
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, value)
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def entries(self, merchant: str, reference_id: str) -> list[JournalEntry]:
        raw = await self._redis.lrange(self.key(merchant, reference_id), 0, -1)
        return [JournalEntry(**json.loads(item)) for item in raw]
