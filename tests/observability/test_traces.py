"""One trace across client -> balance -> gateway -> provider -> Redis in separate-process mode
(one server per service, real gRPC between them), with W3C context from the client's metadata,
and no card number or PIN in any span attribute."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from giftcard.balance.v1 import balance_pb2, balance_pb2_grpc
from giftcard.type.v1 import card_pb2
from mesh.runtime import MeshRuntime
from common.auth import key_digest
from tests.support.mesh import auth, mesh_settings

CARD = "6035710000000002"  # the demo card with a PIN
PIN = "1234"


@pytest.fixture
async def separate(redis_client, redis_url):
    """Gateway and balance as two servers (as two processes would be), both exporting to memory."""
    exporter = InMemorySpanExporter()
    telemetry = {"trace_sample_ratio": 1.0}
    gateway = MeshRuntime(mesh_settings(redis_url, telemetry=telemetry), ["gateway"], span_exporters=[exporter])
    await gateway.start()
    balance = MeshRuntime(
        mesh_settings(redis_url, telemetry=telemetry, endpoints={"gateway": f"127.0.0.1:{gateway.port}"}),
        ["balance"], span_exporters=[exporter],
    )
    await balance.start()
    yield exporter, gateway, balance
    await balance.stop(grace=0)
    await gateway.stop(grace=0)


async def test_get_balance_is_one_trace_from_client_to_redis(separate):
    exporter, gateway, balance = separate
    gateway.tracer_provider.force_flush()
    exporter.clear()  # start-up work (seeding the demo cards) has traces of its own
    client_provider = TracerProvider()
    client_provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{balance.port}", interceptors=aio_client_interceptors(tracer_provider=client_provider)
    ) as channel:
        reply = await balance_pb2_grpc.BalanceServiceStub(channel).GetBalance(
            balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=CARD, pin=PIN)),
            metadata=auth(), timeout=5,
        )
    assert reply.balance.amount_minor == 2500
    for runtime in (balance, gateway):
        runtime.tracer_provider.force_flush()
    spans = exporter.get_finished_spans()

    def one(predicate, what):
        found = [s for s in spans if predicate(s)]
        assert len(found) == 1, f"{what}: {[(s.name, s.kind) for s in spans]}"
        return found[0]

    client = one(lambda s: s.kind == SpanKind.CLIENT and s.resource.attributes.get("service.name") != "giftcard"
                 and "BalanceService" in s.name, "client span")
    balance_server = one(lambda s: s.kind == SpanKind.SERVER and "BalanceService/GetBalance" in s.name, "balance server")
    gateway_client = one(lambda s: s.kind == SpanKind.CLIENT and "ProviderGatewayService/GetBalance" in s.name,
                         "gateway client")
    gateway_server = one(lambda s: s.kind == SpanKind.SERVER and "ProviderGatewayService/GetBalance" in s.name,
                         "gateway server")
    provider = one(lambda s: s.name == "provider native.balance", "provider span")
    redis_spans = [s for s in spans if s.attributes.get("db.system") == "redis"
                   or s.attributes.get("db.system.name") == "redis"]
    assert redis_spans, [s.name for s in spans]

    trace_ids = {s.context.trace_id for s in [client, balance_server, gateway_client, gateway_server, provider, *redis_spans]}
    assert trace_ids == {client.context.trace_id}
    assert balance_server.parent.span_id == client.context.span_id
    assert gateway_client.parent.span_id == balance_server.context.span_id
    assert gateway_server.parent.span_id == gateway_client.context.span_id
    assert provider.parent.span_id == gateway_server.context.span_id
    assert {s.parent.span_id for s in redis_spans} == {provider.context.span_id}

    # Merchant, rpc, provider, masked card; never the card number or PIN anywhere.
    assert balance_server.attributes["giftcard.merchant_id"] == "demo"
    assert gateway_server.attributes["giftcard.merchant_id"] == "demo"
    assert balance_server.attributes["rpc.method"] == "GetBalance"
    assert provider.attributes["giftcard.provider"] == "native"
    assert provider.attributes["giftcard.card.masked"] == "603571******0002"
    for span in spans:
        for key, value in span.attributes.items():
            assert CARD not in str(value), (span.name, key)
            assert CARD[6:12] not in str(value), (span.name, key)
        for event in span.events:
            assert CARD not in str(event.attributes), span.name


async def test_w3c_traceparent_from_the_caller_is_honoured(separate):
    """The caller's trace id and sampling decision win (parent-based sampling): a sampled
    traceparent continues the caller's trace, an unsampled one records nothing."""
    exporter, gateway, balance = separate
    request = balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=CARD, pin=PIN))

    def flushed():
        for runtime in (balance, gateway):
            runtime.tracer_provider.force_flush()
        return exporter.get_finished_spans()

    flushed()
    exporter.clear()
    sampled, unsampled, parent = "0af7651916cd43dd8448eb211c80319c", "1af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{balance.port}") as channel:
        stub = balance_pb2_grpc.BalanceServiceStub(channel)
        await stub.GetBalance(request, metadata=(*auth(), ("traceparent", f"00-{unsampled}-{parent}-00")), timeout=5)
        assert flushed() == ()
        await stub.GetBalance(request, metadata=(*auth(), ("traceparent", f"00-{sampled}-{parent}-01")), timeout=5)
    spans = flushed()
    server = [s for s in spans if s.kind == SpanKind.SERVER and "BalanceService/GetBalance" in s.name]
    assert len(server) == 1
    assert format(server[0].parent.span_id, "016x") == parent
    assert {format(s.context.trace_id, "032x") for s in spans} == {sampled}
    assert len(spans) >= 5  # balance server, gateway client + server, provider, redis


