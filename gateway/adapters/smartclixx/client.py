"""SmartClixx calls through the shared `commit` choke point (gateway/adapters/http.py).

Every write carries `requestId`, which SmartClixx replays for the same body (WIRE.md), so writes
are `idempotent` for the base: a resend after a lost reply answers the first outcome and moves
nothing twice. cards/balance is a read.
"""

from __future__ import annotations

from common.config import ProviderProfile
from gateway.adapters.http import VendorHttp
from gateway.adapters.smartclixx import translate, wire

SENSITIVE = frozenset({"cardNumber", "cvv2"})


class SmartClixxClient:
    def __init__(self, http: VendorHttp) -> None:
        self._http = http

    @classmethod
    def from_profile(cls, profile: ProviderProfile, *, breaker=None, tracer_provider=None, transport=None):
        key = profile.credentials.get("api_key")
        if key is None:
            raise ValueError("provider smartclixx: credentials.api_key is required")
        return cls(VendorHttp(
            "smartclixx", profile, headers={"X-Api-Key": key.get_secret_value()}, breaker=breaker,
            tracer_provider=tracer_provider, transport=transport, sensitive_fields=SENSITIVE,
        ))

    @property
    def http(self) -> VendorHttp:
        return self._http

    async def aclose(self) -> None:
        await self._http.aclose()

    async def commit(self, operation: str, request: wire.SmartClixxRequest) -> wire.Reply:
        """Send one SmartClixx request; DECLINED / ERROR replies are raised through translate.ERRORS."""
        reply = await self._http.commit(operation, wire.BASE_PATH + request.PATH, request.body(), idempotent=True)
        parsed = translate.parse_reply(operation, reply.body)
        if parsed.status != wire.APPROVED:
            raise translate.error(parsed, operation)
        return parsed
