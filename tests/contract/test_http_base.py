"""The shared vendor HTTP base (gateway/adapters/http.py) against a real simulator over HTTP:
retries only when safe, the breaker opens and recovers, deadlines bound every attempt, scrub."""

from __future__ import annotations

import time

import grpc
import httpx
import pytest

from common.config import ProviderProfile
from common.context import CallContext, bind_call, unbind_call
from common.errors import PROVIDER_TIMEOUT, PROVIDER_UNAVAILABLE, MeshError
from gateway.adapters.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from gateway.adapters.http import RetryPolicy, VendorHttp, scrub
from gateway.simulators import start_simulator

CARD = "6035710000000001"


@pytest.fixture(scope="module")
def sim():
    with start_simulator("paytronix", cards=[{"number": CARD, "balance": "25.00"}]) as running:
        yield running


def _http(base_url: str, *, timeout=2.0, threshold=3, reset=0.3, attempts=3, states=None) -> VendorHttp:
    profile = ProviderProfile(provider="paytronix", base_url=base_url, timeout_seconds=timeout)
    breaker = CircuitBreaker("paytronix", failure_threshold=threshold, reset_seconds=reset,
                             on_state=(lambda n, s: states.append(s)) if states is not None else None)
    return VendorHttp(
        "paytronix", profile, auth=httpx.BasicAuth("paytronix-sim", "paytronix-sim-secret"),
        breaker=breaker, retry=RetryPolicy(max_attempts=attempts, base_backoff_seconds=0.01),
    )


def _balance_payload():
    return {"merchantId": 1, "storeCode": "S1", "cardInfo": {"printedCardNumber": CARD}}


async def test_read_is_retried_after_a_5xx_and_succeeds(sim):
    http = _http(sim.base_url)
    try:
        httpx.post(f"{sim.base_url}/_sim/faults", json={"fault": "http-503", "path": "/gift/balance.json", "count": 2})
        reply = await http.commit("balance", "/gift/balance.json", _balance_payload(), idempotent=True)
        assert reply.status_code == 200 and reply.body["currentBalance"] == "25.00"
    finally:
        httpx.delete(f"{sim.base_url}/_sim/faults")
        await http.aclose()


async def test_write_without_idempotency_handle_is_not_resent_after_a_timeout(sim):
    http = _http(sim.base_url, timeout=0.3)
    try:
        with pytest.raises(MeshError) as caught:
            await http.commit("balance", "/gift/balance.json", _balance_payload(), idempotent=False,
                              headers={"X-Sim-Fault": "timeout-after=5s"})
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert caught.value.reason == PROVIDER_TIMEOUT and caught.value.retryable
        assert caught.value.metadata["outcome"] == "unknown"
    finally:
        await http.aclose()


async def test_no_attempt_waits_past_the_callers_deadline(sim):
    http = _http(sim.base_url, timeout=10.0)
    token = bind_call(CallContext("m", time.monotonic() + 0.4))
    started = time.monotonic()
    try:
        with pytest.raises(MeshError) as caught:
            await http.commit("balance", "/gift/balance.json", _balance_payload(), idempotent=True,
                              headers={"X-Sim-Fault": "timeout-before=5s"})
        assert caught.value.reason == PROVIDER_TIMEOUT
        assert time.monotonic() - started < 0.6
    finally:
        unbind_call(token)
        await http.aclose()


async def test_breaker_opens_fails_fast_and_recovers_after_a_probe():
    states: list[str] = []
    with start_simulator("paytronix", cards=[{"number": CARD, "balance": "25.00"}]) as down:
        base_url = down.base_url
    # The simulator is stopped: connection refused on every attempt.
    http = _http(base_url, threshold=2, reset=0.3, attempts=1, states=states)
    try:
        for _ in range(2):
            with pytest.raises(MeshError) as caught:
                await http.commit("balance", "/gift/balance.json", _balance_payload(), idempotent=True)
            assert caught.value.reason == PROVIDER_UNAVAILABLE
        assert http.breaker.state == OPEN
        started = time.monotonic()
        with pytest.raises(MeshError) as caught:
            await http.commit("balance", "/gift/balance.json", _balance_payload(), idempotent=True)
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.metadata["circuit"] == "open"
        assert time.monotonic() - started < 0.05
        time.sleep(0.35)
        assert http.breaker.state == HALF_OPEN
    finally:
        await http.aclose()
    # The vendor comes back on the same port: the half-open probe closes the breaker.
    port = int(base_url.rsplit(":", 1)[1])
    with start_simulator("paytronix", port=port, cards=[{"number": CARD, "balance": "25.00"}]):
        http2 = _http(base_url, threshold=2, reset=0.3, attempts=1)
        http2.breaker = http.breaker
        try:
            reply = await http2.commit("balance", "/gift/balance.json", _balance_payload(), idempotent=True)
            assert reply.status_code == 200
            assert http.breaker.state == CLOSED
        finally:
            await http2.aclose()
    assert states == [CLOSED, OPEN, HALF_OPEN, CLOSED]


