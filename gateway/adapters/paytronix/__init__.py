"""Paytronix gift service adapter (wire.py, translate.py, client.py, provider.py).

Profile: `base_url`, `credentials: {username, password}` (HTTP Basic), `options: {merchant_id,
store_code, currency (USD), terminal_id, cashier}`, `timeout_seconds`, `hold_emulation`.
`build(..., redis=...)` journals writes in Redis, so a resend after a lost reply is answered
after a restart too (see provider.py).
"""

from __future__ import annotations

from gateway.adapters.journal import RedisReferenceJournal
from gateway.adapters.paytronix.provider import PaytronixProvider


def build(profile, *, breaker=None, tracer_provider=None, transport=None, redis=None) -> PaytronixProvider:
    journal = RedisReferenceJournal(redis, "paytronix") if redis is not None else None
    return PaytronixProvider.from_profile(
        profile, breaker=breaker, tracer_provider=tracer_provider, transport=transport, journal=journal,
    )


__all__ = ["PaytronixProvider", "build"]
