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

from common.errors import TRANSACTION_REVERSED, failed_precondition
from common.redis_scripts import hash_tag

# The order_id of a tombstone: a reversal by reference came first; nothing may be sent after it.
TOMBSTONE = "__reversed__"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    # What the vendor knows the operation by (Radial OrderId) or the adapter's step name.
    order_id: str
    amount_minor: int
    currency: str


class ReferenceJournal(Protocol):
    async def record(self, merchant: str, reference_id: str, entry: JournalEntry) -> int:
        """Append; returns the entry's 1-based position (appends are totally ordered)."""

    async def entries(self, merchant: str, reference_id: str) -> list[JournalEntry]: ...


class MemoryReferenceJournal:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], list[JournalEntry]] = {}

    async def record(self, merchant: str, reference_id: str, entry: JournalEntry) -> int:
        entries = self._entries.setdefault((merchant, reference_id), [])
        entries.append(entry)
        return len(entries)

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

    async def record(self, merchant: str, reference_id: str, entry: JournalEntry) -> int:
        key = self.key(merchant, reference_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, json.dumps(asdict(entry)))
            pipe.expire(key, self._ttl)
            position, _ = await pipe.execute()
        return int(position)

    async def entries(self, merchant: str, reference_id: str) -> list[JournalEntry]:
        raw = await self._redis.lrange(self.key(merchant, reference_id), 0, -1)
        return [JournalEntry(**json.loads(item)) for item in raw]


async def begin(journal: ReferenceJournal, merchant: str, reference_id: str, entry: JournalEntry) -> list[JournalEntry]:
    """Write `entry` down before sending it. Refused (TRANSACTION_REVERSED) when a reversal by
    this reference came first: the operation must never apply after it. Returns what was
    journaled under the reference before this entry (an earlier attempt: the vendor may replay)."""
    position = await journal.record(merchant, reference_id, entry)
    before = (await journal.entries(merchant, reference_id))[: position - 1]
    if any(e.order_id == TOMBSTONE for e in before):
        raise failed_precondition(TRANSACTION_REVERSED, "this operation was reversed before it was sent")
    return before


async def tombstone(journal: ReferenceJournal, merchant: str, reference_id: str, currency: str) -> list[JournalEntry]:
    """A reversal by reference: block the reference from here on and return what was sent under
    it before (to undo). Appends are ordered, so an operation journaled after the tombstone sees
    it and is never sent, and one journaled before is in the returned list."""
    position = await journal.record(merchant, reference_id, JournalEntry(TOMBSTONE, 0, currency))
    before = (await journal.entries(merchant, reference_id))[: position - 1]
    return [e for e in before if e.order_id != TOMBSTONE]
