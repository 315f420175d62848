"""The foundation's server behaviour through the public gRPC API, in both deployment modes:
health, reflection, authentication, merchant isolation, input validation, GetBalance."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from giftcard.balance.v1 import balance_pb2
from giftcard.type.v1 import card_pb2, money_pb2
from mesh.services import SPECS
from tests.support.mesh import ACME_KEY, DEMO_KEY, MODES, auth, start_mesh

CARD_100 = "6035710000000001"
CARD_PIN = "6035710000000002"
CARD_INACTIVE = "6035710000000003"


@pytest.fixture(params=MODES)
async def mesh(request, redis_client, redis_url):
    running = await start_mesh(request.param, redis_url)
    yield running
    await running.close()


def error_details(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str], list[str]]:
    """(ErrorInfo reason, ErrorInfo metadata, BadRequest fields) of a failed call."""
    status = rpc_status.from_call(error)
    reason, metadata, fields = "", {}, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return reason, metadata, fields


async def test_health_reports_serving_for_every_service(mesh):
    for name, spec in SPECS.items():
        health = health_pb2_grpc.HealthStub(mesh.channel(name))
        for service in ("", spec.full_name):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_all_mesh_services_in_all_in_one_mode(redis_client, redis_url):
    running = await start_mesh("all-in-one", redis_url)
    try:
        stub = reflection_pb2_grpc.ServerReflectionStub(running.channel("balance"))

        async def requests():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = set()
        async for reply in stub.ServerReflectionInfo(requests(), timeout=5):
            names |= {s.name for s in reply.list_services_response.service}
        assert {spec.full_name for spec in SPECS.values()} <= names
        assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    finally:
        await running.close()


async def test_get_balance_of_demo_card(mesh):
    stub = mesh.stub("balance")
    reply = await stub.GetBalance(
        balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=CARD_100)), metadata=auth(), timeout=5
    )
    assert reply.masked_number == "603571******0001"
    assert reply.status == card_pb2.CARD_STATUS_ACTIVE
    assert (reply.balance.amount_minor, reply.balance.currency_code) == (10000, "USD")
    assert reply.held.amount_minor == 0
    assert reply.available.amount_minor == 10000
    assert reply.provider == "native"


async def test_inactive_card_reports_inactive_with_zero_available(mesh):
    reply = await mesh.stub("balance").GetBalance(
        balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=CARD_INACTIVE)), metadata=auth(), timeout=5
    )
    assert reply.status == card_pb2.CARD_STATUS_INACTIVE
    assert reply.available.amount_minor == 0


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong-key"),), (("authorization", "dev-demo-key"),)])
async def test_calls_without_a_valid_key_are_unauthenticated(mesh, metadata):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.stub("balance").GetBalance(
            balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=CARD_100)), metadata=metadata, timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_details(caught.value)[0] == "UNAUTHENTICATED"


async def test_every_mesh_service_requires_a_key(mesh):
    from giftcard.gateway.v1 import gateway_pb2

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.stub("gateway").GetCapabilities(gateway_pb2.GetCapabilitiesRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_merchant_cannot_read_another_merchants_card(mesh):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.stub("balance").GetBalance(
            balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=CARD_100)), metadata=auth(ACME_KEY), timeout=5
        )
    # Same answer as for a number that exists nowhere: no existence leak across merchants.
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(caught.value)[0] == "CARD_NOT_FOUND"


async def test_wrong_pin_is_refused_without_revealing_the_pin(mesh):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.stub("balance").GetBalance(
            balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=CARD_PIN, pin="9999")),
            metadata=auth(), timeout=5,
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(caught.value)[0] == "INVALID_PIN"
    assert "9999" not in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("card", "field"),
    [
        (card_pb2.CardRef(), "card"),
        (card_pb2.CardRef(card_number="12ab5678"), "card.card_number"),
        (card_pb2.CardRef(card_number="1" * 33), "card.card_number"),
        (card_pb2.CardRef(card_number="60357100000000019", pin="x" * 40), "card.pin"),
        (card_pb2.CardRef(barcode="b" * 5000), "card.barcode"),
    ],
)
async def test_malformed_card_is_invalid_argument_naming_the_field(mesh, card, field):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.stub("balance").GetBalance(balance_pb2.GetBalanceRequest(card=card), metadata=auth(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, metadata, fields = error_details(caught.value)
    assert metadata["field"] == field and fields == [field]


@pytest.mark.parametrize(
    ("total", "field", "code"),
    [
        (money_pb2.Money(amount_minor=-100, currency_code="USD"), "order_total.amount_minor", grpc.StatusCode.INVALID_ARGUMENT),
        (money_pb2.Money(amount_minor=0, currency_code="USD"), "order_total.amount_minor", grpc.StatusCode.INVALID_ARGUMENT),
        (money_pb2.Money(amount_minor=100, currency_code="ZZZ"), "order_total.currency_code", grpc.StatusCode.INVALID_ARGUMENT),
        (money_pb2.Money(amount_minor=100, currency_code=""), "order_total.currency_code", grpc.StatusCode.INVALID_ARGUMENT),
        (money_pb2.Money(amount_minor=2**62, currency_code="USD"), "order_total.amount_minor", grpc.StatusCode.OUT_OF_RANGE),
    ],
)
async def test_bad_amounts_are_rejected_naming_the_field(mesh, total, field, code):
    request = balance_pb2.PlanTenderRequest(order_total=total, cards=[card_pb2.CardRef(card_number=CARD_100)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.stub("balance").PlanTender(request, metadata=auth(), timeout=5)
    assert caught.value.code() == code
    assert error_details(caught.value)[1]["field"] == field


async def test_plan_tender_applies_min_of_available_and_remaining_in_order(mesh):
    request = balance_pb2.PlanTenderRequest(
        order_total=money_pb2.Money(amount_minor=11000, currency_code="USD"),
        cards=[
            card_pb2.CardRef(card_number=CARD_INACTIVE),
            card_pb2.CardRef(card_number=CARD_100),
            card_pb2.CardRef(card_number=CARD_PIN, pin="1234"),
        ],
    )
    reply = await mesh.stub("balance").PlanTender(request, metadata=auth(), timeout=5)
    applied = [(a.index, a.apply.amount_minor, a.skip_reason) for a in reply.allocations]
    assert applied == [(0, 0, "CARD_INACTIVE"), (1, 10000, ""), (2, 1000, "")]
    assert reply.remainder.amount_minor == 0
    assert reply.covered.amount_minor == 11000


async def test_an_expired_deadline_changes_nothing(mesh):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.stub("balance").GetBalance(
            balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=CARD_100)), metadata=auth(), timeout=0.000001
        )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def raw_get_balance(mesh):
    """GetBalance taking raw bytes, to send what no generated stub would."""
    channel = mesh.channel("balance")
    return channel.unary_unary(
        "/giftcard.balance.v1.BalanceService/GetBalance",
        request_serializer=lambda body: body, response_deserializer=lambda body: body,
    )


async def test_invalid_utf8_in_a_card_number_is_a_clean_invalid_argument(mesh):
    card = b"\x0a\x04\xff\xfe\xfd\xfc"  # CardRef.card_number = 4 bytes of invalid UTF-8
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_get_balance(mesh)(b"\x0a" + bytes([len(card)]) + card, metadata=auth(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)[0] == "MALFORMED_REQUEST"


async def test_messages_over_the_size_limit_are_refused(mesh):
    oversize = b"\x0a\x80\x80\x80\x01" + b"\x00" * (2 * 1024 * 1024)  # 2 MiB > 1 MiB default
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_get_balance(mesh)(oversize, metadata=auth(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The server is still fine afterwards.
    reply = await mesh.stub("balance").GetBalance(
        balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=CARD_100)), metadata=auth(), timeout=5
    )
    assert reply.available.amount_minor == 10000
