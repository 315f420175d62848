"""The Radial adapter against the Radial simulator over real HTTP: every mapped operation, the
Timeout rule (retry with a NEW RequestId), RedeemVoid by card + OrderId + Amount, reversal by
reference after a lost reply, and the journal on real Redis."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis

from common.cards import CardId
from common.config import ProviderProfile
from common.errors import CARD_ALREADY_ACTIVE, INSUFFICIENT_FUNDS, INVALID_PIN, PROVIDER_TIMEOUT, MeshError
from common.money import Money
from gateway.adapters import radial
from gateway.adapters.radial import translate
from gateway.ports import ACTIVE, DEACTIVATED, INACTIVE
from gateway.simulators import start_simulator

PAN, PIN = "6006001111111116", "1234"
# Explicit (RetryPolicy.from_options needs every key until the base fixes its defaults).
RETRY = {"max_attempts": 3, "backoff_seconds": 0.01, "max_backoff_seconds": 0.5}
USD = lambda minor: Money(minor, "USD")  # noqa: E731


@pytest.fixture(scope="module")
def sim():
    with start_simulator("radial", options={"stores": {
        "STORE1": {"claim_link": False, "promo_codes": None},
        "CLAIM": {"claim_link": True, "promo_codes": None},
        "PROMO": {"claim_link": False, "promo_codes": ["SPRING"]},
    }}) as running:
        yield running


@pytest.fixture
def card(sim):
    httpx.post(f"{sim.base_url}/_sim/reset")
    httpx.post(f"{sim.base_url}/_sim/cards", json={"number": PAN, "balance": "25.00", "pin": PIN})
    return CardId("card_number", PAN, pin=PIN)


def _profile(sim, store="STORE1", **options) -> ProviderProfile:
    return ProviderProfile(provider="radial", base_url=sim.base_url, timeout_seconds=2.0,
                           credentials={"api_key": "radial-sim-key"},
                           options={"store_id": store, **RETRY, **options})


@pytest.fixture
async def provider(sim):
    adapter = radial.build(_profile(sim))
    yield adapter
    await adapter.aclose()


def _sim_balance(sim, number=PAN) -> str:
    return httpx.get(f"{sim.base_url}/_sim/cards/{number}").json()["balance"]


def _transactions(sim) -> list[dict]:
    return httpx.get(f"{sim.base_url}/_sim/ledger").json()["transactions"]


async def test_balance_redeem_credit_and_cash_out(sim, card, provider):
    info = await provider.balance("m", card)
    assert (info.status, info.balance, info.held) == (ACTIVE, USD(2500), USD(0))
    redeemed = await provider.redeem("m", "ref-redeem-1", card, USD(1000), tip=None, allow_partial=False)
    assert (redeemed.amount, redeemed.balance) == (USD(1000), USD(1500))
    assert translate.parse_redemption_handle(redeemed.provider_transaction_id) == translate.Redemption("ref-redeem-1", USD(1000))
    funded = await provider.credit("m", "ref-fund-1", card, USD(500), kind="refund")
    assert (funded.amount, funded.balance) == (USD(500), USD(2000))
    cashed = await provider.cash_out("m", "ref-cash-1", card)
    assert (cashed.amount, cashed.balance, cashed.status) == (USD(2000), USD(0), DEACTIVATED)
    after = await provider.balance("m", card)
    assert (after.status, after.balance) == (DEACTIVATED, USD(0))


async def test_strict_redeem_short_is_insufficient_funds_and_partial_takes_what_is_there(sim, card, provider):
    with pytest.raises(MeshError) as caught:
        await provider.redeem("m", "ref-strict", card, USD(3000), tip=None, allow_partial=False)
    assert caught.value.reason == INSUFFICIENT_FUNDS
    partial = await provider.redeem("m", "ref-partial", card, USD(3000), tip=None, allow_partial=True)
    assert (partial.amount, partial.balance) == (USD(2500), USD(0))
    assert _sim_balance(sim) == "0.00"


async def test_wrong_pin_is_invalid_pin(sim, card, provider):
    with pytest.raises(MeshError) as caught:
        await provider.balance("m", CardId("card_number", PAN, pin="9999"))
    assert caught.value.reason == INVALID_PIN


async def test_reverse_by_provider_transaction_id_voids_by_order_and_amount_once(sim, card, provider):
    redeemed = await provider.redeem("m", "ref-void", card, USD(700), tip=None, allow_partial=False)
    first = await provider.reverse("m", "rev-1", card, provider_transaction_id=redeemed.provider_transaction_id,
                                   original_reference_id=None)
    assert (first.reversed, first.result.amount, first.result.balance) == (True, USD(700), USD(2500))
    again = await provider.reverse("m", "rev-2", card, provider_transaction_id=redeemed.provider_transaction_id,
                                   original_reference_id=None)
    assert (again.reversed, again.result.amount) == (True, USD(700))
    assert _sim_balance(sim) == "25.00"


async def test_vendor_timeout_is_retried_with_a_new_request_id(sim, card, provider):
    httpx.post(f"{sim.base_url}/_sim/faults", json={"fault": "vendor-timeout", "path": "/v1.0/stores/STORE1/storedvalue/Redeem", "count": 2})
    try:
        redeemed = await provider.redeem("m", "ref-timeout", card, USD(1200), tip=None, allow_partial=False)
    finally:
        httpx.delete(f"{sim.base_url}/_sim/faults")
    assert (redeemed.amount, redeemed.balance) == (USD(1200), USD(1300))
    redeems = [t for t in _transactions(sim) if t["kind"] == "Redeem"]
    assert len(redeems) == 1  # applied exactly once
    used = redeems[0]["data"]["RequestId"]
    assert used != "ref-timeout" and used.startswith("ref-timeout:")


async def test_vendor_timeout_past_the_retry_budget_is_provider_timeout_and_moves_nothing(sim, card):
    adapter = radial.build(_profile(sim, timeout_retries=1))
    httpx.post(f"{sim.base_url}/_sim/faults", json={"fault": "vendor-timeout", "path": "/v1.0/stores/STORE1/storedvalue/Redeem", "count": 5})
    try:
        with pytest.raises(MeshError) as caught:
            await adapter.redeem("m", "ref-to", card, USD(100), tip=None, allow_partial=False)
    finally:
        httpx.delete(f"{sim.base_url}/_sim/faults")
        await adapter.aclose()
    assert caught.value.reason == PROVIDER_TIMEOUT and caught.value.retryable
    assert caught.value.metadata["attempts"] == "2"
    assert _sim_balance(sim) == "25.00"


async def test_lost_reply_is_reversed_by_reference_with_redeem_void(sim, card, provider):
    # The simulator applies the redeem, then drops the connection: the outcome is unknown here.
    with pytest.raises(MeshError):
        await _redeem_with_fault(provider, card, "reset-after")
    assert _sim_balance(sim) == "16.00"
    reversal = await provider.reverse("m", "rev-lost", card, provider_transaction_id=None, original_reference_id="ref-lost")
    assert (reversal.reversed, reversal.result.amount) == (True, USD(900))
    assert _sim_balance(sim) == "25.00"
    never = await provider.reverse("m", "rev-never", card, provider_transaction_id=None, original_reference_id="ref-never-sent")
    assert never.reversed is False and never.result.amount == USD(0)


async def _redeem_with_fault(provider, card, fault):
    provider._client.http.client.headers["X-Sim-Fault"] = fault
    try:
        return await provider.redeem("m", "ref-lost", card, USD(900), tip=None, allow_partial=False)
    finally:
        del provider._client.http.client.headers["X-Sim-Fault"]


async def test_second_call_under_a_reference_voids_the_first_and_applies_once(sim, card, provider):
    with pytest.raises(MeshError):
        await _redeem_with_fault(provider, card, "reset-after")  # ref-lost applied, reply lost
    again = await provider.redeem("m", "ref-lost", card, USD(900), tip=None, allow_partial=False)
    assert (again.amount, again.balance) == (USD(900), USD(1600))
    kinds = [t["kind"] for t in _transactions(sim)]
    assert kinds.count("Redeem") == 2 and kinds.count("RedeemVoid") == 1
    assert _sim_balance(sim) == "16.00"


async def test_physical_activation_with_pin_and_already_active(sim, provider):
    httpx.post(f"{sim.base_url}/_sim/reset")
    httpx.post(f"{sim.base_url}/_sim/cards", json={"number": "6006002222222225", "balance": "0.00", "pin": "4321", "status": "inactive"})
    card = CardId("card_number", "6006002222222225", pin="4321")
    assert (await provider.balance("m", card)).status == INACTIVE
    activated = await provider.activate("m", "act-1", card, USD(5000), promo_code="")
    assert (activated.amount, activated.balance) == (USD(5000), USD(5000))
    with pytest.raises(MeshError) as caught:
        await provider.activate("m", "act-2", card, USD(5000), promo_code="")
    assert caught.value.reason == CARD_ALREADY_ACTIVE


async def test_virtual_allocation_number_and_pin_then_claim_link_with_proxy(sim):
    httpx.post(f"{sim.base_url}/_sim/reset")
    plain = radial.build(_profile(sim))
    claim = radial.build(_profile(sim, "CLAIM"))
    try:
        allocation = await plain.allocate("m", "alloc-1", "EGIFT", USD(2500))
        assert allocation.activated and allocation.card_number.startswith("6006") and len(allocation.pin) == 4
        assert allocation.result.amount == USD(2500)
        card = CardId("card_number", allocation.card_number, pin=allocation.pin)
        assert (await plain.balance("m", card)).balance == USD(2500)
        linked = await claim.allocate("m", "alloc-2", "EGIFT", USD(1000))
        assert linked.activated and linked.card_number == "" and linked.pin == ""
        assert linked.proxy_number.startswith("9990") and linked.claim_url.startswith("https://claim.")
        # The proxy number works without a PIN (cancel of a claim-link card = cash-out by proxy).
        proxy = CardId("proxy_number", linked.proxy_number)
        assert (await claim.cash_out("m", "cash-proxy", proxy)).amount == USD(1000)
    finally:
        await plain.aclose()
        await claim.aclose()


async def test_promo_code_store(sim):
    httpx.post(f"{sim.base_url}/_sim/reset")
    without = radial.build(_profile(sim, "PROMO"))
    configured = radial.build(_profile(sim, "PROMO", promo_code="SPRING"))
    try:
        with pytest.raises(MeshError) as caught:
            await without.allocate("m", "alloc-p1", "EGIFT", USD(1000))
        assert caught.value.reason == translate.PROMO_CODE_REQUIRED
        assert (await configured.allocate("m", "alloc-p2", "EGIFT", USD(1000))).activated
    finally:
        await without.aclose()
        await configured.aclose()


async def test_journal_on_redis_survives_a_new_adapter(sim, card, redis_url):
    client = aioredis.from_url(redis_url)
    first = radial.build(_profile(sim), redis=client)
    second = radial.build(_profile(sim), redis=client)
    try:
        with pytest.raises(MeshError):
            await _redeem_with_fault(first, card, "reset-after")
        reversal = await second.reverse("m", "rev-redis", card, provider_transaction_id=None, original_reference_id="ref-lost")
        assert (reversal.reversed, reversal.result.amount) == (True, USD(900))
        assert _sim_balance(sim) == "25.00"
    finally:
        await first.aclose()
        await second.aclose()
        await client.aclose()


async def test_operations_radial_lacks_are_unimplemented_naming_radial(card, provider):
    import grpc
    for call in (provider.exchange("m", "x", card, card), provider.issue_value("m", "x", card, USD(1))):
        with pytest.raises(MeshError) as caught:
            await call
        assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED and caught.value.metadata["provider"] == "radial"


async def test_reversal_by_reference_first_blocks_a_later_redeem_under_it(sim, card, provider):
    early = await provider.reverse("m", "rev-early", card, provider_transaction_id=None, original_reference_id="ref-late")
    assert early.reversed is False
    with pytest.raises(MeshError) as caught:
        await provider.redeem("m", "ref-late", card, USD(500), tip=None, allow_partial=False)
    assert caught.value.reason == "TRANSACTION_REVERSED"
    assert _sim_balance(sim) == "25.00" and not [t for t in _transactions(sim) if t["kind"] == "Redeem"]


async def test_debug_transcripts_never_show_card_number_pin_or_claim_link(sim, caplog):
    import logging

    httpx.post(f"{sim.base_url}/_sim/reset")
    adapter = radial.build(_profile(sim, "CLAIM"))
    plain = radial.build(_profile(sim))
    caplog.set_level(logging.DEBUG, logger="giftcard.gateway.radial")
    try:
        linked = await adapter.allocate("m", "alloc-log-1", "EGIFT", USD(1000))
        issued = await plain.allocate("m", "alloc-log-2", "EGIFT", USD(1000))
        await plain.redeem("m", "rd-log", CardId("card_number", issued.card_number, pin=issued.pin), USD(100),
                           tip=None, allow_partial=False)
    finally:
        await adapter.aclose()
        await plain.aclose()
    text = caplog.text
    assert "vendor request" in text and "vendor reply" in text
    for secret in (linked.proxy_number, linked.claim_url, issued.card_number, f'"{issued.pin}"'):
        assert secret not in text


async def test_activation_and_cash_out_retried_after_a_lost_reply_are_replays_not_errors(sim, provider):
    httpx.post(f"{sim.base_url}/_sim/reset")
    httpx.post(f"{sim.base_url}/_sim/cards", json={"number": "6006003333333334", "balance": "0.00", "pin": "4321", "status": "inactive"})
    card = CardId("card_number", "6006003333333334", pin="4321")
    provider._client.http.client.headers["X-Sim-Fault"] = "reset-after"
    try:
        with pytest.raises(MeshError):
            await provider.activate("m", "act-lost", card, USD(3000), promo_code="")
    finally:
        del provider._client.http.client.headers["X-Sim-Fault"]
    again = await provider.activate("m", "act-lost", card, USD(3000), promo_code="")
    assert (again.replayed, again.amount, again.balance) == (True, USD(3000), USD(3000))
    provider._client.http.client.headers["X-Sim-Fault"] = "reset-after"
    try:
        with pytest.raises(MeshError):
            await provider.cash_out("m", "cash-lost", card)
    finally:
        del provider._client.http.client.headers["X-Sim-Fault"]
    cashed = await provider.cash_out("m", "cash-lost", card)
    assert (cashed.replayed, cashed.status, cashed.balance) == (True, DEACTIVATED, USD(0))
    kinds = [t["kind"] for t in _transactions(sim)]
    assert kinds.count("FundAndActivate") == 1 and kinds.count("CashOut") == 1


async def test_activation_whose_first_attempt_never_applied_is_sent_again(sim, provider):
    httpx.post(f"{sim.base_url}/_sim/reset")
    httpx.post(f"{sim.base_url}/_sim/cards", json={"number": "6006004444444443", "balance": "0.00", "pin": "4321", "status": "inactive"})
    card = CardId("card_number", "6006004444444443", pin="4321")
    httpx.post(f"{sim.base_url}/_sim/faults", json={"fault": "vendor-timeout", "path": "/v1.0/stores/STORE1/storedvalue/FundAndActivate", "count": 10})
    try:
        with pytest.raises(MeshError):
            await provider.activate("m", "act-spent", card, USD(1000), promo_code="")
    finally:
        httpx.delete(f"{sim.base_url}/_sim/faults")
    done = await provider.activate("m", "act-spent", card, USD(1000), promo_code="")
    assert (done.replayed, done.amount, done.balance) == (False, USD(1000), USD(1000))
