"""The mesh on a local 3-master Redis Cluster (redis.cluster = true): every script's keys share one
hash tag, so nothing may answer CROSSSLOT. The random workload (authorize, capture, release, redeem,
void, refund, reload, cash-out, exchange) and the other services' main flows (balance, tender plan,
checkout, activation, e-gift issue, deferred capture batch, scheduled reversal, the resolver) run
against it; the audit runs through RedisCluster (SCAN on every primary). Any INTERNAL answer or a
CROSSSLOT in the server's errors fails the test."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from tests.chaos.workload import Workload, run_audit
from tests.conftest import _redis_server_binary, free_port
from tests.support.mesh import start_mesh


def _cluster_port() -> int:
    # The cluster bus listens on port + 10000: both must be free.
    while True:
        port = free_port()
        if port < 55000:
            try:
                import socket
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                pass


@pytest.fixture(scope="module")
def redis_cluster_url():
    workdir = Path(tempfile.mkdtemp(prefix="giftcard-cluster-"))
    ports = [_cluster_port() for _ in range(3)]
    processes = []
    try:
        for port in ports:
            node = workdir / str(port)
            node.mkdir()
            processes.append(subprocess.Popen(
                [_redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node),
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--appendonly", "yes",
                 "--appendfsync", "always", "--save", "", "--loglevel", "warning"], stdout=subprocess.DEVNULL))
        for port in ports:
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 20
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            client.close()
        redis_cli = shutil.which("redis-cli") or str(Path(_redis_server_binary()).with_name("redis-cli"))
        subprocess.run([redis_cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while any(redis.Redis(port=p).cluster("info").get("cluster_state") != "ok" for p in ports):
            if time.monotonic() > deadline:
                raise TimeoutError("cluster not ok")
            time.sleep(0.2)
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


class _Crossslot(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage() + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        if "CROSSSLOT" in text or "MOVED" in text:
            self.found.append(text[-2000:])


@pytest.fixture
def crossslot_errors():
    handler = _Crossslot()
    logging.getLogger().addHandler(handler)
    yield handler.found
    logging.getLogger().removeHandler(handler)


async def test_random_workload_on_a_redis_cluster(redis_cluster_url, crossslot_errors):
    mesh = await start_mesh("all-in-one", redis_cluster_url, redis={"url": redis_cluster_url, "cluster": True},
                            settlement={"scheduler_enabled": False})
    try:
        workload = Workload(lambda service: mesh.stub(service), mesh.runtimes[0].providers.native_ledger,
                            random.Random(), deadline=30, max_attempts=5)
        await workload.setup(4)
        await workload.run(4, 30)
        report = await asyncio.to_thread(run_audit, redis_cluster_url, cluster=True)
        figures = workload.figures()
        figures.update(audit=report.summary(), redis="cluster 3 masters")
        print("chaos figures:", json.dumps(figures, sort_keys=True))
        assert crossslot_errors == []
        assert set(figures["statuses"]) <= {"OK", "FAILED_PRECONDITION", "NOT_FOUND", "UNIMPLEMENTED"}, figures
        assert report.ok, "\n".join(map(str, report.violations))
        mismatches = await workload.mismatches()
        assert not mismatches, "\n".join(mismatches)
        assert report.counts["cards"] >= 4 and report.counts["holds"] > 0
    finally:
        await mesh.close()


async def test_every_service_main_flow_on_a_redis_cluster(redis_cluster_url, crossslot_errors):
    from common.auth import ApiKeyStore, key_digest
    from giftcard.authorization.v1 import authorization_pb2 as apb
    from giftcard.balance.v1 import balance_pb2 as bpb
    from giftcard.fulfillment.v1 import fulfillment_pb2 as fpb
    from giftcard.settlement.v1 import settlement_pb2 as spb
    from giftcard.type.v1 import card_pb2
    from tests.chaos.workload import usd
    from tests.support.mesh import DEMO_KEY, auth

    programs = {"egift-pin": {"prefix": "603572", "pin_digits": 8}}
    merchants = {"demo": {"api_key_sha256": [key_digest(DEMO_KEY)], "currencies": ["USD"],
                          "providers": [{"provider": "native", "options": {"programs": programs}}]}}
    schedule = {"tick_seconds": 0.1, "batch_interval_seconds": 0.3, "reversal_interval_seconds": 0.3,
                "resolver_interval_seconds": 0.3, "resolver_grace_seconds": 1.0, "expiry_sweep_interval_seconds": 0.5,
                "lease_seconds": 2.0, "job_api_keys": {"demo": DEMO_KEY}}  # separate mode: jobs call the gateway
    for mode in ("all-in-one", "separate"):
        mesh = await start_mesh(mode, redis_cluster_url, redis={"url": redis_cluster_url, "cluster": True},
                                merchants=merchants, settlement=schedule)
        try:
            ledger = mesh.runtimes[0].providers.native_ledger
            workload = Workload(lambda service: mesh.stub(service), ledger, random.Random())
            a, b = await workload.new_card(balance=50_00), await workload.new_card(balance=30_00)
            inactive = await workload.new_card(active=False)
            ref = lambda n: card_pb2.CardRef(card_number=n)  # noqa: E731
            call = lambda s, m, r: getattr(mesh.stub(s), m)(r, metadata=auth(), timeout=30)  # noqa: E731

            # balance: one card, and a tender plan over two
            assert (await call("balance", "GetBalance", bpb.GetBalanceRequest(card=ref(a)))).available.amount_minor == 50_00
            plan = await call("balance", "PlanTender", bpb.PlanTenderRequest(order_total=usd(60_00), cards=[ref(a), ref(b)]))
            assert plan.covered.amount_minor == 60_00
            # authorization: multi-tender checkout (redeem), then void one of its redemptions
            checkout = await call("authorization", "Checkout", apb.CheckoutRequest(
                request_id=f"{mode}-co", order_id=f"{mode}-o1", action=apb.CHECKOUT_ACTION_REDEEM,
                tenders=[apb.CheckoutTender(card=ref(a), amount=usd(20_00)), apb.CheckoutTender(card=ref(b), amount=usd(5_00))]))
            assert checkout.ListFields()
            # fulfillment: activate a physical card, issue an e-gift card
            await call("fulfillment", "ActivatePhysicalCard", fpb.ActivatePhysicalCardRequest(
                request_id=f"{mode}-act", order_id=f"{mode}-o2", line_id="l1", card=ref(inactive), amount=usd(25_00)))
            await call("fulfillment", "IssueElectronicCard", fpb.IssueElectronicCardRequest(
                request_id=f"{mode}-iss", order_id=f"{mode}-o3", line_id="l1", program_id="egift-pin", amount=usd(15_00)))
            # settlement: deferred capture settled by the scheduler's batch, a scheduled reversal, expiry sweep
            hold = (await call("authorization", "Authorize", apb.AuthorizeRequest(
                request_id=f"{mode}-h1", order_id=f"{mode}-o4", card=ref(inactive), amount=usd(10_00)))).hold
            captured = await call("settlement", "Capture", spb.CaptureRequest(
                request_id=f"{mode}-c1", hold_id=hold.hold_id, amount=usd(4_00), shipment_id="s1", defer_to_batch=True))
            other = (await call("authorization", "Authorize", apb.AuthorizeRequest(
                request_id=f"{mode}-h2", order_id=f"{mode}-o5", card=ref(inactive), amount=usd(5_00)))).hold
            await call("settlement", "ScheduleReversal", spb.ScheduleReversalRequest(
                request_id=f"{mode}-rv", hold_id=other.hold_id, reason="cancelled"))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                listed = await call("settlement", "ListOpenSettlements", spb.ListOpenSettlementsRequest())
                if not listed.settlements:
                    break
                await asyncio.sleep(0.3)
            assert not listed.settlements, "the batch job should settle the deferred capture"
            # refund of the settled capture, reload, cash-out
            from giftcard.refund.v1 import refund_pb2 as rpb
            await call("refund", "Refund", rpb.RefundRequest(
                request_id=f"{mode}-rf", transaction_id=captured.settlement.settlement_id, amount=usd(1_00)))
            await call("refund", "Reload", rpb.ReloadRequest(request_id=f"{mode}-rl", card=ref(b), amount=usd(2_00)))
            await call("refund", "CashOut", rpb.CashOutRequest(request_id=f"{mode}-co2", card=ref(b), reason="x"))
            # API keys live in Redis too
            await ApiKeyStore(mesh.runtimes[0].redis if hasattr(mesh.runtimes[0], "redis") else ledger._redis).create("demo")
            deadline = time.monotonic() + 30
            while (state := await ledger.get_card("demo", inactive)).held_minor > 6_00 and time.monotonic() < deadline:
                await asyncio.sleep(0.3)  # the scheduled reversal releases the second hold
            # 4.00 of the first hold captured (not the final shipment: 6.00 stays held), 1.00 refunded
            assert (state.balance_minor, state.held_minor) == (25_00 - 4_00 + 1_00, 6_00)
            report = await asyncio.to_thread(run_audit, redis_cluster_url, cluster=True, grace_seconds=5)
            print("chaos figures:", json.dumps({"mode": mode, "audit": report.summary()}))
            assert report.ok, "\n".join(map(str, report.violations))
            assert crossslot_errors == []
        finally:
            await mesh.close()
