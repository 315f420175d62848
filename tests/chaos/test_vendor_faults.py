"""Vendor faults at a steady rate during the random workload: the merchant's provider is a vendor
simulator that injects timeout-after-apply, reset-after-apply, 5xx and resets (before applying) on
a share of its calls. Clients retry with the same request_id until a definite answer. After the
resolver has settled every intent, the vendor's own ledger (the simulator's card balances) and
what the mesh told its clients agree to the cent, card by card, and the mesh's audit is clean."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections import Counter
from decimal import Decimal

import grpc
import httpx
import pytest

from common.auth import key_digest
from giftcard.authorization.v1 import authorization_pb2 as apb
from giftcard.fulfillment.v1 import fulfillment_pb2 as fpb
from giftcard.refund.v1 import refund_pb2 as rpb
from giftcard.type.v1 import card_pb2
from gateway.simulators import start_simulator
from tests.chaos.test_crash import RESOLVER
from tests.chaos.workload import Workload, run_audit, usd
from tests.contract.harness import HARNESSES
from tests.support.mesh import DEMO_KEY, auth, start_mesh

# Answers a client keeps retrying through (the same request_id) until a definite one.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED)
# Operations that debit a card at the vendor, and the audit's words for their open intents.
DEBITS = ("redeem", "capture", "checkout")
OPERATOR_INTENT = re.compile(r"(redeem|hold) still (pending|resolving) after the grace period")
FAULTS = ["timeout-after", "reset-after", "http-503", "http-500", "reset", "timeout-before"]


class _Card:
    def __init__(self, balance_minor: int) -> None:
        self.balance_minor = balance_minor


class SimulatorLedger:
    """The vendor's side, through the simulator's admin API (never faulted)."""

    def __init__(self, base_url: str, sim=None) -> None:
        self.base_url = base_url
        self.sim = sim

    async def create_card(self, merchant, number, currency, *, balance_minor, active=True, pin=None):
        spec = {"number": number, "balance": f"{Decimal(balance_minor).scaleb(-2):.2f}",
                "status": "active" if active else "inactive", "currency": currency}
        httpx.post(f"{self.base_url}/_sim/cards", json=spec, timeout=10).raise_for_status()

    async def get_card(self, merchant, number) -> _Card:
        reply = httpx.get(f"{self.base_url}/_sim/cards/{number}", timeout=10)
        reply.raise_for_status()
        return _Card(int(Decimal(str(reply.json()["balance"])).scaleb(2)))

    async def history(self, merchant, number) -> list:
        """The vendor's transactions on this card (shown next to a mismatch); the simulator runs
        in this process."""
        if self.sim is None:
            return []
        return [{"kind": f"{t.kind} ext={t.external_id} reverses={t.reverses} reversed_by={t.reversed_by}",
                 "amount_minor": str(t.amount)}
                for t in list(self.sim.simulator.ledger.transactions.values()) if t.card_number == number]


async def _vendor_run(vendor: str, redis_url: str, *, rate: float, clients: int, operations: int, seed: int) -> dict:
    harness = HARNESSES[vendor]
    simulator = start_simulator(harness.simulator)
    injected: Counter = Counter()
    controller = simulator.simulator.faults
    choose = controller.choose

    def counting_choose(path, header):  # the simulator runs in this process: count what it injects
        spec = choose(path, header)
        if spec is not None:
            injected[spec.describe().split("=")[0]] += 1
        return spec

    controller.choose = counting_choose
    try:
        merchants = {"demo": {"api_key_sha256": [key_digest(DEMO_KEY)], "currencies": ["USD"],
                              "providers": [harness.profile(simulator.base_url, "shadow")]}}
        mesh = await start_mesh("all-in-one", redis_url, merchants=merchants, settlement=RESOLVER)
        try:
            workload = Workload(lambda service: mesh.stub(service), SimulatorLedger(simulator.base_url, simulator),
                                random.Random(seed), deadline=30, max_attempts=40, retry_pause=0.2)
            await workload.setup(4)
            httpx.put(f"{simulator.base_url}/_sim/faults", json={
                "rate": rate, "seed": seed, "rate_faults": FAULTS, "hang_seconds": 2.5}, timeout=10).raise_for_status()
            await workload.run(clients, operations)
            httpx.delete(f"{simulator.base_url}/_sim/faults", timeout=10).raise_for_status()
            unanswered_during_faults = list(workload.model.unresolved)
            still = await workload.settle_unanswered(max_attempts=20)
            deadline = time.monotonic() + 90
            while (report := await asyncio.to_thread(run_audit, redis_url, grace_seconds=6)).counts["intents_open"] \
                    and time.monotonic() < deadline:
                await asyncio.sleep(1)
            figures = workload.figures()
            figures.update(vendor=vendor, fault_rate=rate, seed=seed, audit=report.summary(),
                           faults_injected=dict(injected), unanswered_during_faults=unanswered_during_faults,
                           vendor_errors_seen=sum(v for k, v in figures["statuses"].items()
                                                  if k not in ("OK", "FAILED_PRECONDITION")))
            violations, left_for_operator = list(report.violations), []
            if not harness.reverse_by_reference:
                # Ackroo can neither find nor undo a debit whose reply was lost (no caller id, no
                # lookup): its intent stays for an operator, the audit shows it, the client never
                # gets an answer and the card is uncertain (excluded from the comparison).
                left_for_operator = [v for v in violations if OPERATOR_INTENT.match(v.problem)]
                violations = [v for v in violations if v not in left_for_operator]
                still = [call for call in still if call[0] not in DEBITS]
            figures["left_for_operator"] = len(left_for_operator)
            print("chaos figures:", json.dumps(figures, sort_keys=True))
            assert not violations, "\n".join(map(str, violations))
            assert not left_for_operator or figures["uncertain_cards"] > 0, figures
            assert workload.model.wrong == []
            mismatches = await workload.mismatches()
            assert not mismatches, "\n".join(mismatches)
            # Once the faults stop, every operation gets a definite answer.
            assert not still, figures["unresolved"]
            assert sum(injected.values()) >= 3, injected
            return figures
        finally:
            await mesh.close()
    finally:
        simulator.stop()


async def test_vendor_faults_at_a_steady_rate_leave_vendor_and_mesh_in_agreement(redis_client, redis_url):
    await _vendor_run("paytronix", redis_url, rate=0.25, clients=4, operations=12, seed=random.randrange(1 << 30))


@pytest.mark.slow
@pytest.mark.parametrize("vendor", ["paytronix", "ackroo", "radial"])
async def test_vendor_faults_long(redis_client, redis_url, vendor):
    await _vendor_run(vendor, redis_url, rate=0.2, clients=6, operations=120, seed=random.randrange(1 << 30))


@contextlib.asynccontextmanager
async def vendor_mesh(redis_url: str, settlement: dict | None = None, vendor: str = "paytronix"):
    """A vendor simulator and an all-in-one mesh whose merchant `demo` runs on it (its resolver
    on a short grace unless `settlement` says otherwise)."""
    harness = HARNESSES[vendor]
    simulator = start_simulator(harness.simulator)
    try:
        merchants = {"demo": {"api_key_sha256": [key_digest(DEMO_KEY)], "currencies": ["USD"],
                              "providers": [harness.profile(simulator.base_url, "shadow")]}}
        mesh = await start_mesh("all-in-one", redis_url, merchants=merchants, settlement=settlement or RESOLVER)
        try:
            yield simulator, mesh
        finally:
            await mesh.close()
    finally:
        simulator.stop()


def lose_next_reply(simulator, path: str, fault: str = "reset-after") -> None:
    """The vendor applies the next call to `path`, and its reply never reaches the mesh."""
    httpx.post(f"{simulator.base_url}/_sim/faults", json={"fault": fault, "path": path, "count": 1},
               timeout=10).raise_for_status()


async def retry_until_answered(call, request, *, seconds: float = 40):
    """Retry like a client: the same request until an answer that is not retryable. Returns
    (reply, None) or (None, the refusal); (None, None) when none came in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return await call(request, metadata=auth(), timeout=20), None
        except grpc.aio.AioRpcError as error:
            if error.code() not in RETRYABLE:
                return None, error
            await asyncio.sleep(1)
    return None, None


