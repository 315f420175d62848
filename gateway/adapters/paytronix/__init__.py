"""Paytronix gift service adapter (wire.py, translate.py, client.py, provider.py).

Profile: `base_url`, `credentials: {username, password}` (HTTP Basic), `options: {merchant_id,
store_code, currency (USD), terminal_id, cashier}`, `timeout_seconds`, `hold_emulation`.
"""

from __future__ import annotations

from gateway.adapters.paytronix.provider import PaytronixProvider


def build(profile, *, breaker=None, tracer_provider=None, transport=None) -> PaytronixProvider:
    return PaytronixProvider.from_profile(profile, breaker=breaker, tracer_provider=tracer_provider, transport=transport)


__all__ = ["PaytronixProvider", "build"]
