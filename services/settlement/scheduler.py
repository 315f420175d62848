"""The settlement service's scheduler: batch settlement, scheduled reversals, hold expiry and the
outcome resolver, for every merchant, on the intervals in `settings.settlement`.

Every replica of the settlement service (and the all-in-one process) runs one. They need no
leader: queued captures and reversals are claimed item by item under leases with fencing tokens
(queue.py), the expiry sweep and the resolver take a per-merchant turn under a lease
(lease_acquire.lua), and every provider call carries a deterministic reference_id, so two replicas
at once, or one taking over from a dead one, never move money twice.

A job acts for a merchant without a caller. In-process (all-in-one) the gateway needs no
credentials; over gRPC it is given the merchant's key from `settlement.job_api_keys`, and a
merchant without one is skipped (logged once), since the mesh keeps no merchant keys of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from common.config import SettlementSettings
from common.errors import MeshError
from services.settlement.logic import SettlementLogic
from services.shared.work_queue import JobLeases
from services.shared.background import merchant_call
from services.shared.holds import now_ms
from services.shared.keys import INDEX_BUCKETS, bucket_tag

log = logging.getLogger("giftcard.settlement.scheduler")

JOBS = ("batch", "reversals", "expiry", "resolver")


class SettlementJobs:
    """One run of each job for one merchant (also what tests call directly)."""

    def __init__(self, logic: SettlementLogic, recovery, leases: JobLeases, redis, settings: SettlementSettings,
                 metrics=None) -> None:
        self.logic = logic
        self._recovery = recovery
        self._leases = leases
        self._redis = redis
        self._settings = settings
        self._metrics = metrics

    @property
    def _lease_ms(self) -> int:
        return int(self._settings.lease_seconds * 1000)

    async def batch(self, merchant: str) -> list[dict]:
        done = await self.logic.run_batch(merchant, self._settings.batch_size)
        retention_ms = self._settings.retention_seconds * 1000
        await self.logic.settlements.purge(merchant, retention_ms)
        await self.logic.reversals.purge(merchant, retention_ms)
        return done

    async def reversals(self, merchant: str) -> list[dict]:
        return await self.logic.run_reversals(merchant, self._settings.batch_size)

    async def expiry(self, merchant: str) -> int:
        if not await self._leases.acquire("expiry", merchant, self.logic.worker_id, self._lease_ms):
            return 0
        return await self.logic.expire_holds(merchant, self._settings.expiry_sweep_limit)

    async def resolver(self, merchant: str) -> dict[str, int]:
        """Intents with no recorded outcome after the grace period, and unfinished checkouts,
        through the authorization service's own recovery routine."""
        if not await self._leases.acquire("resolver", merchant, self.logic.worker_id, self._lease_ms):
            return {}
        return await self._recovery.run(merchant, self._settings.resolver_grace_seconds)

    async def oldest_intent_age(self, merchant: str) -> float:
        oldest: int | None = None
        for bucket in range(INDEX_BUCKETS):
            first = await self._redis.zrange(f"mesh:intents:{bucket_tag('intent', merchant, bucket)}", 0, 0,
                                             withscores=True)
            if first and (oldest is None or first[0][1] < oldest):
                oldest = int(first[0][1])
        return 0.0 if oldest is None else max(now_ms() - oldest, 0) / 1000

    async def depth(self, merchant: str) -> tuple[int, int]:
        captures, _ = await self.logic.settlements.depth(merchant)
        reversals, _ = await self.logic.reversals.depth(merchant)
        return captures, reversals


class Scheduler:
    def __init__(
        self, jobs: SettlementJobs, settings: SettlementSettings, merchants: Callable[[], Awaitable[list[str]]],
        credentials: Callable[[str], str | None], metrics=None,
    ) -> None:
        self.jobs = jobs
        self._settings = settings
        self._merchants = merchants
        self._credentials = credentials
        self._metrics = metrics
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self._last: dict[str, float] = {}
        self._warned: set[str] = set()

    def start(self) -> None:
        if self._task is None:
            self._stopping = asyncio.Event()
            self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        """Stop between jobs, or cancel the one running (safe: every step is resumable)."""
        if self._task is None:
            return
        self._stopping.set()
        self._task.cancel()
        # Some client libraries absorb a cancellation mid-command; the flag ends the loop anyway.
        await asyncio.wait([self._task], timeout=10)
        self._task = None

    def _interval(self, job: str) -> float:
        return {
            "batch": self._settings.batch_interval_seconds,
            "reversals": self._settings.reversal_interval_seconds,
            "expiry": self._settings.expiry_sweep_interval_seconds,
            "resolver": self._settings.resolver_interval_seconds,
        }[job]

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            for job in JOBS:
                if self._stopping.is_set():
                    return
                if now - self._last.get(job, float("-inf")) >= self._interval(job):
                    self._last[job] = now
                    await self.run(job)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._settings.tick_seconds)

    async def run(self, job: str) -> None:
        """One run of `job` over every merchant; a failure is logged and retried next time."""
        outcome = "ok"
        captures = reversals = 0
        oldest = 0.0
        try:
            merchants = await self._merchants()
        except (MeshError, OSError):
            log.warning("cannot list merchants", exc_info=True)
            merchants = []
            outcome = "error"
        for merchant in merchants:
            authorization = self._credentials(merchant)
            if authorization is None:
                if merchant not in self._warned:
                    self._warned.add(merchant)
                    log.warning("no job key for merchant; its scheduled work waits", extra={"merchant": merchant})
                continue
            try:
                with merchant_call(merchant, self._settings.lease_seconds, authorization):
                    await getattr(self.jobs, job)(merchant)
                    c, r = await self.jobs.depth(merchant)
                    captures, reversals = captures + c, reversals + r
                    if job == "resolver":
                        oldest = max(oldest, await self.jobs.oldest_intent_age(merchant))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one merchant's failure must not stop the others
                outcome = "error"
                log.warning("scheduled job failed", extra={"job": job, "merchant": merchant}, exc_info=True)
        if self._metrics is not None:
            self._metrics.run(job, outcome)
            self._metrics.depth.labels("captures").set(captures)
            self._metrics.depth.labels("reversals").set(reversals)
            if job == "resolver":
                self._metrics.oldest_intent.set(oldest)
