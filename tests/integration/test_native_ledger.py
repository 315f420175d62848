"""gateway/adapters/native/ledger.py on a real redis-server: every operation's success and refusal,
idempotency, reversal (incl. tombstones), exchange crash-resume, PIN lockout, concurrency."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from common.errors import (
    AMOUNT_EXCEEDS_OPEN,
    CARD_ALREADY_ACTIVE,
    CARD_INACTIVE,
    CARD_LOCKED,
    CARD_NOT_FOUND,
    CURRENCY_MISMATCH,
    HOLD_EXPIRED,
    HOLD_NOT_FOUND,
    HOLD_NOT_OPEN,
    IDEMPOTENCY_KEY_REUSED,
    INSUFFICIENT_FUNDS,
    INVALID_PIN,
    TRANSACTION_NOT_FOUND,
    TRANSACTION_REVERSED,
    MeshError,
)
from gateway.adapters.native.ledger import (
    BALANCE_LIMIT_EXCEEDED,
    CARD_ALREADY_EXISTS,
    CARD_HAS_OPEN_HOLDS,
    TRANSACTION_NOT_REVERSIBLE,
    NativeLedger,
)

M = "merchant-1"
CARD = "6006491234567890"
NEW_CARD = "6006499876543210"
PIN = "4321"
KEY = b"test-card-hash-key-0123456789abcdef"
T0 = 1_700_000_000_000
MINUTE = 60_000

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT


class Clock:
    """The ledger's now_ms, moved by the test (hold expiry, PIN lockout)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(redis_client, clock) -> NativeLedger:
    return NativeLedger(redis_client, KEY, clock)


# The gRPC code each refusal must carry (DESIGN.md section 3: callers branch on code + reason).
EXPECTED_CODE = {
    INSUFFICIENT_FUNDS: FAILED_PRECONDITION, CARD_ALREADY_ACTIVE: FAILED_PRECONDITION,
    CARD_INACTIVE: FAILED_PRECONDITION, CURRENCY_MISMATCH: FAILED_PRECONDITION,
    HOLD_EXPIRED: FAILED_PRECONDITION, HOLD_NOT_OPEN: FAILED_PRECONDITION,
    AMOUNT_EXCEEDS_OPEN: FAILED_PRECONDITION, IDEMPOTENCY_KEY_REUSED: FAILED_PRECONDITION,
    TRANSACTION_REVERSED: FAILED_PRECONDITION, CARD_ALREADY_EXISTS: FAILED_PRECONDITION,
    CARD_HAS_OPEN_HOLDS: FAILED_PRECONDITION, TRANSACTION_NOT_REVERSIBLE: FAILED_PRECONDITION,
    BALANCE_LIMIT_EXCEEDED: FAILED_PRECONDITION,
    CARD_NOT_FOUND: NOT_FOUND, HOLD_NOT_FOUND: NOT_FOUND, TRANSACTION_NOT_FOUND: NOT_FOUND,
    INVALID_PIN: PERMISSION_DENIED, CARD_LOCKED: PERMISSION_DENIED,
    "INVALID_ARGUMENT": INVALID_ARGUMENT,
}


async def refused(call, reason: str) -> MeshError:
    """Awaits `call`, which must fail with `reason` and its gRPC code, without card data."""
    with pytest.raises(MeshError) as caught:
        await call
    assert (caught.value.code, caught.value.reason) == (EXPECTED_CODE[reason], reason)
    for secret in (CARD, NEW_CARD, PIN):
        assert secret not in str(caught.value) and secret not in repr(caught.value)
    return caught.value


async def active_card(ledger, balance=10_000, card=CARD, pin=None, currency="USD"):
    return await ledger.create_card(M, card, currency, pin=pin, balance_minor=balance, active=True)


async def balance_of(ledger, card=CARD, pin=None):
    state = await ledger.get_card(M, card, pin=pin)
    return state.balance_minor, state.held_minor


async def assert_history_matches(ledger, card=CARD):
    """History deltas sum to the balance, and its last entry states the current totals."""
    entries = await ledger.history(M, card)
    state = await ledger.get_card(M, card, pin=PIN)
    assert sum(entry["amount_minor"] for entry in entries) == state.balance_minor
    assert (entries[-1]["balance_minor"], entries[-1]["held_minor"]) == (state.balance_minor, state.held_minor)
    return entries


def hold_args(clock, ttl=MINUTE, partial=False):
    return {"allow_partial": partial, "expires_at_ms": clock.now + ttl}


# -- provisioning, reads, card data at rest ----------------------------------------------------


async def test_create_card_keeps_only_hashes_and_a_masked_number_in_redis(ledger, redis_client):
    state = await ledger.create_card(M, CARD, "USD", pin=PIN, balance_minor=2_500)

    assert state.masked_number == "600649******7890"
    assert (state.status, state.balance_minor, state.held_minor, state.currency) == ("inactive", 2_500, 0, "USD")
    assert len(state.card_id) == 32 and state.available_minor == 2_500
    dump = []
    for key in await redis_client.keys("*"):
        dump.append(key)
        kind = await redis_client.type(key)
        if kind == b"hash":
            dump.extend(b"%s=%s" % kv for kv in (await redis_client.hgetall(key)).items())
        elif kind == b"list":
            dump.extend(await redis_client.lrange(key, 0, -1))
    blob = b"\n".join(dump)
    assert CARD.encode() not in blob and PIN.encode() not in blob
    assert b"600649******7890" in blob