def card(number: str) -> card_pb2.CardRef:
    return card_pb2.CardRef(card_number=number)


async def test_void_resent_after_its_reply_was_lost_answers_the_whole_credit(redis_client, redis_url):
    """Paytronix answers a resent reversal with `transaction.already_reversed` and no amount: the
    void still reports what it gave back (the whole redemption), not zero."""
    async with vendor_mesh(redis_url) as (simulator, mesh):
        ledger = SimulatorLedger(simulator.base_url)
        number = "6035719000000021"
        await ledger.create_card("demo", number, "USD", balance_minor=40_00)
        stub = mesh.stub("authorization")
        redeemed = await stub.Redeem(apb.RedeemRequest(request_id="redeem-1", card=card(number), amount=usd(12_34)),
                                     metadata=auth(), timeout=20)
        lose_next_reply(simulator, "/gift/reverse.json")
        voided, refused = await retry_until_answered(stub.VoidRedemption, apb.VoidRedemptionRequest(
            request_id="void-1", transaction_id=redeemed.transaction.transaction_id))
        assert refused is None, refused
        assert (await ledger.get_card("demo", number)).balance_minor == 40_00  # undone once at the vendor
        assert voided is not None and voided.credited.amount_minor == 12_34


async def test_reload_applied_at_paytronix_with_its_reply_lost_is_answered_once_faults_stop(redis_client, redis_url):
    async with vendor_mesh(redis_url) as (simulator, mesh):
        ledger = SimulatorLedger(simulator.base_url)
        number = "6035719000000001"
        await ledger.create_card("demo", number, "USD", balance_minor=10_00)
        lose_next_reply(simulator, "/gift/reload.json", "timeout-after=3s")
        answer, refused = await retry_until_answered(mesh.stub("refund").Reload, rpb.ReloadRequest(
            request_id="reload-1", card=card(number), amount=usd(5_00)))
        assert refused is None, refused
        assert (await ledger.get_card("demo", number)).balance_minor == 15_00  # applied once at the vendor
        assert answer is not None, "the client never got a definite answer"
        assert answer.balance.amount_minor == 15_00


