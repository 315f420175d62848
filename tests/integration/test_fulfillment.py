"""FulfillmentService end to end over gRPC, in both deployment modes, on the native provider:
physical activation (CARD_ALREADY_ACTIVE, no second load), e-gift issuance with PIN / CVV2 /
claim link, resume after a crash between allocate and activate (one card), exchange (and its open
holds rule), GetActivation, the order event stream, and no card secret in logs or Redis."""

from __future__ import annotations

import logging
import time

import grpc
import pytest

from common.auth import key_digest
from common.context import CallContext, bind_call, unbind_call
from gateway.adapters.native.allocation import luhn_valid
from giftcard.balance.v1 import balance_pb2
from giftcard.fulfillment.v1 import fulfillment_pb2 as pb
from giftcard.gateway.v1 import gateway_pb2
from giftcard.type.v1 import card_pb2, money_pb2
from services.fulfillment.activations import ActivationStore
from services.fulfillment.logic import FulfillmentLogic
from tests.integration.test_mesh_server import error_details
from tests.support.mesh import ACME_KEY, DEMO_KEY, MODES, auth, start_mesh
from tests.support.secrets_scan import SecretWatch

CARD_100 = "6035710000000001"
CARD_PIN = "6035710000000002"
CARD_INACTIVE = "6035710000000003"
CLAIM_BASE = "https://claim.example/c/"
PROGRAMS = {
    "egift-pin": {"prefix": "603572", "pin_digits": 8},
    "egift-cvv2": {"prefix": "603573", "cvv2": True},
    "egift-claim": {"prefix": "603574", "pin_digits": 0, "claim_links": True, "claim_url_base": CLAIM_BASE},
}


def merchants() -> dict:
    native = [{"provider": "native", "options": {"programs": PROGRAMS}}]
    return {
        "demo": {"api_key_sha256": [key_digest(DEMO_KEY)], "currencies": ["USD", "CAD"], "providers": native},
        "acme": {"api_key_sha256": [key_digest(ACME_KEY)], "currencies": ["USD"], "providers": native},
    }


def usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code="USD")


@pytest.fixture(params=MODES)
async def mesh(request, redis_client, redis_url):
    running = await start_mesh(request.param, redis_url, merchants=merchants())
    yield running
    await running.close()


@pytest.fixture(autouse=True)
async def watch(caplog, redis_client):
    """Every secret a test registers must appear in no log record and nowhere in Redis."""
    caplog.set_level(logging.DEBUG)
    secrets = SecretWatch()
    secrets.add(CARD_100, CARD_PIN, CARD_INACTIVE)
    yield secrets
    assert secrets.leaks_in_logs(caplog.records) == []
    assert await secrets.leaks_in_redis(redis_client) == []


async def balance_of(mesh, number: str, pin: str = "") -> tuple[int, int]:
    reply = await mesh.stub("balance").GetBalance(
        balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=number, pin=pin)), metadata=auth(), timeout=5
    )
    return reply.balance.amount_minor, reply.status


async def expect_error(call, code: grpc.StatusCode, reason: str) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    got_reason, metadata, _ = error_details(caught.value)
    assert got_reason == reason
    return metadata


def activate_request(request_id, order, line, number, minor, pin=""):
    return pb.ActivatePhysicalCardRequest(
        request_id=request_id, order_id=order, line_id=line,
        card=card_pb2.CardRef(card_number=number, pin=pin), amount=usd(minor),
    )


def issue_request(request_id, order, line, program, minor):
    return pb.IssueElectronicCardRequest(
        request_id=request_id, order_id=order, line_id=line, program_id=program, amount=usd(minor)
    )


async def order_events(redis_client, merchant: str = "demo") -> list[dict[str, str]]:
    entries = await redis_client.xrange(ActivationStore.stream_key(merchant))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def card_count(redis_client, merchant: str = "demo") -> int:
    return len([key async for key in redis_client.scan_iter(match=f"{{gc:{merchant}:*}}:card", count=1000)])


# -- physical cards ---------------------------------------------------------------------------