async def test_every_key_of_a_card_lives_in_one_cluster_slot(ledger, redis_client, clock):
    await active_card(ledger)
    hold = await ledger.hold(M, CARD, 1_000, "USD", **hold_args(clock), client_txn_id="h1")
    await ledger.capture(M, CARD, hold.hold_id, 500, client_txn_id="c1", release_remainder=True)
    await ledger.reverse(M, CARD, client_txn_id="never-arrived")
    await ledger.exchange(M, CARD, NEW_CARD, client_txn_id="x1")

    keys = await redis_client.keys("*")
    tags = {key[: key.index(b"}") + 1] for key in keys}
    assert len(tags) == 2  # one per card
    for tag in tags:
        assert tag.startswith(b"{gc:merchant-1:")
        assert len({key_slot(key) for key in keys if key.startswith(tag)}) == 1
    suffixes = sorted(key[key.index(b"}") + 2:].decode() for key in keys)
    # The hold-expiry zset is gone once no hold is open; escrows live on the old card only.
    assert suffixes == sorted(["card", "history", "holds", "txns", "client_txns", "escrows",
                               "card", "history", "txns", "client_txns"])


async def test_create_card_twice_is_refused(ledger):
    await ledger.create_card(M, CARD, "USD")
    await refused(ledger.create_card(M, CARD, "USD", balance_minor=100), CARD_ALREADY_EXISTS)
    assert await balance_of(ledger) == (0, 0)


async def test_get_card_of_unknown_card_is_not_found(ledger):
    await refused(ledger.get_card(M, CARD), CARD_NOT_FOUND)


async def test_cards_of_different_merchants_are_separate(ledger):
    await active_card(ledger, balance=700)
    await refused(ledger.get_card("merchant-2", CARD), CARD_NOT_FOUND)


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda l: l.redeem(M, CARD, 0, "USD", partial=False, client_txn_id="r"), "amount_minor"),
        (lambda l: l.redeem(M, CARD, -5, "USD", partial=False, client_txn_id="r"), "amount_minor"),
        (lambda l: l.redeem(M, CARD, True, "USD", partial=False, client_txn_id="r"), "amount_minor"),
        (lambda l: l.redeem(M, CARD, 10, "usd", partial=False, client_txn_id="r"), "currency"),
        (lambda l: l.redeem(M, CARD, 10, "USD", partial=False, client_txn_id=""), "client_txn_id"),
        (lambda l: l.redeem(M, CARD + " ", 10, "USD", partial=False, client_txn_id="r"), "card_number"),
        (lambda l: l.redeem("m{1}", CARD, 10, "USD", partial=False, client_txn_id="r"), "merchant"),
        (lambda l: l.credit(M, CARD, 10, "USD", client_txn_id="r", kind="gift"), "kind"),
        (lambda l: l.reverse(M, CARD), "transaction_id"),
    ],
)
async def test_invalid_arguments_are_refused_without_echoing_card_data(ledger, call, field):
    await active_card(ledger)
    error = await refused(call(ledger), "INVALID_ARGUMENT")
    assert error.field == field
    assert await balance_of(ledger) == (10_000, 0)


# -- activation ---------------------------------------------------------------------------------


async def test_activate_loads_an_inactive_card(ledger):
    await ledger.create_card(M, CARD, "USD")
    result = await ledger.activate(M, CARD, 5_000, "USD", client_txn_id="a1")
    assert (result.amount_minor, result.balance_minor, result.currency) == (5_000, 5_000, "USD")
    assert result.extra["created"] is False
    assert (await ledger.get_card(M, CARD)).status == "active"
    entries = await assert_history_matches(ledger)
    assert [e["kind"] for e in entries] == ["provision", "activate"]


async def test_activate_unknown_card_creates_it_active_with_its_pin(ledger):
    result = await ledger.activate(M, CARD, 2_000, "EUR", pin=PIN, client_txn_id="sell-1")
    assert result.extra["created"] is True
    state = await ledger.get_card(M, CARD, pin=PIN)
    assert (state.status, state.balance_minor, state.currency, state.masked_number) == (
        "active", 2_000, "EUR", "600649******7890")
    await refused(ledger.get_card(M, CARD, pin="0000"), INVALID_PIN)


async def test_activating_an_active_card_is_refused_with_no_second_load(ledger):
    await ledger.create_card(M, CARD, "USD")
    await ledger.activate(M, CARD, 5_000, "USD", client_txn_id="a1")
    await refused(ledger.activate(M, CARD, 5_000, "USD", client_txn_id="a2"), CARD_ALREADY_ACTIVE)
    assert await balance_of(ledger) == (5_000, 0)
    assert len(await ledger.history(M, CARD)) == 2


async def test_activate_retry_replays_the_first_result(ledger):
    first = await ledger.activate(M, CARD, 5_000, "USD", client_txn_id="a1")
    again = await ledger.activate(M, CARD, 5_000, "USD", client_txn_id="a1")
    assert again.transaction_id == first.transaction_id
    assert (again.amount_minor, again.balance_minor, again.extra["replayed"]) == (5_000, 5_000, True)
    assert await balance_of(ledger) == (5_000, 0)


async def test_activate_refuses_other_currency_and_deactivated_cards(ledger):
    await ledger.create_card(M, CARD, "USD")
    await refused(ledger.activate(M, CARD, 100, "CAD", client_txn_id="a1"), CURRENCY_MISMATCH)
    await active_card(ledger, card=NEW_CARD)
    await ledger.cash_out(M, NEW_CARD, client_txn_id="co")
    await refused(ledger.activate(M, NEW_CARD, 100, "USD", client_txn_id="a2"), CARD_INACTIVE)


# -- holds, capture, release --------------------------------------------------------------------


