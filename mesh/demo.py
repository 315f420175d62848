"""Demo cards for the dev merchant, so the README's grpcurl examples work right after `make run`."""

from __future__ import annotations

import logging

from common.config import DemoSettings
from common.errors import CARD_ALREADY_EXISTS, MeshError

log = logging.getLogger("giftcard.demo")


async def seed_demo_cards(ledger, demo: DemoSettings) -> int:
    """Create the configured demo cards that do not exist yet; existing ones keep their state."""
    created = 0
    for card in demo.cards:
        try:
            await ledger.create_card(
                demo.merchant_id, card.card_number, card.currency, pin=card.pin,
                balance_minor=card.balance_minor, active=card.active,
            )
            created += 1
        except MeshError as error:
            if error.reason != CARD_ALREADY_EXISTS:
                raise
    log.info("demo cards ready", extra={"cards_created": created, "cards_configured": len(demo.cards)})
    return created