async def test_physical_activation_loads_the_card_once_and_publishes_one_event(mesh, redis_client):
    stub = mesh.stub("fulfillment")
    request = activate_request("act-1", "order-1", "line-1", CARD_INACTIVE, 5000)
    first = await stub.ActivatePhysicalCard(request, metadata=auth(), timeout=5)
    again = await stub.ActivatePhysicalCard(request, metadata=auth(), timeout=5)

    assert first == again
    activation = first.activation
    assert activation.state == pb.ACTIVATION_STATE_COMPLETED
    assert (activation.order_id, activation.line_id) == ("order-1", "line-1")
    assert activation.masked_number == "603571******0003"
    assert (activation.amount.amount_minor, activation.amount.currency_code) == (5000, "USD")
    assert activation.provider == "native" and activation.transaction_id
    assert await balance_of(mesh, CARD_INACTIVE) == (5000, card_pb2.CARD_STATUS_ACTIVE)

    events = await order_events(redis_client)
    assert len(events) == 1
    assert events[0] | {"time_ms": "x"} == {
        "event": "line_completed", "activation_id": activation.activation_id, "order_id": "order-1",
        "line_id": "line-1", "kind": "physical", "masked_number": "603571******0003",
        "amount_minor": "5000", "currency": "USD", "provider": "native",
        "transaction_id": activation.transaction_id, "time_ms": "x",
    }


async def test_activating_an_active_card_is_card_already_active_and_loads_nothing(mesh, redis_client):
    stub = mesh.stub("fulfillment")
    await stub.ActivatePhysicalCard(activate_request("a-1", "o-1", "l-1", CARD_INACTIVE, 5000), metadata=auth(), timeout=5)

    # The same card on another line (a second ship-confirm for it): refused, no second load.
    await expect_error(
        stub.ActivatePhysicalCard(activate_request("a-2", "o-2", "l-1", CARD_INACTIVE, 5000), metadata=auth(), timeout=5),
        grpc.StatusCode.FAILED_PRECONDITION, "CARD_ALREADY_ACTIVE",
    )
    # The same, already completed line under a new request_id: refused too.
    metadata = await expect_error(
        stub.ActivatePhysicalCard(activate_request("a-3", "o-1", "l-1", CARD_INACTIVE, 5000), metadata=auth(), timeout=5),
        grpc.StatusCode.FAILED_PRECONDITION, "CARD_ALREADY_ACTIVE",
    )
    assert metadata["activation_id"].startswith("act_")
    # A card that was active from the start (a demo card with 100.00).
    await expect_error(
        stub.ActivatePhysicalCard(activate_request("a-4", "o-3", "l-1", CARD_100, 2000), metadata=auth(), timeout=5),
        grpc.StatusCode.FAILED_PRECONDITION, "CARD_ALREADY_ACTIVE",
    )

    assert await balance_of(mesh, CARD_INACTIVE) == (5000, card_pb2.CARD_STATUS_ACTIVE)
    assert await balance_of(mesh, CARD_100) == (10000, card_pb2.CARD_STATUS_ACTIVE)
    failed = await stub.GetActivation(pb.GetActivationRequest(order_id="o-2", line_id="l-1"), metadata=auth(), timeout=5)
    assert failed.activation.state == pb.ACTIVATION_STATE_FAILED
    assert failed.activation.failure_reason == "CARD_ALREADY_ACTIVE"
    assert len(await order_events(redis_client)) == 1


async def test_a_failed_line_can_be_redone_with_the_right_card(mesh):
    stub = mesh.stub("fulfillment")
    await expect_error(
        stub.ActivatePhysicalCard(activate_request("r-1", "o-9", "l-1", CARD_100, 2500), metadata=auth(), timeout=5),
        grpc.StatusCode.FAILED_PRECONDITION, "CARD_ALREADY_ACTIVE",
    )
    redone = await stub.ActivatePhysicalCard(activate_request("r-2", "o-9", "l-1", CARD_INACTIVE, 2500), metadata=auth(), timeout=5)
    assert redone.activation.state == pb.ACTIVATION_STATE_COMPLETED
    assert redone.activation.masked_number == "603571******0003"
    assert await balance_of(mesh, CARD_INACTIVE) == (2500, card_pb2.CARD_STATUS_ACTIVE)


