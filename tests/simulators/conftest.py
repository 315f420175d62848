"""Fixtures for the simulator tests: one real uvicorn server per test module, reset per test.

A test module sets `VENDOR = "<name>"` and `CREDENTIALS = {...}` (kwargs for httpx.Client:
`auth=` and/or `headers=`); the fixtures give it a fresh ledger and an HTTP client speaking to
the simulator on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.simulators import start_simulator
from gateway.simulators.common.server import RunningSimulator


def http_client(base_url: str, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=base_url, **{"timeout": 5, **kwargs})


@pytest.fixture(scope="module")
def running(request: pytest.FixtureRequest) -> Iterator[RunningSimulator]:
    vendor = getattr(request.module, "VENDOR")
    options = getattr(request.module, "OPTIONS", None)
    server = start_simulator(vendor, options=options)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def _admin_client(running: RunningSimulator) -> Iterator[httpx.Client]:
    # Module-scoped: building an httpx.Client costs ~50 ms (it loads a TLS context).
    with http_client(running.base_url) as client:
        yield client


@pytest.fixture(scope="module")
def _api_client(request: pytest.FixtureRequest, running: RunningSimulator) -> Iterator[httpx.Client]:
    credentials: dict[str, Any] = dict(getattr(request.module, "CREDENTIALS", {}))
    with http_client(running.base_url, **credentials) as client:
        yield client


@pytest.fixture
def admin(_admin_client: httpx.Client) -> httpx.Client:
    """Client for the `/_sim` namespace; the ledger and faults are reset before each test."""
    _admin_client.post("/_sim/reset").raise_for_status()
    return _admin_client


@pytest.fixture
def api(admin: httpx.Client, _api_client: httpx.Client) -> httpx.Client:
    """Client for the vendor API with the vendor's credentials (after the reset)."""
    return _api_client


@pytest.fixture
def seed(admin: httpx.Client) -> Any:
    """seed(number=..., balance="25.00", pin=..., status=..., ...) -> the card's admin view."""
    def make(**card: Any) -> dict[str, Any]:
        response = admin.post("/_sim/cards", json=card)
        assert response.status_code == 201, response.text
        return response.json()["cards"][0]
    return make


@pytest.fixture
def state(admin: httpx.Client) -> Any:
    """state(number) -> the vendor-side card state (balance, available, status, holds)."""
    def read(number: str) -> dict[str, Any]:
        response = admin.get(f"/_sim/cards/{number}")
        assert response.status_code == 200, response.text
        return response.json()
    return read
