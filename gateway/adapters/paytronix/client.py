"""Paytronix calls through the shared `commit` choke point: path and retry safety per operation.

Writes that carry `externalTransactionId` are resendable: Paytronix refuses a second request with
the same id (`transaction.duplicate_external_id`), so a resend can never apply twice. balance is a
read; reverse is at most once per transaction at Paytronix. exchange carries no caller id, so
it is sent once.
"""

from __future__ import annotations

from typing import Any

from common.config import ProviderProfile
from gateway.adapters.http import VendorHttp, VendorReply
from gateway.adapters.paytronix import wire

SENSITIVE = frozenset({"printedCardNumber", "trackInfo", "cardRegCode", "barcode", "phoneNumber", "accountToken"})


class PaytronixClient:
    def __init__(self, http: VendorHttp) -> None:
        self._http = http

    @classmethod
    def from_profile(cls, profile: ProviderProfile, *, breaker=None, tracer_provider=None, transport=None):
        import httpx

        creds = profile.credentials
        missing = {"username", "password"} - set(creds)
        if missing:
            raise ValueError(f"provider paytronix: credentials {sorted(missing)} are required")
        auth = httpx.BasicAuth(creds["username"].get_secret_value(), creds["password"].get_secret_value())
        return cls(VendorHttp(
            "paytronix", profile, auth=auth, breaker=breaker, tracer_provider=tracer_provider,
            transport=transport, sensitive_fields=SENSITIVE,
        ))

    @property
    def http(self) -> VendorHttp:
        return self._http

    async def aclose(self) -> None:
        await self._http.aclose()

    async def balance(self, payload: dict[str, Any]) -> VendorReply:
        return await self._http.commit("balance", wire.BALANCE, payload, idempotent=True)

    async def redeem(self, payload: dict[str, Any]) -> VendorReply:
        return await self._http.commit("redeem", wire.REDEEM, payload, idempotent=True)

    async def sell(self, payload: dict[str, Any]) -> VendorReply:
        return await self._http.commit("activate", wire.SELL, payload, idempotent=True)

    async def reload(self, payload: dict[str, Any]) -> VendorReply:
        return await self._http.commit("credit", wire.RELOAD, payload, idempotent=True)

    async def cash_out(self, payload: dict[str, Any]) -> VendorReply:
        return await self._http.commit("cash_out", wire.CASH_OUT, payload, idempotent=True)

    async def reverse(self, payload: dict[str, Any]) -> VendorReply:
        # Paytronix reverses a transaction at most once: a resent reversal cannot undo twice.
        return await self._http.commit("reverse", wire.REVERSE, payload, idempotent=True)

    async def exchange(self, payload: dict[str, Any]) -> VendorReply:
        return await self._http.commit("exchange", wire.EXCHANGE, payload, idempotent=False)
