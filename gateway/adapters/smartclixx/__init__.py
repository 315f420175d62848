"""SmartClixx gift card adapter (wire.py, translate.py, client.py, provider.py).

Profile: `base_url`, `credentials: {api_key}` (header `X-Api-Key`), `options: {currency (USD)}`,
`timeout_seconds`. `build(..., redis=...)` journals authorizations in Redis for reversal by
reference.
"""

from __future__ import annotations

from gateway.adapters.journal import RedisReferenceJournal
from gateway.adapters.smartclixx.provider import SmartClixxProvider


def build(profile, *, breaker=None, tracer_provider=None, transport=None, redis=None) -> SmartClixxProvider:
    journal = RedisReferenceJournal(redis, "smartclixx") if redis is not None else None
    return SmartClixxProvider.from_profile(
        profile, breaker=breaker, tracer_provider=tracer_provider, transport=transport, journal=journal,
    )


__all__ = ["SmartClixxProvider", "build"]