async def test_hold_reserves_available_balance(ledger, clock):
    await active_card(ledger)
    hold = await ledger.hold(M, CARD, 3_000, "USD", **hold_args(clock), client_txn_id="h1")
    assert (hold.amount_minor, hold.balance_minor, hold.held_minor) == (3_000, 10_000, 3_000)
    assert hold.hold_id.startswith("h_") and hold.extra == {"requested_minor": 3_000, "partial": False}
    state = await ledger.get_card(M, CARD)
    assert (state.balance_minor, state.held_minor, state.available_minor) == (10_000, 3_000, 7_000)
    assert await ledger.get_hold(M, CARD, hold.hold_id) == {
        "hold_id": hold.hold_id, "transaction_id": hold.transaction_id, "amount_minor": 3_000,
        "captured_minor": 0, "released_minor": 0, "open_minor": 3_000, "state": "open",
        "expires_at_ms": T0 + MINUTE, "currency": "USD", "created_ms": T0,
    }


async def test_hold_strict_short_is_refused_and_partial_takes_what_is_available(ledger, clock):
    await active_card(ledger, balance=2_500)
    strict = ledger.hold(M, CARD, 3_000, "USD", **hold_args(clock), client_txn_id="h1")
    error = await refused(strict, INSUFFICIENT_FUNDS)
    assert error.metadata == {"available_minor": "2500"}
    partial = await ledger.hold(M, CARD, 3_000, "USD", **hold_args(clock, partial=True), client_txn_id="h2")
    assert (partial.amount_minor, partial.held_minor, partial.extra["partial"]) == (2_500, 2_500, True)
    nothing_left = ledger.hold(M, CARD, 1, "USD", **hold_args(clock, partial=True), client_txn_id="h3")
    await refused(nothing_left, INSUFFICIENT_FUNDS)


async def test_hold_refuses_inactive_card_other_currency_and_past_expiry(ledger, clock):
    await ledger.create_card(M, CARD, "USD", balance_minor=1_000)
    await refused(ledger.hold(M, CARD, 100, "USD", **hold_args(clock), client_txn_id="h1"), CARD_INACTIVE)
    await ledger.activate(M, CARD, 0, "USD", client_txn_id="a")
    await refused(ledger.hold(M, CARD, 100, "GBP", **hold_args(clock), client_txn_id="h1"), CURRENCY_MISMATCH)
    past = ledger.hold(M, CARD, 100, "USD", allow_partial=False, expires_at_ms=T0, client_txn_id="h1")
    await refused(past, "INVALID_ARGUMENT")
    assert await balance_of(ledger) == (1_000, 0)


async def test_captures_debit_the_hold_until_it_is_used_up(ledger, clock):
    await active_card(ledger)
    hold = await ledger.hold(M, CARD, 3_000, "USD", **hold_args(clock), client_txn_id="h1")
    first = await ledger.capture(M, CARD, hold.hold_id, 1_200, client_txn_id="c1")
    assert (first.amount_minor, first.balance_minor, first.held_minor) == (1_200, 8_800, 1_800)
    assert first.extra == {"released_minor": 0, "open_minor": 1_800, "hold_state": "open"}
    error = await refused(ledger.capture(M, CARD, hold.hold_id, 1_801, client_txn_id="c2"), AMOUNT_EXCEEDS_OPEN)
    assert error.metadata == {"open_minor": "1800"}
    last = await ledger.capture(M, CARD, hold.hold_id, 1_800, client_txn_id="c3")
    assert (last.balance_minor, last.held_minor, last.extra["hold_state"]) == (7_000, 0, "closed")
    await refused(ledger.capture(M, CARD, hold.hold_id, 1, client_txn_id="c4"), HOLD_NOT_OPEN)
    await assert_history_matches(ledger)


async def test_capture_with_release_remainder_closes_the_hold(ledger, clock):
    await active_card(ledger)
    hold = await ledger.hold(M, CARD, 3_000, "USD", **hold_args(clock), client_txn_id="h1")
    result = await ledger.capture(M, CARD, hold.hold_id, 1_000, client_txn_id="c1", release_remainder=True)
    assert (result.balance_minor, result.held_minor) == (9_000, 0)
    assert result.extra == {"released_minor": 2_000, "open_minor": 0, "hold_state": "closed"}
    info = await ledger.get_hold(M, CARD, hold.hold_id)
    assert (info["captured_minor"], info["released_minor"], info["state"]) == (1_000, 2_000, "closed")
    await refused(ledger.release(M, CARD, hold.hold_id, None, client_txn_id="r1"), HOLD_NOT_OPEN)


async def test_zero_capture_with_release_remainder_releases_everything(ledger, clock):
    await active_card(ledger)
    hold = await ledger.hold(M, CARD, 3_000, "USD", **hold_args(clock), client_txn_id="h1")
    result = await ledger.capture(M, CARD, hold.hold_id, 0, client_txn_id="c1", release_remainder=True)
    assert (result.amount_minor, result.balance_minor, result.held_minor) == (0, 10_000, 0)


async def test_expired_hold_frees_the_balance_and_refuses_capture(ledger, clock):
    await active_card(ledger)
    hold = await ledger.hold(M, CARD, 4_000, "USD", **hold_args(clock, ttl=MINUTE), client_txn_id="h1")
    clock.advance(MINUTE)  # expires_at_ms reached
    assert await balance_of(ledger) == (10_000, 0)
    error = await refused(ledger.capture(M, CARD, hold.hold_id, 100, client_txn_id="c1"), HOLD_EXPIRED)
    assert error.metadata == {"expires_at_ms": str(T0 + MINUTE)}
    await refused(ledger.release(M, CARD, hold.hold_id, None, client_txn_id="r1"), HOLD_EXPIRED)
    assert (await ledger.get_hold(M, CARD, hold.hold_id))["state"] == "expired"
    redeemed = await ledger.redeem(M, CARD, 10_000, "USD", partial=False, client_txn_id="r2")
    assert redeemed.balance_minor == 0
    entries = await assert_history_matches(ledger)
    assert [e["kind"] for e in entries] == ["provision", "hold", "hold_expired", "redeem"]
    assert entries[2]["released_minor"] == 4_000


