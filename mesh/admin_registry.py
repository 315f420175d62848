"""Merchants added at runtime (`giftcard merchant add`), as this process learns of them.

Config merchants are fixed at start-up; a merchant added with the admin CLI lives in Redis
(`common.auth.ApiKeyStore`). When one of its keys first authenticates here, the authenticator
hands its profile to `RuntimeMerchants.learn`, which adds it to this process's merchant settings
(so every service reading `settings.merchants` sees it) and lets `RuntimeRouter` route its cards.
Config always wins: a runtime record never replaces a configured merchant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping

from common.cards import CardId
from common.config import MerchantSettings
from common.errors import MeshError
from gateway.ports import Provider
from gateway.routing import ProviderRouter

log = logging.getLogger("giftcard.admin")


class RuntimeMerchants:
    def __init__(self, merchants: MutableMapping[str, MerchantSettings]) -> None:
        self._merchants = merchants
        self.learned: set[str] = set()

    def learn(self, merchant_id: str, profile: dict) -> None:
        if merchant_id in self._merchants:
            return
        try:
            settings = MerchantSettings(**profile)
        except ValueError:
            log.warning("runtime merchant has an invalid profile", extra={"merchant": merchant_id})
            return
        self._merchants[merchant_id] = settings
        self.learned.add(merchant_id)

    def get(self, merchant_id: str) -> MerchantSettings | None:
        return self._merchants.get(merchant_id) if merchant_id in self.learned else None


class RuntimeRouter:
    """`ProviderRouter` over the configured merchants, plus the runtime merchants learned so far."""

    def __init__(
        self, configured: ProviderRouter, merchants: RuntimeMerchants,
        factory: Callable[[str, object], Provider],
    ) -> None:
        self._configured = configured
        self._merchants = merchants
        self._factory = factory
        self._learned: dict[str, ProviderRouter] = {}

    def route(self, merchant_id: str, card: CardId | None = None) -> Provider:
        try:
            return self._configured.route(merchant_id, card)
        except MeshError as error:
            if error.reason != "MERCHANT_NOT_CONFIGURED":
                raise
            router = self._learned.get(merchant_id)
            if router is None:
                settings = self._merchants.get(merchant_id)
                if settings is None:
                    raise
                router = self._learned[merchant_id] = ProviderRouter({merchant_id: settings}, self._factory)
            return router.route(merchant_id, card)
