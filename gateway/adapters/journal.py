"""Write-ahead record of what an adapter sent under a mesh reference, for reversal by reference.

`Provider.reverse(original_reference_id=...)` (the timeout case: a write whose reply was lost)
brings the card but not the amount. Vendors that undo by amount need it: Radial voids a redemption
by card + OrderId + Amount; Clutch and SmartClixx replay a request only for the same body. Adapters
record, BEFORE sending, the amount (and the vendor's order id) under the reference; the reversal
reads it back. No card data is kept (the card comes with the reversal request).

`RedisReferenceJournal` survives restarts (production); `MemoryReferenceJournal` is for a gateway
built without Redis (unit tests, demos) and forgets on restart, so a reversal by reference after a
restart finds nothing and reports `reversed=False` (documented gap).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Protocol

from common.redis_scripts import hash_tag


@dataclass(frozen=True, slots=True)
class JournalEntry:
    # What the vendor knows the operation by (Radial OrderId) or the adapter's step name.
    order_id: str
    amount_minor: int
    currency: str


class ReferenceJournal(Protocol):
    async def record(self, merchant: str, reference_id: str, entry: JournalEntry) -> None: ...

    async def entries(self, merchant: str, reference_id: str) -> list[JournalEntry]: ...


class MemoryReferenceJournal:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], list[JournalEntry]] = {}

    async def record(self, merchant: str, reference_id: str, entry: JournalEntry) -> None:
        self._entries.setdefault((merchant, reference_id), []).append(entry)

    async def entries(self, merchant: str, reference_id: str) -> list[JournalEntry]:
        return list(self._entries.get((merchant, reference_id), []))


class RedisReferenceJournal:
    """One list per (vendor, merchant, reference) with a TTL longer than any hold (the longest a
    reversal by reference can come after the operation, e.g. redeem-at-authorize holds)."""

    def __init__(self, redis, vendor: str, *, ttl_seconds: int = 40 * 24 * 3600) -> None:
        self._redis = redis
        self._vendor = vendor
        self._ttl = ttl_seconds

    def key(self, merchant: str, reference_id: str) -> str:
        return f"mesh:journal:{hash_tag(self._vendor, merchant)}:{reference_id}"

    async def record(self, merchant: str, reference_id: str, entry: JournalEntry) -> None:
        key = self.key(merchant, reference_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, json.dumps(asdict(entry)))
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def entries(self, merchant: str, reference_id: str) -> list[JournalEntry]:
        raw = await self._redis.lrange(self.key(merchant, reference_id), 0, -1)
        return [JournalEntry(**json.loads(item)) for item in raw]
