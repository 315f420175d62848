"""Shared fixtures: a real redis-server per test session on a free localhost port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_server_binary() -> str:
    found = os.environ.get("GIFTCARD_TEST_REDIS_SERVER") or shutil.which("redis-server")
    if not found:
        pytest.exit("redis-server not found: run `make deps` (installs it) or set GIFTCARD_TEST_REDIS_SERVER")
    return found


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A fresh redis-server (AOF on, appendfsync always, as the native ledger's default)."""
    external = os.environ.get("GIFTCARD_TEST_REDIS_URL")
    if external:
        yield external
        return
    workdir = Path(tempfile.mkdtemp(prefix="giftcard-redis-"))
    port = free_port()
    proc = subprocess.Popen(
        [
            _redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(workdir), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--daemonize", "no", "--loglevel", "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client on a flushed database: each test starts from empty state."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the long variants marked @pytest.mark.slow (make test-long)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long variant: run with --run-slow (make test-long)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
