"""Builds the provider adapter for each merchant profile (the gateway's own composition)."""

from __future__ import annotations

from common.config import ProviderProfile, Settings
from gateway.adapters.native.ledger import NativeLedger
from gateway.adapters.native.provider import NativeProvider
from gateway.ports import Provider


class ProviderFactory:
    def __init__(self, redis, settings: Settings) -> None:
        self.native_ledger = NativeLedger(redis, settings.card_hash_key)
        self._native = NativeProvider.from_settings(self.native_ledger, redis, settings)

    def create(self, merchant_id: str, profile: ProviderProfile) -> Provider:
        if profile.provider == "native":
            return self._native
        raise ValueError(
            f"merchant {merchant_id}: provider {profile.provider} has no adapter in this build"
        )