async def test_exchange_applied_at_paytronix_with_its_reply_lost_is_not_refused(redis_client, redis_url):
    async with vendor_mesh(redis_url) as (simulator, mesh):
        ledger = SimulatorLedger(simulator.base_url)
        old, new = "6035719000000011", "6035719000000012"
        await ledger.create_card("demo", old, "USD", balance_minor=30_00)
        await ledger.create_card("demo", new, "USD", balance_minor=0, active=False)
        lose_next_reply(simulator, "/gift/exchange.json")
        answer, refused = await retry_until_answered(mesh.stub("fulfillment").ExchangeCard, fpb.ExchangeCardRequest(
            request_id="xchg-1", from_card=card(old), to_card=card(new), reason=fpb.EXCHANGE_REASON_LOST))
        assert (await ledger.get_card("demo", new)).balance_minor == 30_00  # moved once at the vendor
        assert refused is None, f"refused although the vendor moved the balance: {refused.code()} {refused.details()}"
        assert answer is not None and answer.moved.amount_minor == 30_00


async def test_cash_out_applied_at_paytronix_with_its_reply_lost_answers_what_it_removed(redis_client, redis_url):
    async with vendor_mesh(redis_url) as (simulator, mesh):
        ledger = SimulatorLedger(simulator.base_url)
        number = "6035719000000031"
        await ledger.create_card("demo", number, "USD", balance_minor=27_15)
        lose_next_reply(simulator, "/gift/cashOut.json")
        answer, refused = await retry_until_answered(mesh.stub("refund").CashOut, rpb.CashOutRequest(
            request_id="cash-out-1", card=card(number), reason="closing the account"))
        assert refused is None, refused
        assert (await ledger.get_card("demo", number)).balance_minor == 0  # removed once at the vendor
        assert answer is not None and answer.amount_removed.amount_minor == 27_15


