"""Start the mesh the way an operator does, with `giftcard serve` (here `python -m mesh serve`):
all-in-one (optionally N worker processes on one port, SO_REUSEPORT) or one process per service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.processes import Process, free_port, python, spawn, wait_serving

# What the bench needs; fulfillment and refund are not on any benchmarked path.
SEPARATE_SERVICES = ("gateway", "balance", "authorization", "settlement")
ALL_SERVICES = ("gateway", "balance", "authorization", "fulfillment", "settlement", "refund")
DEV_KEY_SHA256 = "6cbae51c7775b973f845b3fb4b333495890ecc9c57a9c3b3d662a3200d3227e1"  # sha256("dev-demo-key")


def write_config(path: Path, redis_url: str, shutdown_grace: float = 2) -> Path:
    """Dev mode (demo merchant, fixed card hash key), the native provider, no metrics listener
    (the RPC metrics are still recorded), no demo cards: the harness creates its own."""
    config = {
        "security": {"dev_mode": True},
        "redis": {"url": redis_url},
        "metrics": {"enabled": False},
        "grpc": {"shutdown_grace_seconds": shutdown_grace},
        "merchants": {"demo": {"api_key_sha256": [DEV_KEY_SHA256], "currencies": ["USD"],
                               "providers": [{"provider": "native"}]}},
        "demo": {"merchant_id": "demo", "cards": []},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Mesh:
    mode: str
    processes: list[Process]
    ports: dict[str, int]  # service -> port that serves it

    @property
    def port(self) -> int:
        return next(iter(self.ports.values()))

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def wait(self) -> "Mesh":
        """Until every process serves (start_* spawn without waiting, so several can boot at once)."""
        try:
            wait_serving(self.processes)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.terminate()
        for process in self.processes:
            process.stop()


def _serve_argv(config: Path, services: list[str], port: int) -> list[str]:
    return [python(), "-m", "mesh", "serve", *services, "--config", str(config), "--port", str(port)]


def start_all_in_one(config: Path, logdir: Path, *, workers: int = 1, env: dict[str, str] | None = None,
                     keep_logs: bool = True, tag: str = "all-in-one", port: int | None = None) -> Mesh:
    """Spawns (call `.wait()`) `giftcard serve all` x `workers` on one port: grpc.so_reuseport is set by common/server.py,
    so the kernel spreads incoming connections over the workers."""
    port = port or free_port()
    processes = [
        spawn(f"{tag}-w{index}", _serve_argv(config, ["all"], port), port,
              logdir / f"{tag}-w{index}.log" if keep_logs else None, env)
        for index in range(workers)
    ]
    return Mesh(tag, processes, {name: port for name in ALL_SERVICES})


def start_separate(config: Path, logdir: Path, env: dict[str, str] | None = None) -> Mesh:
    """Spawns (call `.wait()`) one `giftcard serve <service>` process per service; each reaches the others over gRPC at
    GIFTCARD_ENDPOINTS__<NAME>."""
    ports = {name: free_port() for name in SEPARATE_SERVICES}
    endpoints = {f"GIFTCARD_ENDPOINTS__{name.upper()}": f"127.0.0.1:{port}" for name, port in ports.items()}
    processes = [
        spawn(f"separate-{name}", _serve_argv(config, [name], port), port,
              logdir / f"separate-{name}.log", {**endpoints, **(env or {})})
        for name, port in ports.items()
    ]
    return Mesh("separate", processes, ports)
