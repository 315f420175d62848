"""The Prometheus endpoint after a real workload: the named series exist with exact values, and
label cardinality does not grow with the number of distinct cards."""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from giftcard.balance.v1 import balance_pb2
from giftcard.fulfillment.v1 import fulfillment_pb2
from giftcard.type.v1 import card_pb2, money_pb2
from tests.support.mesh import auth, start_mesh

BALANCE = "giftcard.balance.v1.BalanceService"
FULFILLMENT = "giftcard.fulfillment.v1.FulfillmentService"
CARD_100 = "6035710000000001"
CARD_INACTIVE = "6035710000000003"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found, name: str, **labels) -> float | None:
    return found.get((name, frozenset(labels.items())))


def by_rpc_suffix(found, name: str, rpc: str) -> list[float]:
    return [v for (n, labels), v in found.items() if n == name and dict(labels).get("rpc", "").endswith(rpc)]


@pytest.fixture
async def mesh(redis_client, redis_url):
    running = await start_mesh(
        "all-in-one", redis_url,
        metrics={"enabled": True, "port": 0, "scrape_cache_seconds": 0},
    )
    yield running
    await running.close()


async def scrape(mesh) -> dict:
    port = mesh.runtimes[0]._metrics_server.server_port
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert reply.status_code == 200
    return samples(reply.text)


def balance_request(number: str) -> balance_pb2.GetBalanceRequest:
    return balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=number))


async def test_metrics_endpoint_exposes_every_named_series_after_a_workload(mesh):
    balance = mesh.stub("balance")
    for _ in range(3):
        await balance.GetBalance(balance_request(CARD_100), metadata=auth(), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await balance.GetBalance(balance_request("6035719999999999"), metadata=auth(), timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError):
        await balance.GetBalance(balance_request(CARD_100), timeout=5)  # no key

    # Idempotency: the same request twice is a replay; the same request_id with another body a conflict.
    fulfillment = mesh.stub("fulfillment")
    activate = fulfillment_pb2.ActivatePhysicalCardRequest(
        request_id="metrics-activate-1", order_id="o-1", line_id="l-1",
        card=card_pb2.CardRef(card_number=CARD_INACTIVE),
        amount=money_pb2.Money(amount_minor=2500, currency_code="USD"),
    )
    await fulfillment.ActivatePhysicalCard(activate, metadata=auth(), timeout=5)
    await fulfillment.ActivatePhysicalCard(activate, metadata=auth(), timeout=5)
    activate.amount.amount_minor = 3000
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await fulfillment.ActivatePhysicalCard(activate, metadata=auth(), timeout=5)
    assert reused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # An open hold of 12.34 USD on the native ledger, and one already expired (not counted).
    ledger = mesh.runtimes[0].providers.native_ledger
    later = time.time_ns() // 1_000_000 + 3_600_000
    await ledger.hold("demo", CARD_100, 1234, "USD", allow_partial=False, expires_at_ms=later, client_txn_id="h-1")
    soon = time.time_ns() // 1_000_000 + 1000
    await ledger.hold("demo", CARD_100, 100, "USD", allow_partial=False, expires_at_ms=soon, client_txn_id="h-2")
    await asyncio.sleep(max(0.0, soon / 1000 - time.time()) + 0.1)
    mesh.runtimes[0].telemetry.providers.set_breaker_state("native", "closed")

    found = await scrape(mesh)
    assert value(found, "giftcard_rpc_requests_total", service=BALANCE, rpc="GetBalance", code="OK") == 3
    assert value(found, "giftcard_rpc_requests_total", service=BALANCE, rpc="GetBalance", code="NOT_FOUND") == 1
    assert value(found, "giftcard_rpc_requests_total", service=BALANCE, rpc="GetBalance", code="UNAUTHENTICATED") == 1
    assert value(found, "giftcard_rpc_duration_seconds_count", service=BALANCE, rpc="GetBalance") == 5
    assert value(found, "giftcard_provider_requests_total", provider="native", operation="balance", code="OK") == 3
    assert value(found, "giftcard_provider_requests_total", provider="native", operation="balance", code="NOT_FOUND") == 1
    assert value(found, "giftcard_provider_duration_seconds_count", provider="native", operation="balance") == 4
    # A refusal (NOT_FOUND) is not a provider error.
    assert not [k for k in found if k[0] == "giftcard_provider_errors_total"]
    # The rpc label is the name the servicer gives the store (service-qualified or not).
    assert by_rpc_suffix(found, "giftcard_idempotency_replays_total", "ActivatePhysicalCard") == [1]
    assert by_rpc_suffix(found, "giftcard_idempotency_conflicts_total", "ActivatePhysicalCard") == [1]
    assert value(found, "giftcard_rpc_requests_total", service=FULFILLMENT, rpc="ActivatePhysicalCard", code="OK") == 2
    assert value(found, "giftcard_open_holds", merchant="demo") == 1
    assert value(found, "giftcard_held_amount_minor", merchant="demo", currency="USD") == 1234
    assert value(found, "giftcard_circuit_breaker_state", provider="native") == 0


async def test_job_backlog_gauges_come_from_registered_sources(mesh):
    from common.telemetry import JobBacklog

    mesh.runtimes[0].telemetry.scrape.add_jobs_source(lambda: [JobBacklog("settlement", 7, 42.5)])
    found = await scrape(mesh)
    assert value(found, "giftcard_job_queue_depth", service="settlement") == 7
    assert value(found, "giftcard_oldest_unresolved_intent_age_seconds", service="settlement") == 42.5


async def test_a_failing_scrape_source_loses_only_its_own_series(mesh):
    def broken():
        raise ConnectionError("redis down")

    mesh.runtimes[0].telemetry.scrape.add_jobs_source(broken)
    await mesh.stub("balance").GetBalance(balance_request(CARD_100), metadata=auth(), timeout=5)
    found = await scrape(mesh)
    assert value(found, "giftcard_rpc_requests_total", service=BALANCE, rpc="GetBalance", code="OK") == 1


async def test_ten_thousand_distinct_cards_do_not_grow_label_cardinality(mesh):
    balance = mesh.stub("balance")
    semaphore = asyncio.Semaphore(64)

    async def one(index: int) -> None:
        async with semaphore:
            with pytest.raises(grpc.aio.AioRpcError):
                await balance.GetBalance(balance_request(f"60357120{index:08d}"), metadata=auth(), timeout=10)

    await asyncio.gather(*(one(i) for i in range(100)))
    before = await scrape(mesh)
    await asyncio.gather(*(one(i) for i in range(100, 10_100)))
    after = await scrape(mesh)

    # The request path's series are the same, only their values moved (background jobs such as
    # settlement may add their own series meanwhile: those do not depend on cards).
    request_path = ("giftcard_rpc_", "giftcard_provider_", "giftcard_idempotency_", "giftcard_open_holds",
                    "giftcard_held_amount")
    assert {k for k in after if k[0].startswith(request_path)} == {k for k in before if k[0].startswith(request_path)}
    assert len(after) < len(before) + 50
    assert value(after, "giftcard_rpc_requests_total", service=BALANCE, rpc="GetBalance", code="NOT_FOUND") == 10_100
    label_values = {v for key in after for _, v in key[1]}
    assert not [v for v in label_values if "60357120" in v]