async def test_redeem_resent_after_the_card_was_closed_answers_what_the_first_attempt_took(redis_client, redis_url):
    """The first attempt applied (every reply lost), then another operation closed the card: the
    resend is refused by the vendor (card deactivated) but the first debit stands, so the client
    is told it was redeemed, not declined. (The resolver is off: it would reverse it first.)"""
    async with vendor_mesh(redis_url, settlement={"scheduler_enabled": False}) as (simulator, mesh):
        ledger = SimulatorLedger(simulator.base_url)
        old, new = "6035719000000041", "6035719000000042"
        await ledger.create_card("demo", old, "USD", balance_minor=40_00)
        await ledger.create_card("demo", new, "USD", balance_minor=0, active=False)
        stub = mesh.stub("authorization")
        redeem = apb.RedeemRequest(request_id="redeem-41", card=card(old), amount=usd(12_34))
        httpx.post(f"{simulator.base_url}/_sim/faults", json={"fault": "timeout-after=3s", "path": "/gift/redeem.json",
                   "count": 20}, timeout=10).raise_for_status()  # the adapter's own resends too
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Redeem(redeem, metadata=auth(), timeout=10)
        httpx.delete(f"{simulator.base_url}/_sim/faults", timeout=10).raise_for_status()
        await asyncio.sleep(1)  # the circuit breaker's cool-down (harness: 0.5 s)
        assert (await ledger.get_card("demo", old)).balance_minor == 27_66  # applied once at the vendor
        moved = await mesh.stub("fulfillment").ExchangeCard(fpb.ExchangeCardRequest(
            request_id="xchg-41", from_card=card(old), to_card=card(new), reason=fpb.EXCHANGE_REASON_LOST),
            metadata=auth(), timeout=20)
        assert moved.moved.amount_minor == 27_66
        answer, refused = await retry_until_answered(stub.Redeem, redeem)
        assert refused is None, f"refused although the vendor took the money: {refused.code()} {refused.details()}"
        assert answer is not None and answer.redeemed.amount_minor == 12_34
        assert ((await ledger.get_card("demo", old)).balance_minor, (await ledger.get_card("demo", new)).balance_minor) \
            == (0, 27_66)


async def test_reload_retried_after_the_card_was_closed_answers_the_reload_that_applied(redis_client, redis_url):
    """The first reload applied (every reply lost), an exchange closed the card, then the client
    retries: the refund service must not refuse it for the card's new state (its first attempt
    may be why the state changed); the adapter answers what the first attempt did."""
    async with vendor_mesh(redis_url, settlement={"scheduler_enabled": False}) as (simulator, mesh):
        ledger = SimulatorLedger(simulator.base_url)
        old, new = "6035719000000051", "6035719000000052"
        await ledger.create_card("demo", old, "USD", balance_minor=10_00)
        await ledger.create_card("demo", new, "USD", balance_minor=0, active=False)
        reload = rpb.ReloadRequest(request_id="reload-51", card=card(old), amount=usd(6_54))
        httpx.post(f"{simulator.base_url}/_sim/faults", json={"fault": "timeout-after=3s", "path": "/gift/reload.json",
                   "count": 20}, timeout=10).raise_for_status()  # the adapter's own resends too
        with pytest.raises(grpc.aio.AioRpcError):
            await mesh.stub("refund").Reload(reload, metadata=auth(), timeout=10)
        httpx.delete(f"{simulator.base_url}/_sim/faults", timeout=10).raise_for_status()
        await asyncio.sleep(1)  # the circuit breaker's cool-down (harness: 0.5 s)
        assert (await ledger.get_card("demo", old)).balance_minor == 16_54  # applied once at the vendor
        moved = await mesh.stub("fulfillment").ExchangeCard(fpb.ExchangeCardRequest(
            request_id="xchg-51", from_card=card(old), to_card=card(new), reason=fpb.EXCHANGE_REASON_LOST),
            metadata=auth(), timeout=20)
        assert moved.moved.amount_minor == 16_54
        answer, refused = await retry_until_answered(mesh.stub("refund").Reload, reload)
        assert refused is None, f"refused although the vendor applied it: {refused.code()} {refused.details()}"
        assert answer is not None and answer.transaction.amount.amount_minor == 6_54


