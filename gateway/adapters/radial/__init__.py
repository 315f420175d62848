"""Radial storedvalue adapter (wire.py, translate.py, client.py, provider.py).

Profile: `base_url`, `credentials: {api_key}` (header `apiKey`), `options: {store_id, currency
(USD), timeout_retries (3)}`, `timeout_seconds`, `hold_emulation` (Radial has no holds).
`build(..., redis=...)` journals redemptions in Redis for reversal by reference after a restart.
"""

from __future__ import annotations

from gateway.adapters.journal import RedisReferenceJournal
from gateway.adapters.radial.provider import RadialProvider


def build(profile, *, breaker=None, tracer_provider=None, transport=None, redis=None) -> RadialProvider:
    journal = RedisReferenceJournal(redis, "radial") if redis is not None else None
    return RadialProvider.from_profile(
        profile, breaker=breaker, tracer_provider=tracer_provider, transport=transport, journal=journal,
    )


__all__ = ["RadialProvider", "build"]