async def test_release_part_then_all_of_a_hold(ledger, clock):
    await active_card(ledger)
    hold = await ledger.hold(M, CARD, 3_000, "USD", **hold_args(clock), client_txn_id="h1")
    part = await ledger.release(M, CARD, hold.hold_id, 1_000, client_txn_id="r1")
    assert (part.amount_minor, part.balance_minor, part.held_minor) == (1_000, 10_000, 2_000)
    assert part.extra == {"open_minor": 2_000, "hold_state": "open"}
    await refused(ledger.release(M, CARD, hold.hold_id, 2_001, client_txn_id="r2"), AMOUNT_EXCEEDS_OPEN)
    rest = await ledger.release(M, CARD, hold.hold_id, None, client_txn_id="r3")
    assert (rest.amount_minor, rest.held_minor, rest.extra["hold_state"]) == (2_000, 0, "closed")
    await refused(ledger.release(M, CARD, hold.hold_id, None, client_txn_id="r4"), HOLD_NOT_OPEN)
    await assert_history_matches(ledger)


async def test_a_hold_id_is_only_found_on_its_own_card(ledger, clock):
    await active_card(ledger)
    await active_card(ledger, card=NEW_CARD)
    hold = await ledger.hold(M, CARD, 3_000, "USD", **hold_args(clock), client_txn_id="h1")
    await refused(ledger.capture(M, NEW_CARD, hold.hold_id, 100, client_txn_id="c1"), HOLD_NOT_FOUND)
    await refused(ledger.get_hold(M, NEW_CARD, hold.hold_id), HOLD_NOT_FOUND)
    await refused(ledger.release(M, CARD, "h_unknown", None, client_txn_id="r1"), HOLD_NOT_FOUND)


# -- redeem -------------------------------------------------------------------------------------


async def test_strict_redeem_debits_or_refuses_when_short(ledger):
    await active_card(ledger, balance=5_000)
    result = await ledger.redeem(M, CARD, 1_999, "USD", partial=False, client_txn_id="r1")
    assert (result.amount_minor, result.balance_minor, result.held_minor) == (1_999, 3_001, 0)
    error = await refused(ledger.redeem(M, CARD, 3_002, "USD", partial=False, client_txn_id="r2"), INSUFFICIENT_FUNDS)
    assert error.metadata == {"available_minor": "3001"}
    assert await balance_of(ledger) == (3_001, 0)


async def test_partial_redeem_takes_what_is_available_amount_before_tip(ledger):
    await active_card(ledger, balance=5_000)
    result = await ledger.redeem(M, CARD, 4_500, "USD", partial=True, tip_minor=1_000, client_txn_id="r1")
    assert (result.amount_minor, result.balance_minor) == (5_000, 0)
    assert result.extra == {"requested_minor": 5_500, "tip_minor": 500, "partial": True}
    await refused(ledger.redeem(M, CARD, 1, "USD", partial=True, client_txn_id="r2"), INSUFFICIENT_FUNDS)


async def test_redeem_with_tip_debits_both(ledger):
    await active_card(ledger, balance=5_000)
    result = await ledger.redeem(M, CARD, 2_000, "USD", partial=False, tip_minor=300, client_txn_id="r1")
    assert (result.amount_minor, result.balance_minor, result.extra["tip_minor"]) == (2_300, 2_700, 300)
    assert (await ledger.history(M, CARD))[-1]["tip_minor"] == 300


async def test_redeem_cannot_spend_money_under_an_open_hold(ledger, clock):
    await active_card(ledger, balance=5_000)
    await ledger.hold(M, CARD, 4_000, "USD", **hold_args(clock), client_txn_id="h1")
    await refused(ledger.redeem(M, CARD, 1_001, "USD", partial=False, client_txn_id="r1"), INSUFFICIENT_FUNDS)
    result = await ledger.redeem(M, CARD, 5_000, "USD", partial=True, client_txn_id="r2")
    assert (result.amount_minor, result.balance_minor, result.held_minor) == (1_000, 4_000, 4_000)


async def test_redeem_refuses_unknown_inactive_and_other_currency(ledger):
    await refused(ledger.redeem(M, CARD, 1, "USD", partial=False, client_txn_id="r1"), CARD_NOT_FOUND)
    await ledger.create_card(M, CARD, "USD", balance_minor=1_000)
    await refused(ledger.redeem(M, CARD, 1, "USD", partial=False, client_txn_id="r1"), CARD_INACTIVE)
    await active_card(ledger, card=NEW_CARD)
    await refused(ledger.redeem(M, NEW_CARD, 1, "EUR", partial=False, client_txn_id="r1"), CURRENCY_MISMATCH)


async def test_redeem_retry_replays_and_key_reuse_is_refused(ledger):
    await active_card(ledger, balance=5_000)
    first = await ledger.redeem(M, CARD, 1_000, "USD", partial=False, client_txn_id="r1")
    again = await ledger.redeem(M, CARD, 1_000, "USD", partial=False, client_txn_id="r1")
    assert (again.transaction_id, again.amount_minor, again.balance_minor) == (first.transaction_id, 1_000, 4_000)
    assert again.extra["replayed"] is True
    await refused(ledger.redeem(M, CARD, 1_001, "USD", partial=False, client_txn_id="r1"), IDEMPOTENCY_KEY_REUSED)
    await refused(ledger.credit(M, CARD, 1_000, "USD", client_txn_id="r1"), IDEMPOTENCY_KEY_REUSED)
    assert await balance_of(ledger) == (4_000, 0)
    # The same client_txn_id on another card is another transaction.
    await active_card(ledger, card=NEW_CARD, balance=5_000)
    other = await ledger.redeem(M, NEW_CARD, 1_000, "USD", partial=False, client_txn_id="r1")
    assert other.balance_minor == 4_000 and "replayed" not in other.extra


