"""The mesh on a local 3-master Redis Cluster (redis.cluster = true): every script's keys share one
hash tag, so nothing may answer CROSSSLOT. The random workload (authorize, capture, release, redeem,
void, refund, reload, cash-out, exchange) and the other services' main flows (balance, tender plan,
checkout, activation, e-gift issue, deferred capture batch, scheduled reversal, the resolver) run
against it; the audit runs through RedisCluster (SCAN on every primary). Any INTERNAL answer or a
CROSSSLOT in the server's errors fails the test."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from tests.chaos.workload import Workload, run_audit
from tests.conftest import _redis_server_binary, free_port
from tests.support.mesh import start_mesh


def _cluster_port() -> int:
    # The cluster bus listens on port + 10000: both must be free.
    while True:
        port = free_port()
        if port < 55000:
            try:
                import socket
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                pass


@pytest.fixture(scope="module")
def redis_cluster_url():
    workdir = Path(tempfile.mkdtemp(prefix="giftcard-cluster-"))
    ports = [_cluster_port() for _ in range(3)]
    processes = []
    try:
        for port in ports:
            node = workdir / str(port)
            node.mkdir()
            processes.append(subprocess.Popen(
                [_redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node),
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--appendonly", "yes",
                 "--appendfsync", "always", "--save", "", "--loglevel", "warning"], stdout=subprocess.DEVNULL))
        for port in ports:
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 20
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            client.close()
        redis_cli = shutil.which("redis-cli") or str(Path(_redis_server_binary()).with_name("redis-cli"))
        subprocess.run([redis_cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while any(redis.Redis(port=p).cluster("info").get("cluster_state") != "ok" for p in ports):
            if time.monotonic() > deadline:
                raise TimeoutError("cluster not ok")
            time.sleep(0.2)
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


class _Crossslot(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage() + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        if "CROSSSLOT" in text or "MOVED" in text:
            self.found.append(text[-2000:])


@pytest.fixture
def crossslot_errors():
    handler = _Crossslot()
    logging.getLogger().addHandler(handler)
    yield handler.found
    logging.getLogger().removeHandler(handler)


async def test_random_workload_on_a_redis_cluster(redis_cluster_url, crossslot_errors):
    mesh = await start_mesh("all-in-one", redis_cluster_url, redis={"url": redis_cluster_url, "cluster": True},
                            settlement={"scheduler_enabled": False})
    try:
        workload = Workload(lambda service: mesh.stub(service), mesh.runtimes[0].providers.native_ledger,
                            random.Random(), deadline=30, max_attempts=5)
        await workload.setup(4)
        await workload.run(4, 30)
        report = await asyncio.to_thread(run_audit, redis_cluster_url, cluster=True)
        figures = workload.figures()
        figures.update(audit=report.summary(), redis="cluster 3 masters")
        print("chaos figures:", json.dumps(figures, sort_keys=True))
        assert crossslot_errors == []
        assert set(figures["statuses"]) <= {"OK", "FAILED_PRECONDITION", "NOT_FOUND", "UNIMPLEMENTED"}, figures
        assert report.ok, "\n".join(map(str, report.violations))
        mismatches = await workload.mismatches()
        assert not mismatches, "\n".join(mismatches)
        assert report.counts["cards"] >= 4 and report.counts["holds"] > 0
    finally:
        await mesh.close()
