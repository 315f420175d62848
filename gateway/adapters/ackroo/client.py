"""Ackroo calls through the shared `commit` choke point.

Ackroo takes no caller reference and offers no transaction lookup (documented gap, WIRE.md): a
write that may have reached Ackroo is never resent. Only `/device/card` (a read) and
`/transaction/reversal` (at most once per transaction) are resendable.
"""

from __future__ import annotations

from typing import Any

from common.config import ProviderProfile
from gateway.adapters.ackroo import wire
from gateway.adapters.http import VendorHttp, VendorReply

SENSITIVE = frozenset({"cardnumber"})


class AckrooClient:
    def __init__(self, http: VendorHttp) -> None:
        self._http = http

    @classmethod
    def from_profile(cls, profile: ProviderProfile, *, breaker=None, tracer_provider=None, transport=None):
        token = profile.credentials.get("token")
        if token is None:
            raise ValueError("provider ackroo: credentials.token is required")
        return cls(VendorHttp(
            "ackroo", profile, headers={"Authorization": f"Bearer {token.get_secret_value()}"},
            breaker=breaker, tracer_provider=tracer_provider, transport=transport, sensitive_fields=SENSITIVE,
        ))

    @property
    def http(self) -> VendorHttp:
        return self._http

    async def aclose(self) -> None:
        await self._http.aclose()

    async def card(self, payload: dict[str, Any]) -> VendorReply:
        return await self._http.commit("balance", wire.CARD, payload, idempotent=True)

    async def write(self, operation: str, path: str, payload: dict[str, Any]) -> VendorReply:
        return await self._http.commit(operation, path, payload, idempotent=False)

    async def reversal(self, payload: dict[str, Any]) -> VendorReply:
        return await self._http.commit("reverse", wire.REVERSAL, payload, idempotent=True)
