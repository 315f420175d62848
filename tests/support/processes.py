"""Run `giftcard serve` as real processes, as a user or Kubernetes would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import free_port
from tests.support.mesh import DEMO_CARDS


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout)


def write_config(directory: Path, redis_url: str, **extra) -> Path:
    config = {
        "security": {"dev_mode": True},
        "redis": {"url": redis_url},
        "metrics": {"enabled": False},
        "grpc": {"shutdown_grace_seconds": 10},
        "demo": {"merchant_id": "demo", "cards": DEMO_CARDS},
        **extra,
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_server(
    config: Path, services: list[str], log_path: Path, env: dict[str, str] | None = None, ready_timeout: float = 20,
    port: int | None = None,
) -> ServerProcess:
    """`port`: a fixed one, so a restarted process is found where its clients look for it."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mesh", "serve", *services, "--config", str(config), "--port", str(port)],
        env={**os.environ, **(env or {})},
        stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
    )
    server = ServerProcess(process, port, log_path)
    wait_serving(server, ready_timeout)
    return server


def wait_serving(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.logs()}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                server.process.kill()
                raise TimeoutError(f"server not serving after {timeout}s:\n{server.logs()}")
            time.sleep(0.1)
