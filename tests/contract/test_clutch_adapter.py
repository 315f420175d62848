"""The Clutch adapter against the Clutch simulator over real HTTP: native holds with partial
approval, capture via settlement releasing the rest, the $0 settlement releasing a hold, the
advanced hold for an unshipped remainder, allocate by CardsetID -> activate (+ issue of the amount), and the
reversals (hold release, redemption given back, by reference after a lost reply)."""

from __future__ import annotations

import grpc
import httpx
import pytest

from common.cards import CardId
from common.config import ProviderProfile
from common.errors import CARD_ALREADY_ACTIVE, HOLD_NOT_OPEN, INSUFFICIENT_FUNDS, INVALID_PIN, MeshError
from common.money import Money
from gateway.adapters import clutch
from gateway.ports import ACTIVE, INACTIVE
from gateway.simulators import start_simulator

PAN, PIN = "6391001111111113", "2468"
USD = lambda minor: Money(minor, "USD")  # noqa: E731
RETRY = {"max_attempts": 3, "backoff_seconds": 0.01, "max_backoff_seconds": 0.5}


@pytest.fixture(scope="module")
def sim():
    with start_simulator("clutch") as running:
        yield running


@pytest.fixture
def card(sim):
    httpx.post(f"{sim.base_url}/_sim/reset")
    httpx.post(f"{sim.base_url}/_sim/cards", json={"number": PAN, "balance": "25.00", "pin": PIN})
    return CardId("card_number", PAN, pin=PIN)


def _profile(sim, **options) -> ProviderProfile:
    return ProviderProfile(
        provider="clutch", base_url=sim.base_url, timeout_seconds=2.0,
        credentials={"api_key": "clutch-sim-key", "api_secret": "clutch-sim-secret"},
        options={"brand": "SIMBRAND", "location": "WEB", "terminal": "mesh-1", **RETRY, **options},
    )


@pytest.fixture
async def provider(sim):
    adapter = clutch.build(_profile(sim))
    yield adapter
    await adapter.aclose()


def _sim_card(sim, number=PAN) -> dict:
    return httpx.get(f"{sim.base_url}/_sim/cards/{number}").json()


async def test_balance_reports_held_from_clutch_holds(sim, card, provider):
    await provider.place_hold("m", "h-1", card, USD(1000), allow_partial=False, expires_at_ms=0)
    info = await provider.balance("m", card)
    assert (info.status, info.balance, info.held) == (ACTIVE, USD(2500), USD(1000))


async def test_partial_approval_and_strict_refusal(sim, card, provider):
    with pytest.raises(MeshError) as caught:
        await provider.place_hold("m", "h-strict", card, USD(3000), allow_partial=False, expires_at_ms=0)
    assert caught.value.reason == INSUFFICIENT_FUNDS and caught.value.metadata["available_minor"] == "2500"
    assert _sim_card(sim)["available"] == "25.00"  # the short hold was released again
    partial = await provider.place_hold("m", "h-partial", card, USD(3000), allow_partial=True, expires_at_ms=0)
    assert (partial.amount, partial.open) == (USD(2500), USD(2500))


async def test_capture_settles_and_releases_the_rest(sim, card, provider):
    hold = await provider.place_hold("m", "h-cap", card, USD(2000), allow_partial=False, expires_at_ms=0)
    captured = await provider.capture_hold("m", "c-cap", card, hold.hold_id, USD(1200), release_remainder=True)
    assert (captured.amount, captured.open, captured.balance) == (USD(1200), USD(0), USD(1300))
    assert _sim_card(sim)["available"] == "13.00"


