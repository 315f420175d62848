"""Redis killed (-9) and restarted mid-workload, AOF with appendfsync always (the native ledger's
default): clients see only retryable statuses while it is down (UNAVAILABLE, ABORTED, or their
own deadline), never a wrong answer or an INTERNAL; after it is back and the resolver has run, the
audit is clean and every acknowledged operation is on the ledger exactly once. What appendfsync
everysec could lose, and how the audit shows it: tests/chaos/README.md."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from tests.chaos.test_crash import RESOLVER
from tests.chaos.workload import Workload, run_audit
from tests.conftest import _redis_server_binary, free_port
from tests.support.mesh import start_mesh

ALLOWED_WHILE_DOWN = {"OK", "UNAVAILABLE", "ABORTED", "DEADLINE_EXCEEDED", "CANCELLED",
                      "FAILED_PRECONDITION", "NOT_FOUND", "INVALID_ARGUMENT", "OUT_OF_RANGE"}


class RestartableRedis:
    """A redis-server on a fixed port and data dir, so it can be killed and started again."""

    def __init__(self, appendfsync: str = "always") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="giftcard-chaos-redis-"))
        self.port = free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [_redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()  # answers LOADING until the AOF is replayed
                break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def close(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def restartable_redis():
    server = RestartableRedis()
    server.start()
    yield server
    server.close()


async def _restart_run(server: RestartableRedis, *, restarts: int, clients: int, operations: int, seed: int) -> dict:
    rng = random.Random(seed)
    mesh = await start_mesh("all-in-one", server.url, settlement=RESOLVER)
    try:
        workload = Workload(lambda service: mesh.stub(service), mesh.runtimes[0].providers.native_ledger, rng,
                            deadline=20, max_attempts=150, retry_pause=0.2)
        await workload.setup(4)
        stop = asyncio.Event()
        running = asyncio.gather(*(workload.client(operations, stop) for _ in range(clients)))
        done = 0
        # The restarts pace the run: clients go on until Redis has been back a while.
        for _ in range(restarts):
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            if running.done():
                break
            await asyncio.to_thread(server.kill)
            await asyncio.sleep(rng.uniform(0.5, 1.5))  # down: every call in this window fails
            await asyncio.to_thread(server.start)
            done += 1
        await asyncio.sleep(1.0)
        stop.set()
        await running
        deadline = time.monotonic() + 90
        while (report := await asyncio.to_thread(run_audit, server.url, grace_seconds=6)).counts["intents_open"] \
                and time.monotonic() < deadline:
            await asyncio.sleep(1)
        figures = workload.figures()
        figures.update(redis_restarts=done, seed=seed, audit=report.summary())
        print("chaos figures:", json.dumps(figures, sort_keys=True))
        assert done >= min(restarts, 2)
        assert report.ok, "\n".join(map(str, report.violations))
        assert set(figures["statuses"]) <= ALLOWED_WHILE_DOWN, figures["statuses"]
        assert workload.model.wrong == []
        mismatches = await workload.mismatches()
        assert not mismatches, "\n".join(mismatches)
        assert figures["uncertain_cards"] == 0, figures
        return figures
    finally:
        await mesh.close()


@pytest.mark.slow  # open finding (issue 10 note): a redeem intent can stay pending after a restart
async def test_redis_restart_mid_workload_gives_retryable_errors_and_loses_nothing(restartable_redis):
    # The operation cap only bounds the run: clients stop once Redis has been back a while, so on
    # an idle machine they cannot finish before the second restart lands.
    await _restart_run(restartable_redis, restarts=2, clients=4, operations=20_000, seed=random.randrange(1 << 30))


@pytest.mark.slow
async def test_redis_restart_mid_workload_many_times(restartable_redis):
    await _restart_run(restartable_redis, restarts=10, clients=6, operations=2000, seed=random.randrange(1 << 30))
