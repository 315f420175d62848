"""Vendor faults at a steady rate during the random workload: the merchant's provider is a vendor
simulator that injects timeout-after-apply, reset-after-apply, 5xx and resets (before applying) on
a share of its calls. Clients retry with the same request_id until a definite answer. After the
resolver has settled every intent, the vendor's own ledger (the simulator's card balances) and
what the mesh told its clients agree to the cent, card by card, and the mesh's audit is clean."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from decimal import Decimal

import httpx
import pytest

from common.auth import key_digest
from gateway.simulators import start_simulator
from tests.chaos.test_crash import RESOLVER
from tests.chaos.workload import Workload, run_audit
from tests.contract.harness import HARNESSES
from tests.support.mesh import DEMO_KEY, start_mesh

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
                                random.Random(seed), deadline=30, max_attempts=40, retry_pause=0.2,
                                # Known bug: test_exchange_applied_at_paytronix_with_its_reply_lost_is_not_refused
                                exclude=("exchange",))
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
            print("chaos figures:", json.dumps(figures, sort_keys=True))
            assert report.ok, "\n".join(map(str, report.violations))
            assert workload.model.wrong == []
            mismatches = await workload.mismatches()
            assert not mismatches, "\n".join(mismatches)
            # Known bug (test_reload_applied_at_paytronix_with_its_reply_lost_is_answered_once_faults_stop):
            # a credit the vendor applied but whose reply was lost never gets an answer. Its cards
            # are excluded above (uncertain); anything else left unanswered fails.
            assert all(op in ("reload", "refund", "cash_out") for op, *_ in still), figures["unresolved"]
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


@pytest.mark.xfail(strict=True, reason="bug: Paytronix answers a reused externalTransactionId with "
                   "transaction.duplicate_external_id (never a replay), the adapter maps it to UNAVAILABLE "
                   "'outcome unknown', and nothing resolves a credit (Reload / CashOut) whose first call was "
                   "applied with its reply lost: every retry with the same request_id answers UNAVAILABLE forever")
async def test_reload_applied_at_paytronix_with_its_reply_lost_is_answered_once_faults_stop(redis_client, redis_url):
    from giftcard.refund.v1 import refund_pb2 as rpb
    from giftcard.type.v1 import card_pb2
    from tests.chaos.workload import usd
    from tests.support.mesh import auth
    import grpc

    harness = HARNESSES["paytronix"]
    simulator = start_simulator(harness.simulator)
    try:
        merchants = {"demo": {"api_key_sha256": [key_digest(DEMO_KEY)], "currencies": ["USD"],
                              "providers": [harness.profile(simulator.base_url, "shadow")]}}
        mesh = await start_mesh("all-in-one", redis_url, merchants=merchants, settlement=RESOLVER)
        try:
            ledger = SimulatorLedger(simulator.base_url)
            number = "6035719000000001"
            await ledger.create_card("demo", number, "USD", balance_minor=10_00)
            httpx.post(f"{simulator.base_url}/_sim/faults", json={
                "fault": "timeout-after=3s", "path": "/gift/reload.json", "count": 1}, timeout=10).raise_for_status()
            request = rpb.ReloadRequest(request_id="reload-1", card=card_pb2.CardRef(card_number=number), amount=usd(5_00))
            answer = None
            deadline = time.monotonic() + 20
            while answer is None and time.monotonic() < deadline:
                try:
                    answer = await mesh.stub("refund").Reload(request, metadata=auth(), timeout=20)
                except grpc.aio.AioRpcError as error:
                    assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                            grpc.StatusCode.ABORTED), error
                    await asyncio.sleep(1)
            assert (await ledger.get_card("demo", number)).balance_minor == 15_00  # applied once at the vendor
            assert answer is not None, "the client never got a definite answer"
            assert answer.balance.amount_minor == 15_00
        finally:
            await mesh.close()
    finally:
        simulator.stop()


@pytest.mark.xfail(strict=True, reason="bug: the Paytronix exchange is sent without externalTransactionId, so a "
                   "retry after a lost reply (reset-after / timeout-after) cannot be deduplicated: the vendor moved "
                   "the balance, the retry finds the old card deactivated and the mesh answers a refusal")
async def test_exchange_applied_at_paytronix_with_its_reply_lost_is_not_refused(redis_client, redis_url):
    from giftcard.fulfillment.v1 import fulfillment_pb2 as fpb
    from giftcard.type.v1 import card_pb2
    from tests.support.mesh import auth
    import grpc

    harness = HARNESSES["paytronix"]
    simulator = start_simulator(harness.simulator)
    try:
        merchants = {"demo": {"api_key_sha256": [key_digest(DEMO_KEY)], "currencies": ["USD"],
                              "providers": [harness.profile(simulator.base_url, "shadow")]}}
        mesh = await start_mesh("all-in-one", redis_url, merchants=merchants, settlement=RESOLVER)
        try:
            ledger = SimulatorLedger(simulator.base_url, simulator)
            old, new = "6035719000000011", "6035719000000012"
            await ledger.create_card("demo", old, "USD", balance_minor=30_00)
            await ledger.create_card("demo", new, "USD", balance_minor=0, active=False)
            httpx.post(f"{simulator.base_url}/_sim/faults", json={
                "fault": "reset-after", "path": "/gift/exchange.json", "count": 1}, timeout=10).raise_for_status()
            request = fpb.ExchangeCardRequest(request_id="xchg-1", from_card=card_pb2.CardRef(card_number=old),
                                              to_card=card_pb2.CardRef(card_number=new), reason=fpb.EXCHANGE_REASON_LOST)
            answer, refused = None, None
            deadline = time.monotonic() + 40
            while answer is None and refused is None and time.monotonic() < deadline:
                try:
                    answer = await mesh.stub("fulfillment").ExchangeCard(request, metadata=auth(), timeout=20)
                except grpc.aio.AioRpcError as error:
                    if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                            grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL):
                        refused = error
                    await asyncio.sleep(1)
            assert (await ledger.get_card("demo", new)).balance_minor == 30_00  # moved once at the vendor
            assert refused is None, f"refused although the vendor moved the balance: {refused.code()} {refused.details()}"
            assert answer is not None and answer.moved.amount_minor == 30_00
        finally:
            await mesh.close()
    finally:
        simulator.stop()
