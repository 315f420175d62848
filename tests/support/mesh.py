"""Start the mesh for a test: all-in-one, or one server per service ("separate") talking gRPC."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import grpc

from common.auth import key_digest
from common.config import Settings, load_settings
from mesh.runtime import MeshRuntime
from mesh.services import SPECS

DEMO_KEY = "dev-demo-key"
ACME_KEY = "acme-test-key"
MODES = ("all-in-one", "separate")

DEMO_CARDS = [
    {"card_number": "6035710000000001", "balance_minor": 10000, "currency": "USD"},
    {"card_number": "6035710000000002", "balance_minor": 2500, "currency": "USD", "pin": "1234"},
    {"card_number": "6035710000000003", "balance_minor": 0, "currency": "USD", "active": False},
]


def mesh_settings(redis_url: str, **overrides) -> Settings:
    base = {
        "security": {"dev_mode": True},
        "redis": {"url": redis_url},
        "grpc": {"port": 0, "shutdown_grace_seconds": 5},
        "metrics": {"enabled": False},
        "merchants": {
            "demo": {"api_key_sha256": [key_digest(DEMO_KEY)], "currencies": ["USD", "CAD"]},
            "acme": {"api_key_sha256": [key_digest(ACME_KEY)], "currencies": ["USD"]},
        },
        "demo": {"merchant_id": "demo", "cards": DEMO_CARDS},
    }
    base.update(overrides)
    return load_settings(None, **base)


def auth(key: str = DEMO_KEY) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@dataclass
class RunningMesh:
    mode: str
    runtimes: list[MeshRuntime]
    ports: dict[str, int]
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def channel(self, service: str) -> grpc.aio.Channel:
        """A client channel to the server that serves `service`."""
        if service not in self.channels:
            self.channels[service] = grpc.aio.insecure_channel(f"127.0.0.1:{self.ports[service]}")
        return self.channels[service]

    def stub(self, service: str):
        return SPECS[service].stub(self.channel(service))

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
        for runtime in reversed(self.runtimes):
            await runtime.stop(grace=1)


async def start_mesh(mode: str, redis_url: str, **overrides) -> RunningMesh:
    if mode == "all-in-one":
        runtime = MeshRuntime(mesh_settings(redis_url, **overrides))
        await runtime.start()
        return RunningMesh(mode, [runtime], {name: runtime.port for name in SPECS})
    # One server per service; each reaches the others over gRPC at their real ports.
    runtimes: list[MeshRuntime] = []
    ports: dict[str, int] = {}
    try:
        gateway = MeshRuntime(mesh_settings(redis_url, **overrides), ["gateway"])
        await gateway.start()
        runtimes.append(gateway)
        ports["gateway"] = gateway.port
        for name in SPECS:
            if name == "gateway":
                continue
            settings = mesh_settings(redis_url, endpoints={"gateway": f"127.0.0.1:{gateway.port}"}, **overrides)
            runtime = MeshRuntime(settings, [name])
            await runtime.start()
            runtimes.append(runtime)
            ports[name] = runtime.port
    except BaseException:
        for runtime in runtimes:
            with contextlib.suppress(Exception):
                await runtime.stop(grace=0)
        raise
    return RunningMesh(mode, runtimes, ports)