async def test_a_live_line_refuses_a_different_card(mesh, redis_client):
    # A line left ALLOCATED/PENDING cannot be switched to other details: ACTIVATION_MISMATCH.
    store = ActivationStore(redis_client)
    await store.begin("demo", "o-5", "l-1", fingerprint="other", activation_id="act_x", kind="physical",
                      amount_minor=100, currency="USD")
    await expect_error(
        mesh.stub("fulfillment").ActivatePhysicalCard(
            activate_request("m-1", "o-5", "l-1", CARD_INACTIVE, 100), metadata=auth(), timeout=5
        ),
        grpc.StatusCode.FAILED_PRECONDITION, "ACTIVATION_MISMATCH",
    )
    assert await balance_of(mesh, CARD_INACTIVE) == (0, card_pb2.CARD_STATUS_INACTIVE)


async def test_wrong_pin_at_activation_is_refused_and_recorded(mesh, redis_client, watch):
    # A card provisioned inactive with a PIN (a plastic from a PIN program).
    ledger_pin = "87654321"
    watch.add(ledger_pin)
    issued = await mesh.stub("fulfillment").IssueElectronicCard(
        issue_request("pin-0", "o-p", "l-0", "egift-pin", 100), metadata=auth(), timeout=5
    )
    watch.add(issued.card.card_number, issued.card.pin)
    await expect_error(
        mesh.stub("fulfillment").ActivatePhysicalCard(
            activate_request("pin-1", "o-p", "l-1", issued.card.card_number, 100, pin=ledger_pin),
            metadata=auth(), timeout=5,
        ),
        grpc.StatusCode.PERMISSION_DENIED, "INVALID_PIN",
    )


# -- electronic cards -------------------------------------------------------------------------


async def test_egift_with_pin_is_allocated_activated_and_loaded_and_replayed_identically(mesh, redis_client, watch):
    stub = mesh.stub("fulfillment")
    request = issue_request("e-1", "order-e", "line-1", "egift-pin", 2500)
    first = await stub.IssueElectronicCard(request, metadata=auth(), timeout=5)
    watch.add(first.card.card_number, first.card.pin)
    again = await stub.IssueElectronicCard(request, metadata=auth(), timeout=5)

    assert again == first  # the one-time credentials again, from the sealed idempotency record
    card = first.card
    assert first.WhichOneof("credential") == "card"
    assert card.card_number.startswith("603572") and len(card.card_number) == 16 and luhn_valid(card.card_number)
    assert len(card.pin) == 8 and card.pin.isdigit() and card.cvv2 == ""
    assert first.activation.state == pb.ACTIVATION_STATE_COMPLETED
    assert first.activation.masked_number == card.card_number[:6] + "******" + card.card_number[-4:]
    assert await balance_of(mesh, card.card_number, card.pin) == (2500, card_pb2.CARD_STATUS_ACTIVE)

    # The PIN is really required and checked.
    await expect_error(
        mesh.stub("balance").GetBalance(
            balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=card.card_number, pin="00000000")),
            metadata=auth(), timeout=5,
        ),
        grpc.StatusCode.PERMISSION_DENIED, "INVALID_PIN",
    )
    events = await order_events(redis_client)
    assert [(e["kind"], e["line_id"], e["amount_minor"], e["masked_number"]) for e in events] == [
        ("egift", "line-1", "2500", first.activation.masked_number)
    ]
    # A second request for the completed line must not hand out a second card.
    await expect_error(
        stub.IssueElectronicCard(issue_request("e-2", "order-e", "line-1", "egift-pin", 2500), metadata=auth(), timeout=5),
        grpc.StatusCode.FAILED_PRECONDITION, "CARD_ALREADY_ACTIVE",
    )


