"""Clutch calls through the shared `commit` choke point (gateway/adapters/http.py).

Every write carries `requestRef`, which Clutch replays for the same body (WIRE.md), so writes are
`idempotent` for the base: a resend after a lost reply answers the first outcome and moves nothing
twice. balance is a read.
"""

from __future__ import annotations

import httpx

from common.config import ProviderProfile
from gateway.adapters.clutch import translate, wire
from gateway.adapters.http import VendorHttp

SENSITIVE = frozenset({"cardNumber", "pin"})


class ClutchClient:
    def __init__(self, http: VendorHttp) -> None:
        self._http = http

    @classmethod
    def from_profile(cls, profile: ProviderProfile, *, breaker=None, tracer_provider=None, transport=None):
        creds = profile.credentials
        missing = {"api_key", "api_secret"} - set(creds)
        if missing:
            raise ValueError(f"provider clutch: credentials {sorted(missing)} are required")
        missing = [name for name in wire.CONTEXT_HEADERS if not profile.options.get(name)]
        if missing:
            raise ValueError(f"provider clutch: options {missing} are required")
        auth = httpx.BasicAuth(creds["api_key"].get_secret_value(), creds["api_secret"].get_secret_value())
        headers = {name: str(profile.options[name]) for name in wire.CONTEXT_HEADERS}
        return cls(VendorHttp(
            "clutch", profile, auth=auth, headers=headers, breaker=breaker, tracer_provider=tracer_provider,
            transport=transport, sensitive_fields=SENSITIVE,
        ))

    @property
    def http(self) -> VendorHttp:
        return self._http

    async def aclose(self) -> None:
        await self._http.aclose()

    async def commit(self, operation: str, request: wire.ClutchRequest) -> wire.Reply:
        """Send one Clutch request; an error reply (4xx) is raised through translate.ERRORS."""
        reply = await self._http.commit(operation, wire.BASE_PATH + request.PATH, request.body(), idempotent=True)
        parsed = translate.parse_reply(operation, reply.body)
        if not parsed.success:
            raise translate.error(parsed, operation)
        return parsed
