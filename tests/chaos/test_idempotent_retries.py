"""Idempotency under retries: every call of the random workload first runs with a random short
client deadline (20-400 ms, so many expire while the server is still applying them) and is retried
with the SAME request_id until it gets a definite answer. Each effect is applied exactly once: the
ledger history holds no effect twice, every card's balance is exactly what the acknowledged
operations add up to, and the audit is clean once the resolver has settled abandoned intents."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest

from tests.chaos.test_crash import RESOLVER
from tests.chaos.workload import Workload, run_audit
from tests.support.mesh import start_mesh


async def _retry_run(redis_url: str, mode: str, *, clients: int, operations: int, seed: int) -> dict:
    mesh = await start_mesh(mode, redis_url, settlement=RESOLVER)
    try:
        workload = Workload(lambda service: mesh.stub(service), mesh.runtimes[0].providers.native_ledger,
                            random.Random(seed), deadline=30, deadline_range=(0.001, 0.15), max_attempts=150,
                            retry_pause=0.2)
        await workload.setup(4)
        await workload.run(clients, operations)
        deadline = time.monotonic() + 60
        while (report := await asyncio.to_thread(run_audit, redis_url, grace_seconds=6)).counts["intents_open"] \
                and time.monotonic() < deadline:
            await asyncio.sleep(1)
        figures = workload.figures()
        figures.update(mode=mode, seed=seed, audit=report.summary())
        print("chaos figures:", json.dumps(figures, sort_keys=True))
        assert report.ok, "\n".join(map(str, report.violations))
        assert workload.model.wrong == []
        assert await workload.duplicate_effects() == []
        mismatches = await workload.mismatches()
        assert not mismatches, "\n".join(mismatches)
        assert figures["unknown"] == 0, figures
        assert figures["statuses"].get("DEADLINE_EXCEEDED", 0) > 10, "the short deadlines should expire"
        # A retry after an expired deadline waits for the first attempt, never for its whole
        # idempotency lease (30 s): that happened while the claim itself could be cancelled.
        assert figures["slowest_answer"][1] < 15, figures["slowest_answer"]
        return figures
    finally:
        await mesh.close()


async def test_retries_with_the_same_request_id_apply_each_effect_once(redis_client, redis_url):
    await _retry_run(redis_url, "all-in-one", clients=5, operations=30, seed=random.randrange(1 << 30))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["all-in-one", "separate"])
async def test_retries_with_the_same_request_id_long(redis_client, redis_url, mode):
    await _retry_run(redis_url, mode, clients=8, operations=200, seed=random.randrange(1 << 30))