async def test_capture_keeping_the_rest_open_is_an_advanced_hold_under_the_same_hold_id(sim, card, provider):
    hold = await provider.place_hold("m", "h-adv", card, USD(2000), allow_partial=False, expires_at_ms=0)
    first = await provider.capture_hold("m", "c-adv-1", card, hold.hold_id, USD(500), release_remainder=False)
    assert (first.amount, first.open, first.balance, first.hold_id) == (USD(500), USD(1500), USD(2000), hold.hold_id)
    assert _sim_card(sim)["available"] == "5.00"
    assert len(httpx.get(f"{sim.base_url}/_sim/ledger").json()["holds"]) == 2  # the advanced hold is a new one
    retried = await provider.capture_hold("m", "c-adv-1", card, hold.hold_id, USD(500), release_remainder=False)
    assert retried.open == USD(1500) and _sim_card(sim)["balance"] == "20.00"  # replayed, nothing moved twice
    second = await provider.capture_hold("m", "c-adv-2", card, hold.hold_id, USD(700), release_remainder=False)
    assert (second.amount, second.open) == (USD(700), USD(800))
    third = await provider.capture_hold("m", "c-adv-3", card, hold.hold_id, USD(800), release_remainder=True)
    assert (third.amount, third.open, third.balance) == (USD(800), USD(0), USD(500))
    assert _sim_card(sim)["available"] == "5.00"


async def test_zero_settlement_releases_the_hold(sim, card, provider):
    hold = await provider.place_hold("m", "h-rel", card, USD(1800), allow_partial=False, expires_at_ms=0)
    released = await provider.release_hold("m", "r-rel", card, hold.hold_id, None)
    assert (released.amount, released.open, released.balance) == (USD(1800), USD(0), USD(2500))
    assert _sim_card(sim)["available"] == "25.00"
    settlements = [t for t in httpx.get(f"{sim.base_url}/_sim/ledger").json()["transactions"] if t["kind"] == "hold_reversal"]
    assert len(settlements) == 1
    with pytest.raises(MeshError) as caught:
        await provider.release_hold("m", "r-rel-2", card, hold.hold_id, None)
    assert caught.value.reason == HOLD_NOT_OPEN


async def test_partial_release_keeps_the_rest_on_a_new_hold(sim, card, provider):
    hold = await provider.place_hold("m", "h-prel", card, USD(2000), allow_partial=False, expires_at_ms=0)
    result = await provider.release_hold("m", "r-prel", card, hold.hold_id, USD(500))
    assert (result.amount, result.open, result.hold_id) == (USD(500), USD(1500), hold.hold_id)
    assert _sim_card(sim)["available"] == "10.00"
    rest = await provider.release_hold("m", "r-prel-2", card, hold.hold_id, None)
    assert (rest.amount, rest.open) == (USD(1500), USD(0)) and _sim_card(sim)["available"] == "25.00"


async def test_place_hold_retried_under_its_reference_is_replayed_by_clutch(sim, card, provider):
    first = await provider.place_hold("m", "h-rep", card, USD(1000), allow_partial=False, expires_at_ms=0)
    second = await provider.place_hold("m", "h-rep", card, USD(1000), allow_partial=False, expires_at_ms=0)
    assert (first.replayed, second.replayed, second.hold_id) == (False, True, first.hold_id)
    assert _sim_card(sim)["available"] == "15.00"


async def test_redeem_strict_and_partial_and_retry_replays(sim, card, provider):
    with pytest.raises(MeshError) as caught:
        await provider.redeem("m", "rd-strict", card, USD(3000), tip=None, allow_partial=False)
    assert caught.value.reason == INSUFFICIENT_FUNDS
    redeemed = await provider.redeem("m", "rd-1", card, USD(1000), tip=None, allow_partial=False)
    again = await provider.redeem("m", "rd-1", card, USD(1000), tip=None, allow_partial=False)
    assert (redeemed.amount, redeemed.balance) == (USD(1000), USD(1500))
    assert again.provider_transaction_id == redeemed.provider_transaction_id  # replayed, not applied twice
    assert _sim_card(sim)["balance"] == "15.00"
    partial = await provider.redeem("m", "rd-2", card, USD(9000), tip=None, allow_partial=True)
    assert (partial.amount, partial.balance) == (USD(1500), USD(0))


async def test_reverse_a_redemption_gives_it_back_once(sim, card, provider):
    redeemed = await provider.redeem("m", "rd-rev", card, USD(700), tip=None, allow_partial=False)
    first = await provider.reverse("m", "rev-a", card, provider_transaction_id=redeemed.provider_transaction_id,
                                   original_reference_id=None)
    second = await provider.reverse("m", "rev-b", card, provider_transaction_id=redeemed.provider_transaction_id,
                                    original_reference_id=None)
    assert first.reversed and first.result.amount == USD(700) and second.result.amount == USD(700)
    assert _sim_card(sim)["balance"] == "25.00"


