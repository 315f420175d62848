"""Composition root of the settlement service: its queues, flows and scheduler from the runtime's
shared dependencies (Redis, sealer, idempotency, settings, the gateway client)."""

from __future__ import annotations

import os
import secrets
import socket

from common.service_client import GrpcClient
from common.telemetry import SettlementMetrics
from services.authorization.checkout import CheckoutFlow, CheckoutStore
from services.authorization.logic import AuthorizationLogic
from services.authorization.server import Recovery
from services.fulfillment.activations import ActivationStore
from services.fulfillment.logic import FulfillmentLogic
from services.settlement.logic import Limits, SettlementLogic
from services.shared.work_queue import JobLeases, WorkQueue
from services.settlement.scheduler import Scheduler, SettlementJobs
from services.settlement.servicer import SettlementServicer
from services.shared.holds import HoldStore
from services.shared.intents import IntentLog
from services.shared.keys import IdDeriver
from services.shared.transactions import TransactionStore

# A capture whose outcome was unknown (timeout) is sent again after this long.
RETRY_MS = 5_000


def worker_id() -> str:
    """Names this process in leases (for operators reading Redis); not a secret."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class ResolverRecovery:
    """The resolver job's work: authorization's Recovery (stale intents, unfinished checkouts), then
    e-gift lines a crash left after allocation (FulfillmentLogic.resume). Fulfillment's resume needs
    only Redis, the sealer and the gateway client, so settlement composes its own FulfillmentLogic
    the way it composes AuthorizationLogic: it works in all-in-one and in microservices mode alike
    (there the gateway is called with the job key or security.internal_token)."""

    def __init__(self, recovery: Recovery, fulfillment: FulfillmentLogic) -> None:
        self._recovery = recovery
        self._fulfillment = fulfillment

    async def run(self, merchant: str, older_than_seconds: float) -> dict[str, int]:
        counts = await self._recovery.run(merchant, older_than_seconds)
        counts["egift_lines"] = await self._fulfillment.resume(merchant, older_than_seconds)
        return counts


def build_settlement(runtime) -> tuple[SettlementServicer, Scheduler]:
    settings = runtime.settings
    config = settings.settlement
    gateway = runtime.client("gateway")
    ids = IdDeriver(settings.card_hash_key)
    holds = HoldStore(runtime.redis, runtime.sealer)
    authorization = AuthorizationLogic(
        gateway, holds, TransactionStore(runtime.redis, runtime.sealer), IntentLog(runtime.redis, runtime.sealer), ids,
    )
    recovery = ResolverRecovery(
        Recovery(authorization, CheckoutFlow(gateway, CheckoutStore(runtime.redis, runtime.sealer), authorization)),
        FulfillmentLogic(gateway, ActivationStore(runtime.redis), runtime.sealer, settings.card_hash_key),
    )
    metrics = SettlementMetrics(runtime.registry)
    runtime.telemetry.scrape.add_jobs_source(metrics.backlog)
    logic = SettlementLogic(
        gateway, holds, authorization, WorkQueue(runtime.redis, "stl"), WorkQueue(runtime.redis, "rvs"), ids,
        Limits(lease_ms=int(config.lease_seconds * 1000), concurrency=config.concurrency, retry_ms=RETRY_MS),
        worker_id(), metrics,
    )
    jobs = SettlementJobs(logic, recovery, JobLeases(runtime.redis), runtime.redis, config, metrics)
    remote = isinstance(gateway, GrpcClient)

    def credentials(merchant: str) -> str | None:
        """"" = act as the mesh itself (in-process, or over gRPC with security.internal_token)."""
        key = config.job_api_keys.get(merchant)
        if key is not None:
            return f"Bearer {key.get_secret_value()}"
        return "" if not remote or runtime.internal_token else None

    async def merchants() -> list[str]:
        found = set(settings.merchants) | set(await runtime.key_store.merchants())
        return sorted(found)

    scheduler = Scheduler(jobs, config, merchants, credentials, metrics)
    return SettlementServicer(logic, runtime.idempotency, settings), scheduler
