"""Order -> payments index: every redemption and capture of an order, in payment order.

    mesh:order:{order:<merchant>:<order_id>}            zset  payment id -> sequence (1, 2, ...)
    mesh:order:{order:<merchant>:<order_id>}:seq        last sequence given out
    mesh:order:{order:<merchant>:<order_id>}:plans      hash  refund request id -> JSON split plan

Only ids are stored (`txn_...`, `stl_...`), never card data. The index has its own hash tag per
(merchant, order_id), so it cannot be written in the same script as a payment's record on Redis
Cluster. It is therefore written *before* the record (before the provider call): the index is a
superset of the order's payments, and a reader takes each payment's state from its own record
(pending, declined, voided and unsettled entries are simply not refundable). No approved payment
can be missing from it, whatever crashes in between.
"""

from __future__ import annotations

import json

from redis.asyncio import Redis

from common.redis_scripts import hash_tag
from services.shared.keys import merchant_part
from services.shared.scripts import Scripts, text


class OrderIndex:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._scripts = Scripts(redis)

    @staticmethod
    def key(merchant: str, order_id: str) -> str:
        return f"mesh:order:{hash_tag('order', merchant_part(merchant), order_id)}"

    async def add(self, merchant: str, order_id: str, payment_id: str) -> int:
        """Index a payment of the order (idempotent); returns its sequence in the order."""
        key = self.key(merchant, order_id)
        return int(await self._scripts("order_add", [key, f"{key}:seq"], [payment_id]))

    async def payments(self, merchant: str, order_id: str) -> list[tuple[str, int]]:
        """[(payment id, sequence)], oldest first."""
        found = await self._redis.zrange(self.key(merchant, order_id), 0, -1, withscores=True)
        return [(text(member), int(score)) for member, score in found]

    # A refund by order stores its split before any part is reserved, so the retry of the same
    # request runs the same parts even when other refunds changed what is refundable meanwhile.

    async def plan(self, merchant: str, order_id: str, request_id: str) -> dict | None:
        raw = await self._redis.hget(f"{self.key(merchant, order_id)}:plans", request_id)
        return json.loads(raw) if raw is not None else None

    async def save_plan(self, merchant: str, order_id: str, request_id: str, plan: dict) -> dict:
        """Store the plan unless one is there; returns the stored one."""
        key = f"{self.key(merchant, order_id)}:plans"
        if await self._redis.hsetnx(key, request_id, json.dumps(plan, sort_keys=True)):
            return plan
        return json.loads(await self._redis.hget(key, request_id))

    async def drop_plan(self, merchant: str, order_id: str, request_id: str) -> None:
        await self._redis.hdel(f"{self.key(merchant, order_id)}:plans", request_id)