async def test_egift_with_cvv2_returns_a_cvv2_and_no_pin(mesh, watch):
    reply = await mesh.stub("fulfillment").IssueElectronicCard(
        issue_request("c-1", "order-c", "line-1", "egift-cvv2", 1000), metadata=auth(), timeout=5
    )
    watch.add(reply.card.card_number)
    assert reply.card.card_number.startswith("603573") and luhn_valid(reply.card.card_number)
    assert len(reply.card.cvv2) == 3 and reply.card.pin == ""
    assert await balance_of(mesh, reply.card.card_number, reply.card.cvv2) == (1000, card_pb2.CARD_STATUS_ACTIVE)


async def test_claim_link_program_returns_a_link_and_proxy_and_no_pin(mesh, redis_client, watch):
    reply = await mesh.stub("fulfillment").IssueElectronicCard(
        issue_request("l-1", "order-l", "line-1", "egift-claim", 4000), metadata=auth(), timeout=5
    )
    watch.add(reply.claim_link.url)
    assert reply.WhichOneof("credential") == "claim_link"
    assert not reply.HasField("card")
    assert reply.claim_link.url.startswith(CLAIM_BASE) and len(reply.claim_link.url) > len(CLAIM_BASE) + 20
    assert reply.claim_link.proxy_number.isdigit() and len(reply.claim_link.proxy_number) == 19
    assert reply.activation.state == pb.ACTIVATION_STATE_COMPLETED
    assert reply.activation.masked_number.startswith("603574")
    events = await order_events(redis_client)
    assert [(e["kind"], e["amount_minor"]) for e in events] == [("egift", "4000")]


async def test_unknown_program_is_not_found_and_the_line_failed(mesh):
    await expect_error(
        mesh.stub("fulfillment").IssueElectronicCard(
            issue_request("u-1", "order-u", "line-1", "no-such-program", 1000), metadata=auth(), timeout=5
        ),
        grpc.StatusCode.NOT_FOUND, "PROGRAM_NOT_FOUND",
    )
    got = await mesh.stub("fulfillment").GetActivation(
        pb.GetActivationRequest(order_id="order-u", line_id="line-1"), metadata=auth(), timeout=5
    )
    assert got.activation.state == pb.ACTIVATION_STATE_FAILED
    assert got.activation.failure_reason == "PROGRAM_NOT_FOUND"


class CrashingGateway:
    """The real gateway client, except that one chosen RPC "crashes" once: after the real call
    (`after=True`, the provider did it but the service never heard) or before it."""

    def __init__(self, inner, rpc: str, *, after: bool) -> None:
        self._inner, self._rpc, self._after = inner, rpc, after
        self.crashed = False
        self.allocations: list[gateway_pb2.AllocateResponse] = []

    def __getattr__(self, name):
        real = getattr(self._inner, name)

        async def call(request):
            if name == self._rpc and not self.crashed:
                self.crashed = True
                if self._after:
                    reply = await real(request)
                    if name == "Allocate":
                        self.allocations.append(reply)
                raise ConnectionError("simulated crash")
            reply = await real(request)
            if name == "Allocate":
                self.allocations.append(reply)
            return reply

        return call


def fulfillment_runtime(mesh):
    return next(r for r in mesh.runtimes if "fulfillment" in r.services)


async def crash_once(mesh, rpc: str, *, after: bool, order: str) -> CrashingGateway:
    runtime = fulfillment_runtime(mesh)
    gateway = CrashingGateway(runtime.client("gateway"), rpc, after=after)
    logic = FulfillmentLogic(gateway, ActivationStore(runtime.redis), runtime.sealer, runtime.settings.card_hash_key)
    token = bind_call(CallContext("demo", time.monotonic() + 10, f"Bearer {DEMO_KEY}"))
    try:
        with pytest.raises(ConnectionError):
            await logic.issue_electronic("demo", order, "line-1", "egift-pin", _money(3000), "")
    finally:
        unbind_call(token)
    return gateway


def _money(minor: int):
    from common.money import Money

    return Money(minor, "USD")


