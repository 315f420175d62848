"""Work queues in Redis that any number of workers drain at once: queued captures (batch
settlement) and scheduled reversals.

    mesh:<kind>:{<kind>:<merchant>:<bucket>}:items   hash  item id -> JSON (the record itself)
    mesh:<kind>:{<kind>:<merchant>:<bucket>}:due     zset  item id -> when it is due (epoch ms)
    mesh:<kind>:{<kind>:<merchant>:<bucket>}:done    zset  item id -> when it became final (purge)

An item is due at its run time; a worker claims due items (work_claim.lua) which sets their due
score to the end of its lease and gives each a new fencing token; the worker records the outcome
with that token (work_finish.lua). A worker that dies simply stops: its items fall due again when
its lease ends and another worker claims them with a higher token, so the dead worker, should it
come back, is refused. The queue does not make a provider call happen once; the deterministic
reference_id of each item does (the provider replays a repeat), the queue makes it rare.

Both keys of a bucket share one hash tag, so each script runs unchanged on Redis Cluster; items of a
merchant are spread over INDEX_BUCKETS buckets so one busy merchant does not load one slot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from services.shared.holds import now_ms
from common.redis_scripts import hash_tag
from services.shared.keys import INDEX_BUCKETS, bucket_of, bucket_tag, merchant_part
from services.shared.scripts import Scripts, text

_SCRIPTS = Path(__file__).parent


@dataclass(frozen=True)
class Claimed:
    item_id: str
    fence: int
    item: dict[str, Any]


class WorkQueue:
    def __init__(self, redis: Redis, kind: str) -> None:
        self._redis = redis
        self._scripts = Scripts(redis, _SCRIPTS)
        self.kind = kind

    def keys(self, merchant: str, bucket: int) -> list[str]:
        tag = bucket_tag(self.kind, merchant, bucket)
        return [f"mesh:{self.kind}:{tag}:items", f"mesh:{self.kind}:{tag}:due", f"mesh:{self.kind}:{tag}:done"]

    def _keys_of(self, merchant: str, item_id: str) -> list[str]:
        return self.keys(merchant, bucket_of(item_id))

    async def put(
        self, merchant: str, item_id: str, item: dict[str, Any], *, due_ms: int, owner: str = "",
        lease_ms: int = 0,
    ) -> tuple[bool, dict[str, Any]]:
        """(new?, item as stored). With `owner` a new item starts claimed by it (fence 1)."""
        reply = await self._scripts(
            "work_put", self._keys_of(merchant, item_id),
            [item_id, json.dumps(item), due_ms, owner, now_ms(), lease_ms],
        )
        return text(reply[0]) == "NEW", json.loads(text(reply[1]))

    async def get(self, merchant: str, item_id: str) -> dict[str, Any] | None:
        raw = await self._redis.hget(self._keys_of(merchant, item_id)[0], item_id)
        return None if raw is None else json.loads(raw)

    async def claim(self, merchant: str, bucket: int, owner: str, lease_ms: int, limit: int) -> list[Claimed]:
        reply = await self._scripts("work_claim", self.keys(merchant, bucket), [now_ms(), lease_ms, owner, limit, ""])
        return [_claimed(raw) for raw in reply]

    async def claim_one(self, merchant: str, item_id: str, owner: str, lease_ms: int) -> Claimed | None:
        """Claim this item if it is due (not held by a live lease)."""
        reply = await self._scripts(
            "work_claim", self._keys_of(merchant, item_id), [now_ms(), lease_ms, owner, 1, item_id]
        )
        return _claimed(reply[0]) if reply else None

    async def finish(
        self, merchant: str, claim: Claimed, fields: dict[str, Any], *, final: bool, due_ms: int = 0
    ) -> tuple[bool, dict[str, Any]]:
        """(recorded?, item). False: the claim was taken over; the newer holder decides."""
        reply = await self._scripts(
            "work_finish", self._keys_of(merchant, claim.item_id),
            [claim.item_id, claim.fence, json.dumps(fields), "1" if final else "0", due_ms, now_ms()],
        )
        status = text(reply[0])
        return status == "OK", (json.loads(text(reply[1])) if status != "MISSING" else {})

    async def open_items(self, merchant: str, offset: int, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        """Items not final, bucket by bucket in due order; returns (items, next offset or None).
        The offset counts across buckets; items that finish meanwhile may shift a page."""
        items: list[dict[str, Any]] = []
        skip = offset
        position = offset
        for bucket in range(INDEX_BUCKETS):
            items_key, due_key, _ = self.keys(merchant, bucket)
            size = await self._redis.zcard(due_key)
            if skip >= size:
                skip -= size
                continue
            ids = await self._redis.zrange(due_key, skip, skip + (limit - len(items)) - 1)
            skip = 0
            if ids:
                for raw in await self._redis.hmget(items_key, ids):
                    if raw is not None:
                        items.append(json.loads(raw))
                position += len(ids)
            if len(items) >= limit:
                more = await self._more_after(merchant, bucket, position, offset)
                return items, position if more else None
        return items, None

    async def _more_after(self, merchant: str, bucket: int, position: int, offset: int) -> bool:
        total = 0
        for b in range(INDEX_BUCKETS):
            total += await self._redis.zcard(self.keys(merchant, b)[1])
        return total > position

    async def purge(self, merchant: str, older_than_ms: int, limit: int = 1000) -> int:
        """Drop final items that became final more than `older_than_ms` ago; returns how many."""
        cutoff = now_ms() - older_than_ms
        return sum([int(await self._scripts("work_purge", self.keys(merchant, bucket), [cutoff, limit]))
                    for bucket in range(INDEX_BUCKETS)])

    async def depth(self, merchant: str) -> tuple[int, int]:
        """(items not final, items due now) of a merchant."""
        total = due = 0
        now = now_ms()
        for bucket in range(INDEX_BUCKETS):
            key = self.keys(merchant, bucket)[1]
            total += await self._redis.zcard(key)
            due += await self._redis.zcount(key, "-inf", now)
        return total, due


def _claimed(raw) -> Claimed:
    item = json.loads(text(raw))
    return Claimed(item["id"], int(item["fence"]), item)


class JobLeases:
    """A job's turn for a merchant (lease_acquire.lua): one replica sweeps, the others skip."""

    def __init__(self, redis: Redis) -> None:
        self._scripts = Scripts(redis, _SCRIPTS)

    async def acquire(self, job: str, merchant: str, owner: str, lease_ms: int) -> int:
        key = f"mesh:joblease:{hash_tag('job', job, merchant_part(merchant))}"
        return int(await self._scripts("lease_acquire", [key], [owner, now_ms(), lease_ms]))
