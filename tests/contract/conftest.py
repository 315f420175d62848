"""Contract fixtures: a vendor simulator (module-scoped, reset per test) and a mesh whose merchants
use it, one per hold emulation mode. Parametrized over tests/contract/harness.py HARNESSES."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import grpc
import httpx
import pytest
from grpc_status import rpc_status
from google.rpc import error_details_pb2

from gateway.simulators import start_simulator
from gateway.simulators.common.server import RunningSimulator
from tests.contract.harness import HARNESSES, MERCHANT_KEYS, Harness, VendorLedger, merchants
from tests.support.mesh import RunningMesh, start_mesh


class SimulatorPool:
    """One running simulator per vendor for a module; `down(vendor)` takes one off the network
    (connection refused) and brings it back on the same port with its ledger intact."""

    def __init__(self) -> None:
        self.running: dict[str, RunningSimulator] = {}

    def __call__(self, vendor: str) -> RunningSimulator:
        if vendor not in self.running:
            self.running[vendor] = start_simulator(vendor)
        return self.running[vendor]

    @contextlib.contextmanager
    def down(self, vendor: str):
        current = self.running[vendor]
        current.stop()
        try:
            yield
        finally:
            current.simulator.faults.stopping.clear()
            self.running[vendor] = RunningSimulator(current.simulator, port=current.port).start()

    def stop(self) -> None:
        for sim in self.running.values():
            sim.stop()


@pytest.fixture(scope="module")
def simulators():
    pool = SimulatorPool()
    yield pool
    pool.stop()


@dataclass
class ContractEnv:
    harness: Harness
    mesh: RunningMesh
    ledger: VendorLedger
    simulator: RunningSimulator | None
    pool: SimulatorPool | None = None

    @property
    def vendor(self) -> str:
        return self.harness.name

    def metadata(self, mode: str = "shadow"):
        return (("authorization", f"Bearer {MERCHANT_KEYS[mode]}"),)

    async def call(self, rpc: str, request, mode: str = "shadow", timeout: float = 10):
        return await getattr(self.mesh.stub("gateway"), rpc)(request, metadata=self.metadata(mode), timeout=timeout)

    def sim_post(self, path: str, body) -> None:
        httpx.post(f"{self.simulator.base_url}{path}", json=body, timeout=5).raise_for_status()


async def build_env(vendor: str, simulators, redis_url: str, **profile_extra) -> ContractEnv:
    harness = HARNESSES[vendor]
    sim = None
    if harness.simulator:
        sim = simulators(harness.simulator)
        httpx.post(f"{sim.base_url}/_sim/reset", timeout=5).raise_for_status()
    mesh = await start_mesh("all-in-one", redis_url, merchants=merchants(harness, sim.base_url if sim else None, **profile_extra))
    return ContractEnv(harness, mesh, VendorLedger(harness, sim, mesh.runtimes[0]), sim, simulators)


@pytest.fixture(params=list(HARNESSES))
async def env(request, simulators, redis_client, redis_url):
    built = await build_env(request.param, simulators, redis_url)
    yield built
    await built.mesh.close()


def details(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    status = rpc_status.from_call(error)
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return error.code(), info.reason, dict(info.metadata)
    return error.code(), "", {}