async def test_a_refused_redeem_can_be_retried_with_the_same_key_once_funded(ledger):
    await active_card(ledger, balance=500)
    await refused(ledger.redeem(M, CARD, 1_000, "USD", partial=False, client_txn_id="r1"), INSUFFICIENT_FUNDS)
    await ledger.credit(M, CARD, 500, "USD", client_txn_id="top-up")
    result = await ledger.redeem(M, CARD, 1_000, "USD", partial=False, client_txn_id="r1")
    assert result.balance_minor == 0


# -- credit -------------------------------------------------------------------------------------


async def test_reload_and_refund_credit_an_active_card(ledger):
    await active_card(ledger, balance=1_000)
    reload = await ledger.credit(M, CARD, 2_500, "USD", client_txn_id="c1")
    refund = await ledger.credit(M, CARD, 75, "USD", client_txn_id="c2", kind="refund")
    assert (reload.amount_minor, reload.balance_minor, refund.balance_minor) == (2_500, 3_500, 3_575)
    entries = await assert_history_matches(ledger)
    assert [e["kind"] for e in entries] == ["provision", "reload", "refund"]


async def test_credit_refuses_inactive_unknown_and_other_currency(ledger):
    await refused(ledger.credit(M, CARD, 100, "USD", client_txn_id="c1"), CARD_NOT_FOUND)
    await ledger.create_card(M, CARD, "USD")
    await refused(ledger.credit(M, CARD, 100, "USD", client_txn_id="c1"), CARD_INACTIVE)
    await active_card(ledger, card=NEW_CARD)
    await refused(ledger.credit(M, NEW_CARD, 100, "EUR", client_txn_id="c1"), CURRENCY_MISMATCH)


async def test_credit_beyond_the_maximum_balance_is_refused(redis_client, clock):
    ledger = NativeLedger(redis_client, KEY, clock, max_balance_minor=50_000)
    await active_card(ledger, balance=49_000)
    await refused(ledger.credit(M, CARD, 1_001, "USD", client_txn_id="c1"), BALANCE_LIMIT_EXCEEDED)
    assert (await ledger.credit(M, CARD, 1_000, "USD", client_txn_id="c2")).balance_minor == 50_000


# -- reversal -----------------------------------------------------------------------------------


async def test_reversing_a_redeem_twice_has_one_effect(ledger):
    await active_card(ledger, balance=5_000)
    redeem = await ledger.redeem(M, CARD, 1_500, "USD", partial=False, client_txn_id="r1")
    first = await ledger.reverse(M, CARD, transaction_id=redeem.transaction_id)
    second = await ledger.reverse(M, CARD, transaction_id=redeem.transaction_id)
    by_client_id = await ledger.reverse(M, CARD, client_txn_id="r1")
    assert (first.amount_minor, first.balance_minor) == (1_500, 5_000)
    assert first.extra == {
        "reversed": True, "reversed_transaction_id": redeem.transaction_id, "reversed_kind": "redeem"}
    assert second.transaction_id == by_client_id.transaction_id == first.transaction_id
    assert second.extra["replayed"] is True and second.balance_minor == 5_000
    assert await balance_of(ledger) == (5_000, 0)
    entries = await assert_history_matches(ledger)
    assert [e["kind"] for e in entries] == ["provision", "redeem", "reversal"]
    # The original's replay still answers, and says it was reversed.
    replay = await ledger.redeem(M, CARD, 1_500, "USD", partial=False, client_txn_id="r1")
    assert replay.extra["reversed_by"] == first.transaction_id and await balance_of(ledger) == (5_000, 0)


async def test_reverse_by_client_txn_id_before_the_original_refuses_it_later(ledger):
    await active_card(ledger, balance=5_000)
    tombstone = await ledger.reverse(M, CARD, client_txn_id="timed-out-1")
    assert (tombstone.amount_minor, tombstone.balance_minor) == (0, 5_000)
    assert tombstone.extra["nothing_to_reverse"] is True and tombstone.extra["reversed"] is False
    again = await ledger.reverse(M, CARD, client_txn_id="timed-out-1")
    assert again.transaction_id == tombstone.transaction_id

    late = ledger.redeem(M, CARD, 2_000, "USD", partial=False, client_txn_id="timed-out-1")
    error = await refused(late, TRANSACTION_REVERSED)
    assert error.metadata == {"reversal_transaction_id": tombstone.transaction_id}
    assert await balance_of(ledger) == (5_000, 0)
    await assert_history_matches(ledger)


async def test_tombstone_on_an_unknown_card_stops_a_late_sell_activation(ledger):
    tombstone = await ledger.reverse(M, CARD, client_txn_id="sell-1")
    assert (tombstone.amount_minor, tombstone.currency) == (0, "")
    await refused(ledger.activate(M, CARD, 5_000, "USD", client_txn_id="sell-1"), TRANSACTION_REVERSED)
    await refused(ledger.get_card(M, CARD), CARD_NOT_FOUND)