async def test_crash_between_allocate_and_activate_resumes_with_the_same_card(mesh, redis_client, watch):
    cards_before = await card_count(redis_client)
    gateway = await crash_once(mesh, "Activate", after=False, order="order-x")
    allocated = gateway.allocations[0]
    watch.add(allocated.card_number, allocated.pin)

    stub = mesh.stub("fulfillment")
    pending = await stub.GetActivation(pb.GetActivationRequest(order_id="order-x", line_id="line-1"), metadata=auth(), timeout=5)
    assert pending.activation.state == pb.ACTIVATION_STATE_ALLOCATED
    assert await card_count(redis_client) == cards_before + 1

    resumed = await stub.IssueElectronicCard(issue_request("x-1", "order-x", "line-1", "egift-pin", 3000), metadata=auth(), timeout=5)
    assert (resumed.card.card_number, resumed.card.pin) == (allocated.card_number, allocated.pin)
    assert resumed.activation.activation_id == pending.activation.activation_id
    assert resumed.activation.state == pb.ACTIVATION_STATE_COMPLETED
    assert await card_count(redis_client) == cards_before + 1  # one card, never a second allocation
    assert await balance_of(mesh, allocated.card_number, allocated.pin) == (3000, card_pb2.CARD_STATUS_ACTIVE)
    assert len(await order_events(redis_client)) == 1


async def test_crash_after_allocate_before_it_was_recorded_replays_the_same_allocation(mesh, redis_client, watch):
    cards_before = await card_count(redis_client)
    gateway = await crash_once(mesh, "Allocate", after=True, order="order-y")
    allocated = gateway.allocations[0]
    watch.add(allocated.card_number, allocated.pin)

    resumed = await mesh.stub("fulfillment").IssueElectronicCard(
        issue_request("y-1", "order-y", "line-1", "egift-pin", 3000), metadata=auth(), timeout=5
    )
    assert (resumed.card.card_number, resumed.card.pin) == (allocated.card_number, allocated.pin)
    assert await card_count(redis_client) == cards_before + 1
    assert await balance_of(mesh, allocated.card_number, allocated.pin) == (3000, card_pb2.CARD_STATUS_ACTIVE)


# -- exchange ---------------------------------------------------------------------------------


async def test_exchange_moves_the_whole_balance_and_deactivates_the_old_card(mesh, watch):
    new_card = "6035719999000017"
    watch.add(new_card)
    request = pb.ExchangeCardRequest(
        request_id="x-1", from_card=card_pb2.CardRef(card_number=CARD_100),
        to_card=card_pb2.CardRef(card_number=new_card), reason=pb.EXCHANGE_REASON_LOST,
    )
    reply = await mesh.stub("fulfillment").ExchangeCard(request, metadata=auth(), timeout=5)
    again = await mesh.stub("fulfillment").ExchangeCard(request, metadata=auth(), timeout=5)

    assert again == reply
    assert (reply.moved.amount_minor, reply.moved.currency_code) == (10000, "USD")
    assert reply.from_masked_number == "603571******0001"
    assert reply.to_masked_number == "603571******0017"
    assert reply.transaction_id
    assert await balance_of(mesh, CARD_100) == (0, card_pb2.CARD_STATUS_DEACTIVATED)
    assert await balance_of(mesh, new_card) == (10000, card_pb2.CARD_STATUS_ACTIVE)


async def test_exchange_of_a_card_with_open_holds_is_refused(mesh, watch):
    hold = await mesh.stub("gateway").PlaceHold(
        gateway_pb2.PlaceHoldRequest(
            reference_id="hold-1", card=card_pb2.CardRef(card_number=CARD_100), amount=usd(1500),
            expire_time={"seconds": int(time.time()) + 3600},
        ),
        metadata=auth(), timeout=5,
    )
    assert hold.result.amount.amount_minor == 1500
    new_card = "6035719999000025"
    watch.add(new_card)
    metadata = await expect_error(
        mesh.stub("fulfillment").ExchangeCard(
            pb.ExchangeCardRequest(
                request_id="x-2", from_card=card_pb2.CardRef(card_number=CARD_100),
                to_card=card_pb2.CardRef(card_number=new_card),
            ),
            metadata=auth(), timeout=5,
        ),
        grpc.StatusCode.FAILED_PRECONDITION, "CARD_HAS_OPEN_HOLDS",
    )
    assert metadata["held_minor"] == "1500"
    assert await balance_of(mesh, CARD_100) == (10000, card_pb2.CARD_STATUS_ACTIVE)


