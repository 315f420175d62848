"""Random operation sequences against the native ledger on a real redis-server, checked against a
small Python model after every step: balance >= 0, held <= balance, history deltas sum to the
balance, per hold captured + released <= amount, and balance/held/hold states equal the model's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import (
    AMOUNT_EXCEEDS_OPEN,
    CARD_ALREADY_ACTIVE,
    CARD_INACTIVE,
    HOLD_EXPIRED,
    HOLD_NOT_OPEN,
    INSUFFICIENT_FUNDS,
    MeshError,
)
from gateway.adapters.native.ledger import NativeLedger

M = "merchant-prop"
KEY = b"property-test-card-hash-key-0123456789"
T0 = 1_700_000_000_000

amounts = st.integers(min_value=1, max_value=4_000)
index = st.integers(min_value=0, max_value=30)
# Capture/release amounts as a percentage of what the hold has open, so that most of them fit
# (and some, above 100, exceed it).
percent = st.integers(min_value=0, max_value=120)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("redeem"), amounts, st.booleans(), st.sampled_from([0, 0, 150])),
        st.tuples(st.just("hold"), amounts, st.booleans(), st.integers(min_value=1, max_value=5_000)),
        st.tuples(st.just("capture"), index, percent, st.booleans()),
        st.tuples(st.just("release"), index, st.none() | percent),
        st.tuples(st.just("credit"), amounts, st.sampled_from(["reload", "refund"])),
        st.tuples(st.just("activate"), st.integers(min_value=0, max_value=4_000)),
        st.tuples(st.just("reverse"), index, st.booleans()),
        st.tuples(st.just("retry"), index),
        st.tuples(st.just("wait"), st.integers(min_value=0, max_value=3_000)),
    ),
    min_size=5,
    max_size=40,
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@dataclass
class Hold:
    hold_id: str
    amount: int
    expires_at: int
    captured: int = 0
    released: int = 0
    state: str = "open"

    @property
    def open(self) -> int:
        return self.amount - self.captured - self.released if self.state == "open" else 0


@dataclass
class Txn:
    transaction_id: str
    client_txn_id: str
    kind: str
    amount: int
    hold: Hold | None = None
    reversed: bool = False


class Model:
    """What the ledger should hold, computed independently of it."""

    def __init__(self, opening: int) -> None:
        self.balance = opening
        self.status = "active"
        self.holds: list[Hold] = []
        self.txns: list[Txn] = []

    def expire(self, now: int) -> None:
        for hold in self.holds:
            if hold.state == "open" and hold.expires_at <= now:
                hold.state = "expired"

    @property
    def held(self) -> int:
        return sum(hold.open for hold in self.holds)

    @property
    def available(self) -> int:
        return self.balance - self.held

    def approve(self, requested: int, partial: bool) -> int:
        """Approved amount, or raise the reason the ledger must give."""
        if self.status != "active":
            raise Refusal(CARD_INACTIVE)
        if requested <= self.available:
            return requested
        if partial and self.available > 0:
            return self.available
        raise Refusal(INSUFFICIENT_FUNDS)


class Refusal(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


async def run_sequence(redis_client, ops) -> None:
    clock = Clock()
    ledger = NativeLedger(redis_client, KEY, clock)
    card = str(uuid.uuid4().int)[:16]  # a fresh card per example: no state leaks between them
    first = await ledger.activate(M, card, 5_000, "USD", client_txn_id="activation")
    model = Model(5_000)
    model.txns.append(Txn(first.transaction_id, "activation", "activate", 5_000))
    done: list[tuple[object, object]] = []  # (call factory, first result) of successful calls

    for step, op in enumerate(ops):
        key = f"k{step}"
        model.expire(clock.now)
        name = op[0]
        expected_reason = None
        call = None
        try:
            if name == "redeem":
                _, amount, partial, tip = op
                call = lambda k=key, a=amount, p=partial, t=tip: ledger.redeem(  # noqa: E731
                    M, card, a, "USD", partial=p, tip_minor=t, client_txn_id=k)
                approved = model.approve(amount + tip, partial)
                result = await call()
                assert result.amount_minor == approved
                model.balance -= approved
                model.txns.append(Txn(result.transaction_id, key, "redeem", approved))
            elif name == "hold":
                _, amount, partial, ttl = op
                call = lambda k=key, a=amount, p=partial, e=clock.now + ttl: ledger.hold(  # noqa: E731
                    M, card, a, "USD", allow_partial=p, expires_at_ms=e, client_txn_id=k)
                approved = model.approve(amount, partial)
                result = await call()
                assert result.amount_minor == approved
                hold = Hold(result.hold_id, approved, clock.now + ttl)
                model.holds.append(hold)
                model.txns.append(Txn(result.transaction_id, key, "hold", approved, hold))
            elif name in ("capture", "release"):
                if not model.holds:
                    continue
                hold = model.holds[op[1] % len(model.holds)]
                amount = None if op[2] is None else max(hold.open * op[2] // 100, op[2] // 100)
                if name == "release" and amount == 0:
                    amount = 1  # release takes a positive amount (or None for all)
                if hold.state == "expired":
                    expected_reason = HOLD_EXPIRED
                elif hold.state != "open":
                    expected_reason = HOLD_NOT_OPEN
                elif (amount if amount is not None else 0) > hold.open:
                    expected_reason = AMOUNT_EXCEEDS_OPEN
                if name == "capture":
                    call = lambda k=key, h=hold.hold_id, a=amount, r=op[3]: ledger.capture(  # noqa: E731
                        M, card, h, a, client_txn_id=k, release_remainder=r)
                else:
                    call = lambda k=key, h=hold.hold_id, a=amount: ledger.release(  # noqa: E731
                        M, card, h, a, client_txn_id=k)
                if expected_reason:
                    raise Refusal(expected_reason)
                result = await call()
                if name == "capture":
                    released = hold.open - amount if op[3] else 0
                    hold.captured += amount
                    hold.released += released
                    model.balance -= amount
                    model.txns.append(Txn(result.transaction_id, key, "capture", amount, hold))
                    assert result.amount_minor == amount
                else:
                    moved = hold.open if amount is None else amount
                    hold.released += moved
                    assert result.amount_minor == moved
                if hold.amount == hold.captured + hold.released:
                    hold.state = "closed"
            elif name == "credit":
                _, amount, kind = op
                call = lambda k=key, a=amount, kd=kind: ledger.credit(  # noqa: E731
                    M, card, a, "USD", client_txn_id=k, kind=kd)
                if model.status != "active":
                    raise Refusal(CARD_INACTIVE)
                result = await call()
                model.balance += amount
                model.txns.append(Txn(result.transaction_id, key, kind, amount))
            elif name == "activate":
                call = lambda k=key, a=op[1]: ledger.activate(M, card, a, "USD", client_txn_id=k)  # noqa: E731
                if model.status == "active":
                    raise Refusal(CARD_ALREADY_ACTIVE)
                result = await call()
                model.status = "active"
                model.balance += op[1]
                model.txns.append(Txn(result.transaction_id, key, "activate", op[1]))
            elif name == "reverse":
                txn = pick_for_reversal(model, op[1])
                by_id = op[2]
                result = await (ledger.reverse(M, card, transaction_id=txn.transaction_id) if by_id
                                else ledger.reverse(M, card, client_txn_id=txn.client_txn_id))
                if txn.reversed:
                    assert result.extra["replayed"] is True
                else:
                    expected = reverse_in_model(model, txn)
                    assert result.amount_minor == expected
                    txn.reversed = True
            elif name == "retry":
                if not done:
                    continue
                factory, first_result = done[op[1] % len(done)]
                again = await factory()
                assert again.transaction_id == first_result.transaction_id
                assert again.amount_minor == first_result.amount_minor
                assert again.extra["replayed"] is True
            elif name == "wait":
                clock.now += op[1]
                model.expire(clock.now)
        except Refusal as refusal:
            with pytest.raises(MeshError) as caught:
                await call()
            assert caught.value.reason == refusal.reason, (op, refusal.reason, caught.value.reason)
        except MeshError as error:
            if name == "reverse" and error.reason == INSUFFICIENT_FUNDS:
                # A credit whose value has since been spent or held cannot be taken back.
                txn = pick_for_reversal(model, op[1])
                assert txn.kind in ("activate", "reload", "refund") and txn.amount > model.available
            else:
                raise
        else:
            if call is not None:
                done.append((call, result))

        await check_invariants(ledger, card, model)


def pick_for_reversal(model: Model, index: int) -> Txn:
    """Mostly later transactions: reversing the activation deactivates the card, ending the run."""
    if len(model.txns) == 1 or index == 0:
        return model.txns[0]
    return model.txns[1 + index % (len(model.txns) - 1)]


def reverse_in_model(model: Model, txn: Txn) -> int:
    if txn.kind in ("redeem", "capture"):
        model.balance += txn.amount
        if txn.hold:
            txn.hold.captured -= txn.amount
            txn.hold.released += txn.amount
        return txn.amount
    if txn.kind == "hold":
        moved = txn.hold.open
        if txn.hold.state == "open":
            txn.hold.released += moved
            txn.hold.state = "closed"
        return moved
    if txn.amount > model.available:
        return -1  # the ledger must refuse; see the MeshError branch
    model.balance -= txn.amount
    if txn.kind == "activate" and model.balance == 0 and model.held == 0:
        model.status = "inactive"
    return txn.amount


async def check_invariants(ledger: NativeLedger, card: str, model: Model) -> None:
    state = await ledger.get_card(M, card)
    history = await ledger.history(M, card)
    assert state.balance_minor >= 0
    assert 0 <= state.held_minor <= state.balance_minor
    assert sum(entry["amount_minor"] for entry in history) == state.balance_minor
    assert (state.balance_minor, state.held_minor, state.status) == (model.balance, model.held, model.status)
    for hold in model.holds:
        info = await ledger.get_hold(M, card, hold.hold_id)
        assert info["captured_minor"] + info["released_minor"] <= info["amount_minor"]
        assert (info["captured_minor"], info["released_minor"], info["state"]) == (
            hold.captured, hold.released, hold.state), hold


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
async def test_random_operation_sequences_keep_the_ledger_invariants(redis_client, ops):
    await run_sequence(redis_client, ops)