async def test_reversing_a_capture_returns_the_money_to_the_card(ledger, clock):
    await active_card(ledger)
    hold = await ledger.hold(M, CARD, 3_000, "USD", **hold_args(clock), client_txn_id="h1")
    capture = await ledger.capture(M, CARD, hold.hold_id, 1_000, client_txn_id="c1")
    result = await ledger.reverse(M, CARD, transaction_id=capture.transaction_id)
    assert (result.amount_minor, result.balance_minor, result.held_minor) == (1_000, 10_000, 2_000)
    info = await ledger.get_hold(M, CARD, hold.hold_id)
    assert (info["captured_minor"], info["released_minor"], info["open_minor"]) == (0, 1_000, 2_000)
    await assert_history_matches(ledger)


async def test_reversing_a_hold_releases_what_is_open(ledger, clock):
    await active_card(ledger)
    hold = await ledger.hold(M, CARD, 3_000, "USD", **hold_args(clock), client_txn_id="h1")
    await ledger.capture(M, CARD, hold.hold_id, 500, client_txn_id="c1")
    result = await ledger.reverse(M, CARD, client_txn_id="h1")
    assert (result.amount_minor, result.balance_minor, result.held_minor) == (2_500, 9_500, 0)
    assert result.hold_id == hold.hold_id
    assert (await ledger.get_hold(M, CARD, hold.hold_id))["state"] == "closed"


async def test_reversing_an_activation_takes_the_load_back_and_deactivates(ledger):
    await ledger.create_card(M, CARD, "USD")
    activation = await ledger.activate(M, CARD, 5_000, "USD", client_txn_id="a1")
    result = await ledger.reverse(M, CARD, transaction_id=activation.transaction_id)
    assert (result.amount_minor, result.balance_minor) == (5_000, 0)
    assert (await ledger.get_card(M, CARD)).status == "inactive"
    # A new activation (new client_txn_id) is possible again.
    assert (await ledger.activate(M, CARD, 2_000, "USD", client_txn_id="a2")).balance_minor == 2_000


async def test_reversing_a_credit_already_spent_is_refused(ledger):
    await active_card(ledger, balance=0)
    reload = await ledger.credit(M, CARD, 1_000, "USD", client_txn_id="c1")
    await ledger.redeem(M, CARD, 600, "USD", partial=False, client_txn_id="r1")
    await refused(ledger.reverse(M, CARD, transaction_id=reload.transaction_id), INSUFFICIENT_FUNDS)
    assert await balance_of(ledger) == (400, 0)


async def test_reverse_refuses_unknown_and_irreversible_transactions(ledger):
    await active_card(ledger, balance=1_000)
    await refused(ledger.reverse(M, CARD, transaction_id="t_unknown"), TRANSACTION_NOT_FOUND)
    redeem = await ledger.redeem(M, CARD, 400, "USD", partial=False, client_txn_id="r1")
    reversal = await ledger.reverse(M, CARD, transaction_id=redeem.transaction_id)
    await refused(ledger.reverse(M, CARD, transaction_id=reversal.transaction_id), TRANSACTION_NOT_REVERSIBLE)


async def test_reversing_a_cash_out_gives_the_value_back_and_reactivates_the_card(ledger):
    await active_card(ledger, balance=1_000)
    cash_out = await ledger.cash_out(M, CARD, client_txn_id="co")
    reversal = await ledger.reverse(M, CARD, transaction_id=cash_out.transaction_id)
    assert (reversal.amount_minor, reversal.balance_minor) == (1_000, 1_000)
    assert (await ledger.get_card(M, CARD)).status == "active"
    again = await ledger.reverse(M, CARD, transaction_id=cash_out.transaction_id)
    assert again.transaction_id == reversal.transaction_id and again.balance_minor == 1_000
    assert await balance_of(ledger) == (1_000, 0)


async def test_reversing_a_redeem_on_a_cashed_out_card_is_refused(ledger):
    await active_card(ledger, balance=1_000)
    redeem = await ledger.redeem(M, CARD, 400, "USD", partial=False, client_txn_id="r1")
    await ledger.cash_out(M, CARD, client_txn_id="co")
    await refused(ledger.reverse(M, CARD, transaction_id=redeem.transaction_id), CARD_INACTIVE)


# -- cash-out -----------------------------------------------------------------------------------


async def test_cash_out_pays_out_the_balance_and_deactivates(ledger):
    await active_card(ledger, balance=3_210)
    result = await ledger.cash_out(M, CARD, client_txn_id="co")
    assert (result.amount_minor, result.balance_minor) == (3_210, 0)
    assert (await ledger.get_card(M, CARD)).status == "deactivated"
    again = await ledger.cash_out(M, CARD, client_txn_id="co")
    assert (again.transaction_id, again.amount_minor) == (result.transaction_id, 3_210)
    await refused(ledger.cash_out(M, CARD, client_txn_id="co2"), CARD_INACTIVE)
    await refused(ledger.redeem(M, CARD, 1, "USD", partial=True, client_txn_id="r"), CARD_INACTIVE)
    await assert_history_matches(ledger)


async def test_cash_out_is_refused_while_holds_are_open(ledger, clock):
    await active_card(ledger, balance=3_000)
    hold = await ledger.hold(M, CARD, 1_000, "USD", **hold_args(clock), client_txn_id="h1")
    error = await refused(ledger.cash_out(M, CARD, client_txn_id="co"), CARD_HAS_OPEN_HOLDS)
    assert error.metadata == {"held_minor": "1000"}
    await ledger.release(M, CARD, hold.hold_id, None, client_txn_id="r1")
    assert (await ledger.cash_out(M, CARD, client_txn_id="co")).amount_minor == 3_000


# -- exchange -----------------------------------------------------------------------------------


