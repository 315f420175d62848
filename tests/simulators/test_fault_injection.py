"""Fault injection, the same for every vendor simulator, over real HTTP and real sockets.

Each vendor contributes one money-moving request; every fault kind is checked against the
vendor-side ledger: did the operation apply or not, and what did the client see.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.simulators import VENDORS, start_simulator
from gateway.simulators.common.server import RunningSimulator

CARD = "6000000000000001"
_ids = itertools.count(1)


@dataclass(frozen=True)
class Scenario:
    client_kwargs: dict[str, Any]
    card: dict[str, Any]
    path: str
    body: Callable[[], dict[str, Any]]
    field: str          # which vendor-side number the operation changes
    before: str
    after: str


SCENARIOS: dict[str, Scenario] = {
    "paytronix": Scenario(
        {"auth": ("paytronix-sim", "paytronix-sim-secret")}, {"number": CARD, "balance": "25.00"},
        "/gift/redeem.json",
        lambda: {"merchantId": 1, "storeCode": "S", "cardInfo": {"printedCardNumber": CARD}, "amount": "10.00",
                 "externalTransactionId": f"ext-{next(_ids)}"},
        "balance", "25.00", "15.00"),
    "ackroo": Scenario(
        {"headers": {"Authorization": "Bearer ackroo-sim-token"}}, {"number": CARD, "balance": "25.00"},
        "/transaction/gift/debit",
        lambda: {"device_id": "dev-1", "cardnumber": CARD, "amount": "10", "clerk_id": "clerk"},
        "balance", "25.00", "15.00"),
    "radial": Scenario(
        {"headers": {"apiKey": "radial-sim-key"}}, {"number": CARD, "balance": "25.00", "pin": "1234"},
        "/v1.0/stores/STORE1/storedvalue/Redeem",
        lambda: {"RequestId": f"rq-{next(_ids)}", "PaymentAccountUniqueId": CARD, "Pin": "1234",
                 "Amount": {"Value": "10.00", "CurrencyCode": "USD"}, "OrderId": "o-1"},
        "balance", "25.00", "15.00"),
    "clutch": Scenario(
        {"auth": ("clutch-sim-key", "clutch-sim-secret"),
         "headers": {"brand": "SIMBRAND", "location": "L", "terminal": "T"}},
        {"number": CARD, "balance": "25.00"},
        "/merchant/hold", lambda: {"cardNumber": CARD, "amount": "10.00"},
        "available", "25.00", "15.00"),
    "smartclixx": Scenario(
        {"headers": {"X-Api-Key": "smartclixx-sim-key"}}, {"number": CARD, "balance": "25.00"},
        "/api/v1/authorizations", lambda: {"requestId": f"a-{next(_ids)}", "cardNumber": CARD, "amount": "10.00"},
        "available", "25.00", "15.00"),
}
assert set(SCENARIOS) == set(VENDORS)


@dataclass
class Harness:
    server: RunningSimulator
    scenario: Scenario
    api: httpx.Client
    admin: httpx.Client

    def send(self, fault: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"X-Sim-Fault": fault} if fault else {}
        return self.api.post(self.scenario.path, json=self.scenario.body(), headers=headers, **kwargs)

    def value(self) -> str:
        return self.admin.get(f"/_sim/cards/{CARD}").json()[self.scenario.field]


@pytest.fixture(scope="module", params=VENDORS)
def _harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    scenario = SCENARIOS[request.param]
    server = start_simulator(request.param, options={"stores": {"STORE1": {}}} if request.param == "radial" else None)
    with httpx.Client(base_url=server.base_url, timeout=5, **scenario.client_kwargs) as api, \
            httpx.Client(base_url=server.base_url, timeout=5) as admin:
        yield Harness(server, scenario, api, admin)
    server.stop()


@pytest.fixture
def sim(_harness: Harness) -> Harness:
    _harness.admin.post("/_sim/reset").raise_for_status()
    _harness.admin.post("/_sim/cards", json=_harness.scenario.card).raise_for_status()
    return _harness


def test_no_fault_applies_the_operation(sim):
    assert sim.send().status_code == 200
    assert sim.value() == sim.scenario.after


def test_timeout_after_applies_the_operation_then_hangs(sim):
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        sim.send("timeout-after", timeout=0.2)
    assert time.monotonic() - started < 2
    assert sim.value() == sim.scenario.after


def test_timeout_after_answers_a_client_that_waits_out_the_hang(sim):
    response = sim.send("timeout-after=100ms", timeout=5)
    assert response.status_code == 200
    assert response.headers["x-sim-fault-applied"] == "timeout-after=0.1s"
    assert sim.value() == sim.scenario.after


def test_timeout_before_hangs_without_applying(sim):
    with pytest.raises(httpx.ReadTimeout):
        sim.send("timeout-before", timeout=0.2)
    assert sim.value() == sim.scenario.before


def test_timeout_before_ends_in_a_dropped_connection_never_an_answer(sim):
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        sim.send("timeout-before=100ms", timeout=5)
    assert sim.value() == sim.scenario.before


@pytest.mark.parametrize("fault, status", [("http-500", 500), ("http-503", 503)])
def test_http_5xx_answers_the_status_without_applying(sim, fault, status):
    response = sim.send(fault)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/plain")
    assert sim.value() == sim.scenario.before


def test_reset_closes_the_connection_without_applying(sim):
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        sim.send("reset")
    assert sim.value() == sim.scenario.before


def test_reset_is_a_real_tcp_reset(sim):
    with socket.create_connection(("127.0.0.1", sim.server.port), timeout=5) as raw:
        raw.sendall(f"POST {sim.scenario.path} HTTP/1.1\r\nHost: sim\r\nX-Sim-Fault: reset\r\n"
                    "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}".encode())
        with pytest.raises(ConnectionResetError):
            raw.recv(1024)


def test_reset_after_applies_then_resets(sim):
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        sim.send("reset-after")
    assert sim.value() == sim.scenario.after


def test_latency_delays_a_correct_answer(sim):
    started = time.monotonic()
    response = sim.send("latency=200ms")
    assert time.monotonic() - started >= 0.2
    assert response.status_code == 200
    assert sim.value() == sim.scenario.after


def test_wrong_answer_lies_by_one_but_applies_correctly(sim):
    response = sim.send("wrong-answer")
    assert response.status_code == 200
    assert response.headers["x-sim-fault-applied"] == "wrong-answer"
    assert sim.value() == sim.scenario.after
    honest = sim.send()
    assert honest.content != response.content


def test_unknown_fault_header_is_a_harness_error(sim):
    response = sim.send("explode")
    assert response.status_code == 400 and "unknown fault" in response.text
    assert sim.value() == sim.scenario.before


def test_rules_apply_to_the_next_n_matching_requests(sim):
    rule = {"fault": "http-503", "path": sim.scenario.path, "count": 2}
    assert sim.admin.post("/_sim/faults", json=rule).json()["rules"][0]["count"] == 2
    assert [sim.send().status_code for _ in range(3)] == [503, 503, 200]
    assert sim.admin.get("/_sim/faults").json()["rules"] == []
    assert sim.value() == sim.scenario.after


def test_admin_namespace_is_never_faulted(sim):
    sim.admin.put("/_sim/faults", json={"rules": [{"fault": "http-500"}]}).raise_for_status()
    assert sim.send().status_code == 500
    assert sim.admin.get("/_sim/ledger").status_code == 200
    sim.admin.delete("/_sim/faults").raise_for_status()
    assert sim.send().status_code == 200


def test_steady_rate_mode_is_reproducible_for_a_seed(sim):
    config = {"rate": 0.3, "seed": 42, "rate_faults": ["http-503"]}

    def run() -> list[bool]:
        sim.admin.put("/_sim/faults", json=config).raise_for_status()
        return [sim.send().status_code == 503 for _ in range(30)]

    first = run()
    second = run()
    assert first == second
    assert 0 < first.count(True) < 30


def test_bad_fault_config_is_refused(sim):
    assert sim.admin.put("/_sim/faults", json={"rate": 2}).status_code == 400
    assert sim.admin.post("/_sim/faults", json={"fault": "latency=fast"}).status_code == 400


def test_stop_does_not_wait_for_a_hung_request():
    scenario = SCENARIOS["ackroo"]
    server = start_simulator("ackroo", cards=[scenario.card])
    errors: list[BaseException] = []

    def hang() -> None:
        try:
            httpx.post(server.base_url + scenario.path, json=scenario.body(), timeout=10,
                       headers={"X-Sim-Fault": "timeout-after=60s", **scenario.client_kwargs["headers"]})
        except BaseException as exc:  # the connection is dropped at stop
            errors.append(exc)

    thread = threading.Thread(target=hang)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    server.stop()
    thread.join(5)
    assert time.monotonic() - started < 3
    assert not thread.is_alive()
    assert errors and isinstance(errors[0], httpx.TransportError)
