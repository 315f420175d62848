"""The SmartClixx adapter against the SmartClixx simulator over real HTTP: authorization with
several settlements (one per shipment), partial and full authorization reversal, physical
activation, e-card retrieval (number + CVV2) then activation, and reversals."""

from __future__ import annotations

import grpc
import httpx
import pytest

from common.cards import CardId
from common.config import ProviderProfile
from common.errors import CARD_ALREADY_ACTIVE, HOLD_NOT_OPEN, INSUFFICIENT_FUNDS, INVALID_PIN, MeshError
from common.money import Money
from gateway.adapters import smartclixx
from gateway.adapters.smartclixx.provider import REVERSE_SETTLEMENT
from gateway.ports import ACTIVE, INACTIVE
from gateway.simulators import start_simulator

PAN = "5555001111111111"
USD = lambda minor: Money(minor, "USD")  # noqa: E731
RETRY = {"max_attempts": 3, "backoff_seconds": 0.01, "max_backoff_seconds": 0.5}


@pytest.fixture(scope="module")
def sim():
    with start_simulator("smartclixx") as running:
        yield running


@pytest.fixture
def card(sim):
    httpx.post(f"{sim.base_url}/_sim/reset")
    httpx.post(f"{sim.base_url}/_sim/cards", json={"number": PAN, "balance": "25.00"})
    return CardId("card_number", PAN)


def _profile(sim) -> ProviderProfile:
    return ProviderProfile(provider="smartclixx", base_url=sim.base_url, timeout_seconds=2.0,
                           credentials={"api_key": "smartclixx-sim-key"}, options=dict(RETRY))


@pytest.fixture
async def provider(sim):
    adapter = smartclixx.build(_profile(sim))
    yield adapter
    await adapter.aclose()


def _sim_card(sim, number=PAN) -> dict:
    return httpx.get(f"{sim.base_url}/_sim/cards/{number}").json()


async def test_three_settlements_on_one_authorization(sim, card, provider):
    hold = await provider.place_hold("m", "auth-1", card, USD(2000), allow_partial=False, expires_at_ms=0)
    assert (hold.amount, hold.open, hold.hold_id) == (USD(2000), USD(2000), hold.provider_transaction_id)
    first = await provider.capture_hold("m", "ship-1", card, hold.hold_id, USD(500), release_remainder=False)
    second = await provider.capture_hold("m", "ship-2", card, hold.hold_id, USD(700), release_remainder=False)
    third = await provider.capture_hold("m", "ship-3", card, hold.hold_id, USD(300), release_remainder=True)
    assert [(r.amount, r.open) for r in (first, second, third)] == [
        (USD(500), USD(1500)), (USD(700), USD(800)), (USD(300), USD(0))]
    assert third.balance == USD(1000)
    state = _sim_card(sim)
    assert (state["balance"], state["available"]) == ("10.00", "10.00")
    with pytest.raises(MeshError) as caught:
        await provider.capture_hold("m", "ship-4", card, hold.hold_id, USD(100), release_remainder=False)
    assert caught.value.reason == HOLD_NOT_OPEN


async def test_a_retried_settlement_replays_and_moves_nothing_twice(sim, card, provider):
    hold = await provider.place_hold("m", "auth-r", card, USD(1000), allow_partial=False, expires_at_ms=0)
    once = await provider.capture_hold("m", "ship-r", card, hold.hold_id, USD(400), release_remainder=False)
    again = await provider.capture_hold("m", "ship-r", card, hold.hold_id, USD(400), release_remainder=False)
    assert once == again and _sim_card(sim)["balance"] == "21.00"


async def test_partial_then_full_authorization_reversal(sim, card, provider):
    hold = await provider.place_hold("m", "auth-2", card, USD(2000), allow_partial=False, expires_at_ms=0)
    partial = await provider.release_hold("m", "cancel-1", card, hold.hold_id, USD(500))
    assert (partial.amount, partial.open) == (USD(500), USD(1500))
    full = await provider.release_hold("m", "cancel-2", card, hold.hold_id, None)
    assert (full.amount, full.open, full.balance) == (USD(1500), USD(0), USD(2500))
    assert _sim_card(sim)["available"] == "25.00"


async def test_strict_hold_declines_and_partial_hold_takes_what_is_available(sim, card, provider):
    with pytest.raises(MeshError) as caught:
        await provider.place_hold("m", "auth-s", card, USD(3000), allow_partial=False, expires_at_ms=0)
    assert caught.value.reason == INSUFFICIENT_FUNDS
    partial = await provider.place_hold("m", "auth-p", card, USD(3000), allow_partial=True, expires_at_ms=0)
    assert (partial.amount, partial.open) == (USD(2500), USD(2500))
    info = await provider.balance("m", card)
    assert (info.status, info.balance, info.held) == (ACTIVE, USD(2500), USD(2500))