async def test_exchange_moves_the_balance_to_a_new_card(ledger):
    await active_card(ledger, balance=4_200)
    result = await ledger.exchange(M, CARD, NEW_CARD, client_txn_id="x1")
    assert (result.amount_minor, result.balance_minor, result.currency) == (4_200, 4_200, "USD")
    assert result.extra["created"] is True and result.extra["escrow_id"].startswith("x_")
    old, new = await ledger.get_card(M, CARD), await ledger.get_card(M, NEW_CARD)
    assert (old.status, old.balance_minor, new.status, new.balance_minor) == ("deactivated", 0, "active", 4_200)
    assert [e["kind"] for e in await assert_history_matches(ledger)] == ["provision", "exchange_out"]
    assert [e["kind"] for e in await assert_history_matches(ledger, NEW_CARD)] == ["exchange_in"]
    again = await ledger.exchange(M, CARD, NEW_CARD, client_txn_id="x1")
    assert again.transaction_id == result.transaction_id and await balance_of(ledger, NEW_CARD) == (4_200, 0)


async def test_exchange_into_an_inactive_card_activates_it(ledger):
    await active_card(ledger, balance=4_200)
    await ledger.create_card(M, NEW_CARD, "USD", balance_minor=300)
    result = await ledger.exchange(M, CARD, NEW_CARD, client_txn_id="x1")
    assert (result.amount_minor, result.balance_minor, result.extra["created"]) == (4_200, 4_500, False)
    assert (await ledger.get_card(M, NEW_CARD)).status == "active"


async def test_exchange_resumes_after_a_crash_following_step_a(ledger, redis_client):
    await active_card(ledger, balance=4_200)
    old, new = ledger._card(M, CARD), ledger._card(M, NEW_CARD)
    out = await ledger._exchange_out(old, new, "x1")  # step A, then the process "dies"
    assert (out.amount_minor, out.extra["escrow_state"]) == (4_200, "pending")
    assert await balance_of(ledger) == (0, 0)
    await refused(ledger.get_card(M, NEW_CARD), CARD_NOT_FOUND)

    result = await ledger.exchange(M, CARD, NEW_CARD, client_txn_id="x1")
    again = await ledger.exchange(M, CARD, NEW_CARD, client_txn_id="x1")
    assert (result.amount_minor, result.balance_minor) == (4_200, 4_200)
    assert again.transaction_id == result.transaction_id
    assert await balance_of(ledger, NEW_CARD) == (4_200, 0)
    assert len(await ledger.history(M, NEW_CARD)) == 1
    escrow = json.loads(await redis_client.hget(old.keys[6], out.extra["escrow_id"]))
    assert (escrow["state"], escrow["in_transaction_id"]) == ("completed", result.transaction_id)


async def test_exchange_resumes_after_a_crash_following_step_b(ledger, redis_client):
    await active_card(ledger, balance=4_200)
    old, new = ledger._card(M, CARD), ledger._card(M, NEW_CARD)
    out = await ledger._exchange_out(old, new, "x1")
    incoming = await ledger._exchange_in(new, out)  # steps A and B, then the process "dies"

    result = await ledger.exchange(M, CARD, NEW_CARD, client_txn_id="x1")
    assert result.transaction_id == incoming.transaction_id
    assert await balance_of(ledger, NEW_CARD) == (4_200, 0)
    assert len(await ledger.history(M, NEW_CARD)) == 1
    assert json.loads(await redis_client.hget(old.keys[6], out.extra["escrow_id"]))["state"] == "completed"


async def test_exchange_into_an_active_card_is_refused_and_the_old_card_restored(ledger):
    await active_card(ledger, balance=4_200)
    await active_card(ledger, card=NEW_CARD, balance=100)
    await refused(ledger.exchange(M, CARD, NEW_CARD, client_txn_id="x1"), CARD_ALREADY_ACTIVE)
    assert await balance_of(ledger) == (4_200, 0)
    assert (await ledger.get_card(M, CARD)).status == "active"
    assert await balance_of(ledger, NEW_CARD) == (100, 0)
    assert [e["kind"] for e in await assert_history_matches(ledger)] == ["provision", "exchange_out", "exchange_cancel"]
    # Re-calling gives the same answer and moves nothing.
    await refused(ledger.exchange(M, CARD, NEW_CARD, client_txn_id="x1"), CARD_ALREADY_ACTIVE)
    assert await balance_of(ledger) == (4_200, 0)
    assert await balance_of(ledger, NEW_CARD) == (100, 0)


async def test_exchange_refuses_cards_with_open_holds_inactive_cards_and_itself(ledger, clock):
    await active_card(ledger, balance=4_200)
    await ledger.hold(M, CARD, 100, "USD", **hold_args(clock), client_txn_id="h1")
    await refused(ledger.exchange(M, CARD, NEW_CARD, client_txn_id="x1"), CARD_HAS_OPEN_HOLDS)
    await refused(ledger.exchange(M, CARD, CARD, client_txn_id="x2"), "INVALID_ARGUMENT")
    await ledger.create_card(M, NEW_CARD, "USD")
    await refused(ledger.exchange(M, NEW_CARD, "6006490000000001", client_txn_id="x3"), CARD_INACTIVE)
    assert await balance_of(ledger) == (4_200, 100)


# -- PIN ----------------------------------------------------------------------------------------


