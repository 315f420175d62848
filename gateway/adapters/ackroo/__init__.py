"""Ackroo gift API adapter (wire.py, translate.py, client.py, provider.py).

Profile: `base_url`, `credentials: {token}` (Bearer), `options: {device_id, clerk_id, currency
(USD)}`, `timeout_seconds`, `hold_emulation`.
"""

from __future__ import annotations

from gateway.adapters.ackroo.provider import AckrooProvider


def build(profile, *, breaker=None, tracer_provider=None, transport=None) -> AckrooProvider:
    return AckrooProvider.from_profile(profile, breaker=breaker, tracer_provider=tracer_provider, transport=transport)


__all__ = ["AckrooProvider", "build"]