def test_scrub_removes_card_data_and_secrets():
    scrubbed = scrub({
        "cardInfo": {"printedCardNumber": CARD, "cardRegCode": "1234"}, "cardnumber": "612573981949778930",
        "amount": "10.00", "errorMessage": f"card {CARD} not found", "cvv2": "123",
    })
    assert scrubbed == {
        "cardInfo": {"printedCardNumber": "[FILTERED]", "cardRegCode": "[FILTERED]"},
        "cardnumber": "[FILTERED]", "amount": "10.00", "errorMessage": "card ******0001 not found",
        "cvv2": "[FILTERED]",
    }


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_half_open_lets_exactly_one_probe_through_and_a_failed_probe_reopens():
    clock = _Clock()
    breaker = CircuitBreaker("v", failure_threshold=2, reset_seconds=10, clock=clock)
    breaker.record_failure()
    assert breaker.state == CLOSED
    breaker.record_failure()
    assert breaker.state == OPEN
    with pytest.raises(MeshError):
        breaker.before_call()
    clock.now += 10
    breaker.before_call()  # the probe
    with pytest.raises(MeshError) as caught:
        breaker.before_call()  # a second caller while the probe runs fails fast
    assert caught.value.reason == PROVIDER_UNAVAILABLE
    breaker.record_failure()  # the probe failed: open for another cool-down
    assert breaker.state == OPEN
    clock.now += 10
    breaker.before_call()
    breaker.record_success()
    assert breaker.state == CLOSED
    breaker.before_call()


def test_a_business_refusal_counts_as_the_vendor_being_up():
    breaker = CircuitBreaker("v", failure_threshold=2, reset_seconds=10)
    breaker.record_failure()
    breaker.record_success()  # e.g. HTTP 200 + insufficient funds
    breaker.record_failure()
    assert breaker.state == CLOSED


async def test_logs_carry_no_card_number_pin_or_credentials(sim, caplog):
    import logging

    from common.cards import CardId
    from common.money import Money
    from gateway.adapters.paytronix import build

    profile = ProviderProfile(
        provider="paytronix", base_url=sim.base_url, timeout_seconds=2,
        credentials={"username": "paytronix-sim", "password": "paytronix-sim-secret"},
        options={"merchant_id": 1, "store_code": "S1"},
    )
    provider = build(profile)
    try:
        with caplog.at_level(logging.DEBUG, logger="giftcard.gateway.paytronix"):
            await provider.balance("m", CardId("card_number", CARD))
            with pytest.raises(MeshError):
                await provider.redeem("m", "ref-log-1", CardId("card_number", CARD, pin="9911"),
                                      Money(1, "USD"), tip=None, allow_partial=False)
    finally:
        await provider.aclose()
    text = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert "[FILTERED]" in text
    for secret in (CARD, "9911", "paytronix-sim-secret", "cGF5dHJvbml4"):
        assert secret not in text


async def test_a_failure_after_an_attempt_that_may_have_applied_is_an_unknown_outcome(sim):
    # Attempt 1 times out (the vendor may have applied it); attempt 2 is refused with 503 (that
    # one was not applied): the call's outcome is still unknown, never "not applied".
    http = _http(sim.base_url, timeout=0.3, attempts=2)
    try:
        httpx.post(f"{sim.base_url}/_sim/faults", json={"fault": "timeout-after=2s", "path": "/gift/balance.json", "count": 1})
        httpx.post(f"{sim.base_url}/_sim/faults", json={"fault": "http-503", "path": "/gift/balance.json", "count": 1})
        with pytest.raises(MeshError) as caught:
            await http.commit("balance", "/gift/balance.json", _balance_payload(), idempotent=True)
        assert caught.value.reason == PROVIDER_TIMEOUT and caught.value.metadata["outcome"] == "unknown"
    finally:
        httpx.delete(f"{sim.base_url}/_sim/faults")
        await http.aclose()