async def test_wrong_pin_is_refused_and_five_in_a_row_lock_the_card_for_15_minutes(ledger, clock):
    await active_card(ledger, pin=PIN)
    for attempt in range(4):
        wrong = ledger.redeem(M, CARD, 100, "USD", partial=False, client_txn_id=f"r{attempt}", pin="0000")
        error = await refused(wrong, INVALID_PIN)
        assert error.metadata == {"attempts_left": str(4 - attempt)}
    await refused(ledger.get_card(M, CARD, pin="1111"), INVALID_PIN)  # fifth: locks
    await refused(ledger.get_card(M, CARD, pin=PIN), CARD_LOCKED)
    await refused(ledger.redeem(M, CARD, 100, "USD", partial=False, client_txn_id="r9", pin=PIN), CARD_LOCKED)
    clock.advance(15 * MINUTE - 1)
    await refused(ledger.get_card(M, CARD, pin=PIN), CARD_LOCKED)
    clock.advance(1)
    result = await ledger.redeem(M, CARD, 100, "USD", partial=False, client_txn_id="r9", pin=PIN)
    assert result.balance_minor == 9_900


async def test_a_correct_pin_resets_the_failure_count(ledger):
    await active_card(ledger, pin=PIN)
    for attempt in range(4):
        await refused(ledger.get_card(M, CARD, pin="0000"), INVALID_PIN)
    await ledger.get_card(M, CARD, pin=PIN)
    for attempt in range(4):
        await refused(ledger.get_card(M, CARD, pin="0000"), INVALID_PIN)
    assert (await ledger.get_card(M, CARD, pin=PIN)).balance_minor == 10_000


async def test_a_card_with_a_pin_needs_it_and_a_missing_pin_is_not_counted(ledger, clock):
    await active_card(ledger, pin=PIN)
    for _ in range(6):
        await refused(ledger.get_card(M, CARD), INVALID_PIN)
    await refused(ledger.hold(M, CARD, 100, "USD", **hold_args(clock), client_txn_id="h1"), INVALID_PIN)
    assert (await ledger.get_card(M, CARD, pin=PIN)).balance_minor == 10_000
    # Capture/credit act on earlier authorizations or merchant decisions and take no PIN.
    assert (await ledger.credit(M, CARD, 100, "USD", client_txn_id="c1")).balance_minor == 10_100


async def test_pin_lockout_numbers_are_configurable(redis_client, clock):
    ledger = NativeLedger(redis_client, KEY, clock, max_pin_failures=2, pin_lock_ms=1_000, require_pin=False)
    await active_card(ledger, pin=PIN)
    assert (await ledger.get_card(M, CARD)).balance_minor == 10_000  # PIN optional here
    await refused(ledger.get_card(M, CARD, pin="0000"), INVALID_PIN)
    error = await refused(ledger.get_card(M, CARD, pin="0000"), INVALID_PIN)
    assert error.metadata == {"locked_until_ms": str(T0 + 1_000)}
    await refused(ledger.get_card(M, CARD, pin=PIN), CARD_LOCKED)
    clock.advance(1_000)
    assert (await ledger.get_card(M, CARD, pin=PIN)).balance_minor == 10_000


# -- concurrency --------------------------------------------------------------------------------


@pytest.fixture
async def pooled_client(redis_url):
    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=64, timeout=30)
    client = aioredis.Redis(connection_pool=pool)
    await client.flushdb()
    yield client
    await client.aclose()
    await pool.aclose()


async def test_500_concurrent_redeems_of_1_00_against_100_00_exactly_100_succeed(pooled_client, clock):
    ledger = NativeLedger(pooled_client, KEY, clock)
    await active_card(ledger, balance=10_000)

    async def redeem(i):
        try:
            return await ledger.redeem(M, CARD, 100, "USD", partial=False, client_txn_id=f"r{i}")
        except MeshError as error:
            assert error.reason == INSUFFICIENT_FUNDS
            return None

    results = await asyncio.gather(*(redeem(i) for i in range(500)))
    approved = [r for r in results if r is not None]
    assert len(approved) == 100
    assert sorted(r.balance_minor for r in approved) == list(range(0, 10_000, 100))
    assert await balance_of(ledger) == (0, 0)
    entries = await assert_history_matches(ledger)
    assert sum(e["amount_minor"] for e in entries) == 0 and len(entries) == 101


async def test_concurrent_holds_and_redeems_never_overdraw_available(pooled_client, clock):
    ledger = NativeLedger(pooled_client, KEY, clock)
    await active_card(ledger, balance=10_000)

    async def op(i):
        try:
            if i % 3 == 0:
                return await ledger.hold(M, CARD, 700, "USD", allow_partial=i % 2 == 0,
                                         expires_at_ms=T0 + MINUTE, client_txn_id=f"h{i}")
            return await ledger.redeem(M, CARD, 300, "USD", partial=i % 2 == 0, tip_minor=50, client_txn_id=f"r{i}")
        except MeshError as error:
            assert error.reason == INSUFFICIENT_FUNDS
            return None

    results = [r for r in await asyncio.gather(*(op(i) for i in range(300))) if r is not None]
    assert all(r.balance_minor - r.held_minor >= 0 for r in results)
    held = sum(r.amount_minor for r in results if r.hold_id)
    redeemed = sum(r.amount_minor for r in results if not r.hold_id)
    state = await ledger.get_card(M, CARD)
    assert (state.balance_minor, state.held_minor) == (10_000 - redeemed, held)
    assert state.available_minor == 0  # more demand than money: everything got reserved or spent
    await assert_history_matches(ledger)


# -- scripts are documented ---------------------------------------------------------------------


def test_every_ledger_script_starts_with_its_contract():
    scripts = Path(__file__).parents[2] / "gateway" / "adapters" / "native" / "scripts"
    for path in scripts.glob("*.lua"):
        header = path.read_text().split("\n\n", 1)[0]
        assert header.startswith("-- "), path.name
        for word in ("KEYS", "ARGV", "Invariant"):
            assert word in header, (path.name, word)
        assert "Returns" in header or path.name == "lib.lua", path.name
