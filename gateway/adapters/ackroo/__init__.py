"""Ackroo gift API adapter (wire.py, translate.py, client.py, provider.py).

Profile: `base_url`, `credentials: {token}` (Bearer), `options: {device_id, clerk_id, currency
(USD)}`, `timeout_seconds`, `hold_emulation`.
"""

from __future__ import annotations

from gateway.adapters.ackroo.provider import AckrooProvider
from gateway.adapters.journal import RedisReferenceJournal


def build(profile, *, breaker=None, tracer_provider=None, transport=None, redis=None) -> AckrooProvider:
    journal = RedisReferenceJournal(redis, "ackroo") if redis is not None else None
    return AckrooProvider.from_profile(
        profile, breaker=breaker, tracer_provider=tracer_provider, transport=transport, journal=journal,
    )


__all__ = ["AckrooProvider", "build"]