async def test_a_vendor_balance_is_one_trace_down_to_the_vendor_http_call(redis_client, redis_url):
    """Separate mode with a merchant on the Paytronix simulator (a real HTTP server): the vendor
    HTTP client spans hang under the provider span of the same trace, with no card data."""
    from gateway.simulators import start_simulator
    from tests.contract.harness import HARNESSES

    harness = HARNESSES["paytronix"]
    simulator = start_simulator("paytronix")
    number = "6035719900000042"
    httpx_post(f"{simulator.base_url}/_sim/cards", {"number": number, "balance": "12.34", "status": "active"})
    merchants = {"vend": {"api_key_sha256": [key_digest("vend-key")], "currencies": ["USD"],
                          "providers": [harness.profile(simulator.base_url, "shadow")]}}
    exporter = InMemorySpanExporter()
    telemetry = {"trace_sample_ratio": 1.0}
    gateway = MeshRuntime(mesh_settings(redis_url, telemetry=telemetry, merchants=merchants), ["gateway"],
                          span_exporters=[exporter])
    await gateway.start()
    balance = MeshRuntime(
        mesh_settings(redis_url, telemetry=telemetry, merchants=merchants,
                      endpoints={"gateway": f"127.0.0.1:{gateway.port}"}),
        ["balance"], span_exporters=[exporter],
    )
    await balance.start()
    try:
        gateway.tracer_provider.force_flush()
        exporter.clear()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{balance.port}") as channel:
            reply = await balance_pb2_grpc.BalanceServiceStub(channel).GetBalance(
                balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=number)),
                metadata=auth("vend-key"), timeout=10,
            )
        assert (reply.provider, reply.balance.amount_minor) == ("paytronix", 1234)
        for runtime in (balance, gateway):
            runtime.tracer_provider.force_flush()
    finally:
        await balance.stop(grace=0)
        await gateway.stop(grace=0)
        simulator.stop()

    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    [provider] = [s for s in spans if s.name == "provider paytronix.balance"]
    http_spans = [s for s in spans if s.kind == SpanKind.CLIENT and s.name.split()[0] in ("POST", "GET")]
    assert http_spans, [s.name for s in spans]
    assert {s.context.trace_id for s in spans} == {provider.context.trace_id}

    def ancestors(span):
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            yield span

    for http_span in http_spans:
        assert provider in list(ancestors(http_span))
    root = [s for s in spans if s.parent is None]
    assert len(root) == 1 and "BalanceService/GetBalance" in root[0].name
    for span in spans:
        for key, value in span.attributes.items():
            assert number not in str(value) and number[6:12] not in str(value), (span.name, key)


def httpx_post(url: str, body: dict) -> None:
    import httpx

    httpx.post(url, json=body, timeout=5).raise_for_status()
