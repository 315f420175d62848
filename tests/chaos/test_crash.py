"""kill -9 of `giftcard serve` at random points while clients run the random workload, several
times; each time it is restarted (its settlement scheduler runs the resolver with a short grace).
Clients retry with the same request_id until they get a definite answer. At the end: no intent is
left pending, the audit finds no violation, and every card's ledger balance is exactly what the
acknowledged operations add up to (no success answer lost, nothing applied twice)."""

from __future__ import annotations

import asyncio
import json
import random
import time

import grpc
import pytest

from tests.chaos.workload import Workload, run_audit
from tests.support.mesh import start_mesh
from mesh.services import SPECS
from tests.conftest import free_port
from tests.support.processes import start_server, write_config

RESOLVER = {
    "tick_seconds": 0.1, "resolver_interval_seconds": 0.5, "resolver_grace_seconds": 3.0,
    "lease_seconds": 2.0, "batch_interval_seconds": 1.0, "reversal_interval_seconds": 1.0,
}


class Restartable:
    """One `giftcard serve` process on a fixed port and a channel to it; `kill()` is kill -9,
    `start()` a fresh process on the same port."""

    def __init__(self, config, services, tmp_path, env: dict[str, str] | None = None) -> None:
        self.config, self.services, self.tmp_path, self.env = config, services, tmp_path, env
        self.port = free_port()
        self.server = None
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.starts += 1
        log = self.tmp_path / f"{'-'.join(self.services)}-{self.starts}.log"
        self.server = await asyncio.to_thread(start_server, self.config, self.services, log, self.env, 60, self.port)

    def kill(self) -> None:
        self.server.process.kill()
        self.server.process.wait(10)

    def stub(self, service: str):
        return SPECS[service].stub(self.channel)

    async def close(self) -> None:
        if self.server is not None and self.server.process.poll() is None:
            self.server.stop()
        await self.channel.close()


class Processes:
    """The mesh as the test runs it: one all-in-one process, or one process per service
    (separate mode: each service reaches the gateway process over gRPC)."""

    def __init__(self, mode: str, config, tmp_path) -> None:
        if mode == "all-in-one":
            self.members = {"all": Restartable(config, ["all"], tmp_path)}
            self.route = {name: "all" for name in SPECS}
            return
        gateway = Restartable(config, ["gateway"], tmp_path)
        env = {"GIFTCARD_ENDPOINTS__GATEWAY": gateway.address}
        self.members = {"gateway": gateway, **{name: Restartable(config, [name], tmp_path, env)
                                               for name in SPECS if name != "gateway"}}
        self.route = {name: name for name in SPECS}

    async def start(self) -> None:
        for member in self.members.values():
            await member.start()

    def stub(self, service: str):
        return self.members[self.route[service]].stub(service)

    async def close(self) -> None:
        for member in self.members.values():
            await member.close()


async def _wait_resolved(redis_url: str, grace: float, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        report = await asyncio.to_thread(run_audit, redis_url, grace_seconds=grace)
        if report.counts["intents_open"] == 0 or time.monotonic() > deadline:
            return
        await asyncio.sleep(1)


async def _crash_run(redis_url, tmp_path, *, kills: int, clients: int, operations: int, seed: int,
                     mode: str = "all-in-one") -> dict:
    rng = random.Random(seed)
    # The test's runtime only lends its native ledger (cards and history); its scheduler is off.
    mesh = await start_mesh("all-in-one", redis_url, settlement={"scheduler_enabled": False})
    config = write_config(tmp_path, redis_url, settlement=RESOLVER, grpc={"shutdown_grace_seconds": 2})
    target = Processes(mode, config, tmp_path)
    killed: list[str] = []
    try:
        await target.start()
        workload = Workload(target.stub, mesh.runtimes[0].providers.native_ledger, rng,
                            deadline=20, max_attempts=150, retry_pause=0.2)
        await workload.setup(4)
        stop = asyncio.Event()
        running = asyncio.gather(*(workload.client(operations, stop) for _ in range(clients)))
        crashes = 0
        # The kills pace the run: clients go on until the last restart has served a while.
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.5, 2.5))
            if running.done():
                break
            name = rng.choice(sorted(target.members))
            victim = target.members[name]
            victim.kill()  # SIGKILL: no drain, in-flight calls die with it
            crashes += 1
            killed.append(name)
            await asyncio.sleep(rng.uniform(0, 0.5))
            await victim.start()
        await asyncio.sleep(1.0)
        stop.set()
        await running
        await _wait_resolved(redis_url, RESOLVER["resolver_grace_seconds"])
        report = await asyncio.to_thread(run_audit, redis_url, grace_seconds=RESOLVER["resolver_grace_seconds"] * 2)
        figures = workload.figures()
        figures.update(crashes=crashes, killed=killed, mode=mode, seed=seed, audit=report.summary())
        print("chaos figures:", json.dumps(figures, sort_keys=True))
        assert crashes >= min(kills, 2), "the kills should land during the workload"
        assert report.ok, "\n".join(map(str, report.violations))
        assert workload.model.wrong == []
        mismatches = await workload.mismatches()
        assert not mismatches, "\n".join(mismatches)
        assert figures["uncertain_cards"] <= 2, figures
        assert figures["ok"] > figures["operations"] // 3, figures
        return figures
    finally:
        await target.close()
        await mesh.close()


async def test_kill_9_mid_workload_loses_no_acknowledged_operation(redis_client, redis_url, tmp_path):
    # The operation cap only bounds the run: clients stop once the last restart has served a
    # while, so on an idle machine they cannot finish before the kills land.
    await _crash_run(redis_url, tmp_path, kills=3, clients=4, operations=20_000, seed=random.randrange(1 << 30))


async def test_kill_9_of_any_service_process_in_separate_mode_loses_no_acknowledged_operation(
        redis_client, redis_url, tmp_path):
    # Each kill picks one of the six processes (the gateway included) at random.
    await _crash_run(redis_url, tmp_path, kills=4, clients=4, operations=20_000, seed=random.randrange(1 << 30),
                     mode="separate")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["all-in-one", "separate"])
async def test_kill_9_mid_workload_many_times(redis_client, redis_url, tmp_path, mode):
    await _crash_run(redis_url, tmp_path, kills=12, clients=6, operations=2000, seed=random.randrange(1 << 30),
                     mode=mode)