async def test_exchange_to_an_active_card_is_refused_and_changes_nothing(mesh):
    await expect_error(
        mesh.stub("fulfillment").ExchangeCard(
            pb.ExchangeCardRequest(
                request_id="x-3", from_card=card_pb2.CardRef(card_number=CARD_100),
                to_card=card_pb2.CardRef(card_number=CARD_PIN),
            ),
            metadata=auth(), timeout=5,
        ),
        grpc.StatusCode.FAILED_PRECONDITION, "CARD_ALREADY_ACTIVE",
    )
    assert await balance_of(mesh, CARD_100) == (10000, card_pb2.CARD_STATUS_ACTIVE)
    assert await balance_of(mesh, CARD_PIN, "1234") == (2500, card_pb2.CARD_STATUS_ACTIVE)


# -- queries, validation, isolation -----------------------------------------------------------


async def test_get_activation_is_merchant_scoped(mesh):
    await mesh.stub("fulfillment").ActivatePhysicalCard(
        activate_request("g-1", "order-g", "line-1", CARD_INACTIVE, 700), metadata=auth(), timeout=5
    )
    mine = await mesh.stub("fulfillment").GetActivation(
        pb.GetActivationRequest(order_id="order-g", line_id="line-1"), metadata=auth(), timeout=5
    )
    assert mine.activation.state == pb.ACTIVATION_STATE_COMPLETED
    assert mine.activation.create_time.seconds > 0
    await expect_error(
        mesh.stub("fulfillment").GetActivation(
            pb.GetActivationRequest(order_id="order-g", line_id="line-1"), metadata=auth(ACME_KEY), timeout=5
        ),
        grpc.StatusCode.NOT_FOUND, "ACTIVATION_NOT_FOUND",
    )


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (pb.ActivatePhysicalCardRequest(request_id="v-1", line_id="l", card=card_pb2.CardRef(card_number=CARD_INACTIVE), amount=usd(1)), "order_id"),
        (pb.ActivatePhysicalCardRequest(request_id="v-1", order_id="o", line_id="a/b", card=card_pb2.CardRef(card_number=CARD_INACTIVE), amount=usd(1)), "line_id"),
        (pb.ActivatePhysicalCardRequest(request_id="v-1", order_id="o", line_id="l", amount=usd(1)), "card"),
        (pb.ActivatePhysicalCardRequest(request_id="v-1", order_id="o", line_id="l", card=card_pb2.CardRef(card_number=CARD_INACTIVE), amount=usd(0)), "amount.amount_minor"),
        (pb.ActivatePhysicalCardRequest(request_id="v-1", order_id="o", line_id="l", card=card_pb2.CardRef(card_number=CARD_INACTIVE), amount=money_pb2.Money(amount_minor=1, currency_code="EUR")), "amount.currency_code"),
        (pb.ActivatePhysicalCardRequest(order_id="o", line_id="l", card=card_pb2.CardRef(card_number=CARD_INACTIVE), amount=usd(1)), "request_id"),
    ],
)
async def test_bad_activation_input_is_invalid_argument_naming_the_field(mesh, request_message, field):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.stub("fulfillment").ActivatePhysicalCard(request_message, metadata=auth(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)[1]["field"] == field
    assert await balance_of(mesh, CARD_INACTIVE) == (0, card_pb2.CARD_STATUS_INACTIVE)


async def test_order_events_are_per_merchant(mesh, redis_client, watch):
    reply = await mesh.stub("fulfillment").IssueElectronicCard(
        issue_request("i-1", "order-i", "line-1", "egift-pin", 900), metadata=auth(ACME_KEY), timeout=5
    )
    watch.add(reply.card.card_number, reply.card.pin)
    assert [e["order_id"] for e in await order_events(redis_client, "acme")] == ["order-i"]
    assert await order_events(redis_client, "demo") == []