async def test_reverse_by_reference_after_a_lost_hold_reply_releases_it(sim, card, provider):
    provider._client.http.client.headers["X-Sim-Fault"] = "reset-after"
    try:
        with pytest.raises(MeshError):
            await provider.place_hold("m", "h-lost", card, USD(900), allow_partial=False, expires_at_ms=0)
    finally:
        del provider._client.http.client.headers["X-Sim-Fault"]
    assert _sim_card(sim)["available"] == "16.00"
    reversal = await provider.reverse("m", "rev-lost", card, provider_transaction_id=None, original_reference_id="h-lost")
    assert (reversal.reversed, reversal.result.amount) == (True, USD(900))
    assert _sim_card(sim)["available"] == "25.00"
    never = await provider.reverse("m", "rev-n", card, provider_transaction_id=None, original_reference_id="never")
    assert never.reversed is False


async def test_reverse_by_reference_after_a_lost_redeem_reply_gives_it_back(sim, card, provider):
    provider._client.http.client.headers["X-Sim-Fault"] = "reset-after"
    try:
        with pytest.raises(MeshError):
            await provider.redeem("m", "rd-lost", card, USD(400), tip=None, allow_partial=False)
    finally:
        del provider._client.http.client.headers["X-Sim-Fault"]
    reversal = await provider.reverse("m", "rev-rd", card, provider_transaction_id=None, original_reference_id="rd-lost")
    assert reversal.reversed and _sim_card(sim)["balance"] == "25.00" and _sim_card(sim)["available"] == "25.00"


async def test_allocate_by_card_set_then_activate_then_issue(sim, provider):
    httpx.post(f"{sim.base_url}/_sim/reset")
    allocation = await provider.allocate("m", "al-1", "EGIFT", USD(5000))
    assert allocation.card_number.startswith("6391") and len(allocation.pin) == 4 and not allocation.activated
    card = CardId("card_number", allocation.card_number, pin=allocation.pin)
    assert (await provider.balance("m", card)).status == INACTIVE
    activated = await provider.activate("m", "ac-1", card, USD(5000), promo_code="")
    assert (activated.amount, activated.balance) == (USD(5000), USD(5000))
    again = await provider.activate("m", "ac-1", card, USD(5000), promo_code="")  # a retry replays
    assert again.balance == USD(5000) and _sim_card(sim, allocation.card_number)["balance"] == "50.00"
    issued = await provider.issue_value("m", "is-1", card, USD(1000))
    assert (issued.amount, issued.balance) == (USD(1000), USD(6000))
    with pytest.raises(MeshError) as caught:
        await provider.activate("m", "ac-2", card, USD(5000), promo_code="")
    assert caught.value.reason == CARD_ALREADY_ACTIVE
    nopin = await provider.allocate("m", "al-2", "EGIFT-NOPIN", USD(100))
    assert nopin.pin == "" and nopin.card_number.startswith("6392")


async def test_wrong_pin_and_unsupported_operations(sim, card, provider):
    with pytest.raises(MeshError) as caught:
        await provider.balance("m", CardId("card_number", PAN, pin="0000"))
    assert caught.value.reason == INVALID_PIN
    for call in (provider.cash_out("m", "x", card), provider.exchange("m", "x", card, card)):
        with pytest.raises(MeshError) as caught:
            await call
        assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED and caught.value.metadata["provider"] == "clutch"


async def test_reversal_by_reference_first_blocks_a_later_hold_and_redeem(sim, card, provider):
    for reference in ("h-late", "rd-late"):
        early = await provider.reverse("m", f"rev-{reference}", card, provider_transaction_id=None,
                                       original_reference_id=reference)
        assert early.reversed is False
    with pytest.raises(MeshError) as caught:
        await provider.place_hold("m", "h-late", card, USD(500), allow_partial=False, expires_at_ms=0)
    assert caught.value.reason == "TRANSACTION_REVERSED"
    with pytest.raises(MeshError) as caught:
        await provider.redeem("m", "rd-late", card, USD(500), tip=None, allow_partial=False)
    assert caught.value.reason == "TRANSACTION_REVERSED"
    assert (_sim_card(sim)["balance"], _sim_card(sim)["available"]) == ("25.00", "25.00")
