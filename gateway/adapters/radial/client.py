"""Radial calls through the shared `commit` choke point (gateway/adapters/http.py).

Radial accepts every RequestId once and never replays an answer (WIRE.md): resending the same
body after a lost reply gets `DuplicateRequestId` and applies nothing, so no call is marked
idempotent for the base's blind resend; the provider retries Radial's own `Timeout` answer with a
NEW RequestId instead (the document's rule), which is safe because a `Timeout` applied nothing.
"""

from __future__ import annotations

import httpx

from common.config import ProviderProfile
from gateway.adapters.http import VendorHttp
from gateway.adapters.radial import translate, wire

SENSITIVE = frozenset({"PaymentAccountUniqueId", "Pin", "CardClaimLink"})


class RadialClient:
    def __init__(self, http: VendorHttp, store_id: str) -> None:
        self._http = http
        self._base = wire.BASE_PATH.format(store_id=store_id)

    @classmethod
    def from_profile(cls, profile: ProviderProfile, *, breaker=None, tracer_provider=None, transport=None):
        key = profile.credentials.get("api_key")
        if key is None:
            raise ValueError("provider radial: credentials.api_key is required")
        store_id = profile.options.get("store_id")
        if not store_id:
            raise ValueError("provider radial: options.store_id is required")
        return cls(VendorHttp(
            "radial", profile, headers={"apiKey": key.get_secret_value()}, breaker=breaker,
            tracer_provider=tracer_provider, transport=transport, sensitive_fields=SENSITIVE,
        ), str(store_id))

    @property
    def http(self) -> VendorHttp:
        return self._http

    async def aclose(self) -> None:
        await self._http.aclose()

    async def commit(self, operation: str, request: wire.RadialRequest) -> wire.Reply:
        """Send one Radial request; any reply below 500 is parsed (Fail replies come as 200, 400,
        401 or 404 with the same shape)."""
        reply = await self._http.commit(operation, self._base + request.OPERATION, request.body(), idempotent=False)
        return translate.parse_reply(operation, reply.body)
