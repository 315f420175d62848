"""Clutch gift card adapter (wire.py, translate.py, client.py, provider.py).

Profile: `base_url`, `credentials: {api_key, api_secret}` (HTTP Basic), `options: {brand,
location, terminal (headers on every call), currency (USD)}`, `timeout_seconds`.
`build(..., redis=...)` journals holds / redemptions in Redis for reversal by reference.
"""

from __future__ import annotations

from gateway.adapters.clutch.provider import ClutchProvider
from gateway.adapters.journal import RedisReferenceJournal


def build(profile, *, breaker=None, tracer_provider=None, transport=None, redis=None) -> ClutchProvider:
    journal = RedisReferenceJournal(redis, "clutch") if redis is not None else None
    return ClutchProvider.from_profile(
        profile, breaker=breaker, tracer_provider=tracer_provider, transport=transport, journal=journal,
    )


__all__ = ["ClutchProvider", "build"]
