"""Composition root of the authorization service: builds its stores and flows from the runtime's
shared dependencies (Redis, sealer, idempotency, settings, the gateway client)."""

from __future__ import annotations

import asyncio
import logging

from services.authorization.checkout import CheckoutFlow, CheckoutStore
from services.authorization.logic import AuthorizationLogic
from services.authorization.servicer import AuthorizationServicer
from services.shared.background import merchant_call
from services.shared.holds import HoldStore
from services.shared.intents import IntentLog
from services.shared.keys import IdDeriver
from services.shared.transactions import TransactionStore

log = logging.getLogger("giftcard.authorization")

# Work left unfinished for longer than this is someone else's crash, not a live request (the
# idempotency lease of a live request is renewed every third of its length).
RECOVERY_AGE_SECONDS = 60.0


class Recovery:
    """Finishes what a crash left: stale write-ahead intents (resolver) and unfinished checkouts.

    `run(merchant)` is what settlement's scheduler calls; `on_call(merchant)` starts it once per
    merchant and process in the background on that merchant's first call, with that caller's
    credentials, so it also works when the gateway is reached over gRPC (a background job has no
    merchant key of its own).
    """

    def __init__(self, logic: AuthorizationLogic, checkout: CheckoutFlow) -> None:
        self._logic = logic
        self._checkout = checkout
        self._started: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    async def run(self, merchant: str, older_than_seconds: float = RECOVERY_AGE_SECONDS) -> dict[str, int]:
        counts = await self._logic.resolve_pending(merchant, older_than_seconds)
        counts["checkouts"] = await self._checkout.resume(merchant, older_than_seconds)
        return counts

    def on_call(self, merchant: str, authorization: str) -> None:
        if merchant in self._started:
            return
        self._started.add(merchant)

        async def sweep() -> None:
            with merchant_call(merchant, 120.0, authorization):
                try:
                    await self.run(merchant)
                except Exception:  # background work: log it, never let it escape unobserved
                    log.warning("recovery sweep failed; the next call or the scheduler retries", exc_info=True)
                    self._started.discard(merchant)

        task = asyncio.ensure_future(sweep())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def build_authorization(runtime) -> AuthorizationServicer:
    gateway = runtime.client("gateway")
    ids = IdDeriver(runtime.settings.card_hash_key)
    logic = AuthorizationLogic(
        gateway, HoldStore(runtime.redis, runtime.sealer), TransactionStore(runtime.redis, runtime.sealer),
        IntentLog(runtime.redis, runtime.sealer), ids,
    )
    checkout = CheckoutFlow(gateway, CheckoutStore(runtime.redis, runtime.sealer), logic)
    return AuthorizationServicer(logic, checkout, runtime.idempotency, runtime.settings, Recovery(logic, checkout))