async def test_redeem_is_authorization_plus_settlement_and_cannot_be_voided(sim, card, provider):
    redeemed = await provider.redeem("m", "rd-1", card, USD(1200), tip=None, allow_partial=False)
    assert (redeemed.amount, redeemed.balance) == (USD(1200), USD(1300))
    with pytest.raises(MeshError) as caught:
        await provider.reverse("m", "rev-1", card, provider_transaction_id=redeemed.provider_transaction_id,
                               original_reference_id=None)
    assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert caught.value.metadata == {"provider": "smartclixx", "operation": REVERSE_SETTLEMENT}


async def test_reverse_an_authorization_and_by_reference_after_a_lost_reply(sim, card, provider):
    hold = await provider.place_hold("m", "auth-3", card, USD(600), allow_partial=False, expires_at_ms=0)
    reversal = await provider.reverse("m", "rev-3", card, provider_transaction_id=hold.provider_transaction_id,
                                      original_reference_id=None)
    assert (reversal.reversed, reversal.result.amount) == (True, USD(600))
    provider._client.http.client.headers["X-Sim-Fault"] = "reset-after"
    try:
        with pytest.raises(MeshError):
            await provider.place_hold("m", "auth-lost", card, USD(900), allow_partial=False, expires_at_ms=0)
    finally:
        del provider._client.http.client.headers["X-Sim-Fault"]
    assert _sim_card(sim)["available"] == "16.00"
    lost = await provider.reverse("m", "rev-lost", card, provider_transaction_id=None, original_reference_id="auth-lost")
    assert (lost.reversed, lost.result.amount) == (True, USD(900))
    assert _sim_card(sim)["available"] == "25.00"
    never = await provider.reverse("m", "rev-n", card, provider_transaction_id=None, original_reference_id="never")
    assert never.reversed is False


async def test_physical_activation_and_already_active(sim, provider):
    httpx.post(f"{sim.base_url}/_sim/reset")
    httpx.post(f"{sim.base_url}/_sim/cards", json={"number": PAN, "balance": "0.00", "status": "inactive"})
    card = CardId("card_number", PAN)
    assert (await provider.balance("m", card)).status == INACTIVE
    activated = await provider.activate("m", "act-1", card, USD(5000), promo_code="")
    assert (activated.amount, activated.balance) == (USD(5000), USD(5000))
    with pytest.raises(MeshError) as caught:
        await provider.activate("m", "act-2", card, USD(5000), promo_code="")
    assert caught.value.reason == CARD_ALREADY_ACTIVE


async def test_ecard_retrieve_with_cvv2_then_activate_loads_it(sim, provider):
    httpx.post(f"{sim.base_url}/_sim/reset")
    allocation = await provider.allocate("m", "ecard-1", "EGIFT", USD(2500))
    assert allocation.card_number.startswith("7777") and len(allocation.cvv2) == 3 and not allocation.activated
    card = CardId("card_number", allocation.card_number, pin=allocation.cvv2)
    with pytest.raises(MeshError) as caught:
        await provider.balance("m", CardId("card_number", allocation.card_number))
    assert caught.value.reason == INVALID_PIN  # CVV2 required for e-cards
    activated = await provider.activate("m", "ecard-act-1", card, USD(2500), promo_code="")
    assert (activated.amount, activated.balance) == (USD(2500), USD(2500))
    assert (await provider.balance("m", card)).status == ACTIVE


async def test_operations_smartclixx_lacks_are_unimplemented(card, provider):
    for call in (provider.credit("m", "x", card, USD(1), kind="reload"), provider.cash_out("m", "x", card),
                 provider.exchange("m", "x", card, card), provider.issue_value("m", "x", card, USD(1))):
        with pytest.raises(MeshError) as caught:
            await call
        assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED and caught.value.metadata["provider"] == "smartclixx"


async def test_authorization_retried_under_its_reference_is_replayed(sim, card, provider):
    first = await provider.place_hold("m", "auth-rep", card, USD(3000), allow_partial=True, expires_at_ms=0)
    second = await provider.place_hold("m", "auth-rep", card, USD(3000), allow_partial=True, expires_at_ms=0)
    assert (first.replayed, second.replayed, second.hold_id, second.amount) == (False, True, first.hold_id, USD(2500))
    assert _sim_card(sim)["available"] == "0.00"


async def test_reversal_by_reference_first_blocks_a_later_authorization(sim, card, provider):
    early = await provider.reverse("m", "rev-early", card, provider_transaction_id=None, original_reference_id="auth-late")
    assert early.reversed is False
    with pytest.raises(MeshError) as caught:
        await provider.place_hold("m", "auth-late", card, USD(500), allow_partial=False, expires_at_ms=0)
    assert caught.value.reason == "TRANSACTION_REVERSED"
    assert _sim_card(sim)["available"] == "25.00"