async def test_radial_redeem_retried_after_the_card_was_cashed_out_answers_the_redemption_that_stands(
        redis_client, redis_url):
    """Radial: the first redeem applied with its reply lost, a cash-out then closed the card, and
    the retry's void of the first attempt is refused (card deactivated): that redemption stands
    and is the answer, not a decline."""
    async with vendor_mesh(redis_url, settlement={"scheduler_enabled": False}, vendor="radial") as (simulator, mesh):
        ledger = SimulatorLedger(simulator.base_url)
        number = "6035719000000061"
        await ledger.create_card("demo", number, "USD", balance_minor=40_00)
        redeem = apb.RedeemRequest(request_id="redeem-61", card=card(number), amount=usd(12_34))
        # One lost reply, and a deadline too short for the adapter's own resend.
        lose_next_reply(simulator, HARNESSES["radial"].redeem_path, "timeout-after=5s")
        with pytest.raises(grpc.aio.AioRpcError):
            await mesh.stub("authorization").Redeem(redeem, metadata=auth(), timeout=3)
        assert (await ledger.get_card("demo", number)).balance_minor == 27_66  # applied once at the vendor
        removed = await mesh.stub("refund").CashOut(rpb.CashOutRequest(request_id="cash-out-61", card=card(number),
                                                                       reason="closing"), metadata=auth(), timeout=20)
        assert removed.amount_removed.amount_minor == 27_66
        answer, refused = await retry_until_answered(mesh.stub("authorization").Redeem, redeem)
        assert refused is None, f"refused although the redemption stands: {refused.code()} {refused.details()}"
        assert answer is not None and answer.redeemed.amount_minor == 12_34


async def test_ackroo_write_whose_reply_was_lost_is_never_sent_twice(redis_client, redis_url):
    """Ackroo deduplicates nothing: after a lost reply, a retry of the redeem must not debit the
    card again; it answers 'outcome unknown' (the operator's case) and the card moved once."""
    async with vendor_mesh(redis_url, settlement={"scheduler_enabled": False}, vendor="ackroo") as (simulator, mesh):
        ledger = SimulatorLedger(simulator.base_url)
        number = "6035719000000071"
        await ledger.create_card("demo", number, "USD", balance_minor=40_00)
        redeem = apb.RedeemRequest(request_id="redeem-71", card=card(number), amount=usd(12_34))
        lose_next_reply(simulator, HARNESSES["ackroo"].redeem_path, "timeout-after=5s")
        with pytest.raises(grpc.aio.AioRpcError):
            await mesh.stub("authorization").Redeem(redeem, metadata=auth(), timeout=3)
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await mesh.stub("authorization").Redeem(redeem, metadata=auth(), timeout=10)
            assert caught.value.code() in RETRYABLE, caught.value
            await asyncio.sleep(0.5)
        assert (await ledger.get_card("demo", number)).balance_minor == 27_66  # debited once, never again
