"""Builds the provider adapter for each merchant profile (the gateway's own composition)."""

from __future__ import annotations

import importlib
import inspect

from common.config import ProviderProfile, Settings
from gateway.adapters.breaker import CircuitBreaker
from gateway.adapters.http import breaker_from_profile
from gateway.adapters.native.ledger import NativeLedger
from gateway.adapters.native.provider import NativeProvider
from gateway.emulation import EmulatedHolds
from gateway.ports import Provider


class ProviderFactory:
    def __init__(self, redis, settings: Settings, *, provider_metrics=None, tracer_provider=None) -> None:
        self.native_ledger = NativeLedger(redis, settings.card_hash_key)
        self._native = NativeProvider.from_settings(self.native_ledger, redis, settings)
        self._redis = redis
        self._card_hash_key = settings.card_hash_key
        self._provider_metrics = provider_metrics
        self._tracer_provider = tracer_provider
        # One breaker per vendor endpoint, shared by every merchant profile that calls it.
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._vendor_adapters: list = []

    def create(self, merchant_id: str, profile: ProviderProfile) -> Provider:
        if profile.provider == "native":
            return self._native
        # A vendor adapter package gateway/adapters/<vendor>/ exposes
        # build(profile, *, breaker, tracer_provider) -> Provider (see gateway/adapters/http.py).
        module_name = f"gateway.adapters.{profile.provider}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            raise ValueError(
                f"merchant {merchant_id}: provider {profile.provider} has no adapter in this build"
            ) from None
        if not profile.base_url:
            raise ValueError(f"merchant {merchant_id}: provider {profile.provider} needs base_url")
        extra = {}
        if "redis" in inspect.signature(module.build).parameters:
            # Adapters that undo by amount journal what they send (gateway/adapters/journal.py).
            extra["redis"] = self._redis
        adapter = module.build(profile, breaker=self._breaker(profile), tracer_provider=self._tracer_provider, **extra)
        self._vendor_adapters.append(adapter)
        if adapter.capabilities.hold_mode != "native":
            return EmulatedHolds(adapter, self._redis, self._card_hash_key, profile.hold_emulation)
        return adapter

    def _breaker(self, profile: ProviderProfile) -> CircuitBreaker:
        key = (profile.provider, (profile.base_url or "").rstrip("/"))
        breaker = self._breakers.get(key)
        if breaker is None:
            on_state = self._provider_metrics.set_breaker_state if self._provider_metrics is not None else None
            breaker = self._breakers[key] = breaker_from_profile(profile.provider, profile, on_state=on_state)
        return breaker

    async def aclose(self) -> None:
        """Close the vendor adapters' pooled HTTP clients."""
        for adapter in self._vendor_adapters:
            close = getattr(adapter, "aclose", None)
            if close is not None:
                await close()
        self._vendor_adapters.clear()
