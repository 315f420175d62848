"""Which provider serves a merchant's card: the merchant's provider profiles, matched by card number
prefix (BIN range), longest prefix first; a profile with no prefixes catches every other card."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import grpc

from common.cards import CardId
from common.config import MerchantSettings, ProviderProfile
from common.errors import MeshError
from gateway.ports import Provider

ProviderFactory = Callable[[str, ProviderProfile], Provider]


class ProviderRouter:
    def __init__(self, merchants: Mapping[str, MerchantSettings], factory: ProviderFactory) -> None:
        self._routes: dict[str, list[tuple[str, Provider]]] = {}
        for merchant_id, merchant in merchants.items():
            routes: list[tuple[str, Provider]] = []
            for profile in merchant.providers:
                provider = factory(merchant_id, profile)
                for prefix in profile.card_prefixes or [""]:
                    routes.append((prefix, provider))
            routes.sort(key=lambda route: len(route[0]), reverse=True)
            self._routes[merchant_id] = routes

    def route(self, merchant_id: str, card: CardId | None = None) -> Provider:
        routes = self._routes.get(merchant_id)
        if not routes:
            raise MeshError(grpc.StatusCode.PERMISSION_DENIED, "MERCHANT_NOT_CONFIGURED", "merchant has no provider configured")
        number = card.value if card is not None and card.kind == "card_number" else ""
        for prefix, provider in routes:
            if number.startswith(prefix):
                return provider
        raise MeshError(
            grpc.StatusCode.FAILED_PRECONDITION, "CARD_PROGRAM_NOT_ACCEPTED",
            "no provider profile of this merchant accepts this card",
        )
