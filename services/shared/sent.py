"""Provider writes sent at least once, by their reference.

A request retried after an unknown outcome runs its handler again. Checks of the card's current
state made before the provider call (active? under the balance limit?) may then refuse it
although the first attempt applied and is why the state changed (the card was reloaded, or
closed by an exchange since). So a handler marks the reference just before the provider call and,
on a retry that finds the mark, skips those checks and goes to the provider, whose adapter answers
a resend with what the first attempt did.

    mesh:sent:{sent:<merchant>:<bucket>}:<reference_id>   string "1", expires with the idempotency
                                                           record it backs (24 h by default)
"""

from __future__ import annotations

from redis.asyncio import Redis

from services.shared.keys import bucket_of, bucket_tag

DEFAULT_TTL_SECONDS = 24 * 60 * 60


class SentMarks:
    def __init__(self, redis: Redis, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        self._redis = redis
        self._ttl_ms = ttl_seconds * 1000

    @staticmethod
    def key(merchant: str, reference_id: str) -> str:
        return f"mesh:sent:{bucket_tag('sent', merchant, bucket_of(reference_id))}:{reference_id}"

    async def mark(self, merchant: str, reference_id: str) -> None:
        await self._redis.set(self.key(merchant, reference_id), "1", px=self._ttl_ms)

    async def was_sent(self, merchant: str, reference_id: str) -> bool:
        return bool(await self._redis.exists(self.key(merchant, reference_id)))
