"""RefundService end to end over gRPC, in both deployment modes, on the native provider: reload
(with merchant limits), cash-out (then redeem -> CARD_INACTIVE), refund onto a new card (cash-out +
fund-and-activate, claim link, cancellation) or an existing card, resume after a crash half-way,
and no card secret in logs or Redis."""

from __future__ import annotations

import logging
import time

import grpc
import pytest

from common.auth import key_digest
from common.context import CallContext, bind_call, unbind_call
from common.money import Money
from gateway.adapters.native.allocation import luhn_valid
from giftcard.authorization.v1 import authorization_pb2
from giftcard.balance.v1 import balance_pb2
from giftcard.gateway.v1 import gateway_pb2
from giftcard.refund.v1 import refund_pb2 as pb
from giftcard.settlement.v1 import settlement_pb2
from giftcard.type.v1 import card_pb2, money_pb2, transaction_pb2
from services.refund.logic import RefundLogic
from tests.integration.test_mesh_server import error_details
from tests.support.mesh import ACME_KEY, DEMO_KEY, MODES, auth, start_mesh
from tests.support.secrets_scan import SecretWatch

CARD_100 = "6035710000000001"
CARD_PIN = "6035710000000002"
CARD_INACTIVE = "6035710000000003"
CLAIM_BASE = "https://claim.example/r/"
PROGRAMS = {
    "refund-pin": {"prefix": "603575", "pin_digits": 8},
    "refund-claim": {"prefix": "603576", "pin_digits": 0, "claim_links": True, "claim_url_base": CLAIM_BASE},
}


def merchants() -> dict:
    native = [{"provider": "native", "options": {"programs": PROGRAMS}}]
    return {
        "demo": {
            "api_key_sha256": [key_digest(DEMO_KEY)], "currencies": ["USD", "CAD"], "providers": native,
            "max_reload_minor": 5000, "max_card_balance_minor": 20000,
        },
        "acme": {"api_key_sha256": [key_digest(ACME_KEY)], "currencies": ["USD"], "providers": native},
    }


def usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code="USD")


def ref(number: str, pin: str = "") -> card_pb2.CardRef:
    return card_pb2.CardRef(card_number=number, pin=pin)


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
        balance_pb2.GetBalanceRequest(card=ref(number, pin)), metadata=auth(), timeout=5
    )
    return reply.balance.amount_minor, reply.status


async def expect_error(call, code: grpc.StatusCode, reason: str) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    got_reason, metadata, _ = error_details(caught.value)
    assert got_reason == reason
    return metadata


async def card_count(redis_client, merchant: str = "demo") -> int:
    return len([key async for key in redis_client.scan_iter(match=f"{{gc:{merchant}:*}}:card", count=1000)])


# -- reload -----------------------------------------------------------------------------------


async def test_reload_adds_value_once_and_replays(mesh):
    request = pb.ReloadRequest(request_id="rl-1", card=ref(CARD_100), amount=usd(2500), client_transaction_id="pos-77")
    first = await mesh.stub("refund").Reload(request, metadata=auth(), timeout=5)
    again = await mesh.stub("refund").Reload(request, metadata=auth(), timeout=5)

    assert again == first
    txn = first.transaction
    assert txn.kind == transaction_pb2.TRANSACTION_KIND_RELOAD
    assert txn.state == transaction_pb2.TRANSACTION_STATE_APPROVED
    assert (txn.amount.amount_minor, txn.amount.currency_code) == (2500, "USD")
    assert txn.balance_after.amount_minor == 12500
    assert txn.masked_number == "603571******0001"
    assert (txn.transaction_id, txn.client_transaction_id, txn.provider) == ("reload.rl-1", "pos-77", "native")
    assert txn.provider_transaction_id
    assert (first.balance.amount_minor, first.balance.currency_code) == (12500, "USD")
    assert await balance_of(mesh, CARD_100) == (12500, card_pb2.CARD_STATUS_ACTIVE)


async def test_reload_above_the_merchant_limit_is_refused(mesh):
    metadata = await expect_error(
        mesh.stub("refund").Reload(pb.ReloadRequest(request_id="rl-2", card=ref(CARD_100), amount=usd(5001)), metadata=auth(), timeout=5),
        grpc.StatusCode.FAILED_PRECONDITION, "RELOAD_LIMIT_EXCEEDED",
    )
    assert metadata["max_reload_minor"] == "5000"
    assert await balance_of(mesh, CARD_100) == (10000, card_pb2.CARD_STATUS_ACTIVE)


async def test_reload_that_would_exceed_the_max_card_balance_is_refused(mesh):
    stub = mesh.stub("refund")
    await stub.Reload(pb.ReloadRequest(request_id="rl-3", card=ref(CARD_100), amount=usd(5000)), metadata=auth(), timeout=5)
    await stub.Reload(pb.ReloadRequest(request_id="rl-4", card=ref(CARD_100), amount=usd(5000)), metadata=auth(), timeout=5)
    metadata = await expect_error(
        stub.Reload(pb.ReloadRequest(request_id="rl-5", card=ref(CARD_100), amount=usd(1)), metadata=auth(), timeout=5),
        grpc.StatusCode.FAILED_PRECONDITION, "BALANCE_LIMIT_EXCEEDED",
    )
    assert metadata["max_card_balance_minor"] == "20000"
    assert await balance_of(mesh, CARD_100) == (20000, card_pb2.CARD_STATUS_ACTIVE)


async def test_reload_of_an_inactive_card_is_card_inactive(mesh):
    await expect_error(
        mesh.stub("refund").Reload(pb.ReloadRequest(request_id="rl-6", card=ref(CARD_INACTIVE), amount=usd(100)), metadata=auth(), timeout=5),
        grpc.StatusCode.FAILED_PRECONDITION, "CARD_INACTIVE",
    )
    assert await balance_of(mesh, CARD_INACTIVE) == (0, card_pb2.CARD_STATUS_INACTIVE)


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (pb.ReloadRequest(request_id="v-1", amount=usd(100)), "card"),
        (pb.ReloadRequest(request_id="v-1", card=ref(CARD_100), amount=money_pb2.Money(amount_minor=100, currency_code="EUR")), "amount.currency_code"),
        (pb.ReloadRequest(request_id="v-1", card=ref(CARD_100), amount=usd(-5)), "amount.amount_minor"),
        (pb.ReloadRequest(card=ref(CARD_100), amount=usd(100)), "request_id"),
    ],
)
async def test_bad_reload_input_is_invalid_argument_naming_the_field(mesh, request_message, field):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.stub("refund").Reload(request_message, metadata=auth(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)[1]["field"] == field


async def test_reusing_a_request_id_for_another_reload_is_refused(mesh):
    stub = mesh.stub("refund")
    await stub.Reload(pb.ReloadRequest(request_id="rl-7", card=ref(CARD_100), amount=usd(100)), metadata=auth(), timeout=5)
    await expect_error(
        stub.Reload(pb.ReloadRequest(request_id="rl-7", card=ref(CARD_100), amount=usd(200)), metadata=auth(), timeout=5),
        grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED",
    )
    assert await balance_of(mesh, CARD_100) == (10100, card_pb2.CARD_STATUS_ACTIVE)


# -- cash-out ---------------------------------------------------------------------------------


async def test_cash_out_removes_the_balance_and_a_later_redeem_is_card_inactive(mesh):
    request = pb.CashOutRequest(request_id="co-1", card=ref(CARD_100), reason="customer asked")
    first = await mesh.stub("refund").CashOut(request, metadata=auth(), timeout=5)
    again = await mesh.stub("refund").CashOut(request, metadata=auth(), timeout=5)

    assert again == first
    assert (first.amount_removed.amount_minor, first.amount_removed.currency_code) == (10000, "USD")
    assert first.transaction.kind == transaction_pb2.TRANSACTION_KIND_CASH_OUT
    assert first.transaction.balance_after.amount_minor == 0
    assert first.transaction.masked_number == "603571******0001"
    assert await balance_of(mesh, CARD_100) == (0, card_pb2.CARD_STATUS_DEACTIVATED)

    await expect_error(
        mesh.stub("gateway").Redeem(
            gateway_pb2.RedeemRequest(reference_id="after-cash-out", card=ref(CARD_100), amount=usd(100)),
            metadata=auth(), timeout=5,
        ),
        grpc.StatusCode.FAILED_PRECONDITION, "CARD_INACTIVE",
    )


async def test_cash_out_with_open_holds_is_refused(mesh):
    await mesh.stub("gateway").PlaceHold(
        gateway_pb2.PlaceHoldRequest(
            reference_id="hold-co", card=ref(CARD_100), amount=usd(4000),
            expire_time={"seconds": int(time.time()) + 3600},
        ),
        metadata=auth(), timeout=5,
    )
    await expect_error(
        mesh.stub("refund").CashOut(pb.CashOutRequest(request_id="co-2", card=ref(CARD_100)), metadata=auth(), timeout=5),
        grpc.StatusCode.FAILED_PRECONDITION, "CARD_HAS_OPEN_HOLDS",
    )
    assert await balance_of(mesh, CARD_100) == (10000, card_pb2.CARD_STATUS_ACTIVE)


async def test_a_merchant_cannot_cash_out_another_merchants_card(mesh):
    await expect_error(
        mesh.stub("refund").CashOut(pb.CashOutRequest(request_id="co-3", card=ref(CARD_100)), metadata=auth(ACME_KEY), timeout=5),
        grpc.StatusCode.NOT_FOUND, "CARD_NOT_FOUND",
    )
    assert await balance_of(mesh, CARD_100) == (10000, card_pb2.CARD_STATUS_ACTIVE)


# -- refund onto a card -----------------------------------------------------------------------


async def test_new_card_policy_cashes_out_the_old_card_and_funds_a_new_one_with_both(mesh, redis_client, watch):
    cards_before = await card_count(redis_client)
    request = pb.RefundToNewCardRequest(
        request_id="n-1", order_id="order-1", amount=usd(2000), policy=pb.REFUND_TO_CARD_POLICY_NEW_CARD,
        old_card=ref(CARD_100), program_id="refund-pin",
    )
    first = await mesh.stub("refund").RefundToNewCard(request, metadata=auth(), timeout=5)
    watch.add(first.new_card.card_number, first.new_card.pin)
    again = await mesh.stub("refund").RefundToNewCard(request, metadata=auth(), timeout=5)

    assert again == first
    assert first.policy == pb.REFUND_TO_CARD_POLICY_NEW_CARD
    assert (first.cashed_out.amount_minor, first.funded.amount_minor, first.funded.currency_code) == (10000, 12000, "USD")
    new = first.new_card
    assert new.card_number.startswith("603575") and luhn_valid(new.card_number) and len(new.pin) == 8
    assert first.masked_number == new.card_number[:6] + "******" + new.card_number[-4:]
    assert await balance_of(mesh, new.card_number, new.pin) == (12000, card_pb2.CARD_STATUS_ACTIVE)
    assert await balance_of(mesh, CARD_100) == (0, card_pb2.CARD_STATUS_DEACTIVATED)
    assert await card_count(redis_client) == cards_before + 1


async def test_merchant_default_policy_applies_and_a_new_card_needs_no_old_one(mesh, watch):
    reply = await mesh.stub("refund").RefundToNewCard(
        pb.RefundToNewCardRequest(request_id="n-2", amount=usd(3000), program_id="refund-pin"), metadata=auth(), timeout=5
    )
    watch.add(reply.new_card.card_number, reply.new_card.pin)
    assert reply.policy == pb.REFUND_TO_CARD_POLICY_NEW_CARD
    assert (reply.cashed_out.amount_minor, reply.funded.amount_minor) == (0, 3000)
    assert await balance_of(mesh, reply.new_card.card_number, reply.new_card.pin) == (3000, card_pb2.CARD_STATUS_ACTIVE)


async def test_new_card_from_a_claim_link_program_returns_the_link_and_no_pin(mesh, watch):
    reply = await mesh.stub("refund").RefundToNewCard(
        pb.RefundToNewCardRequest(request_id="n-3", amount=usd(1500), program_id="refund-claim"), metadata=auth(), timeout=5
    )
    watch.add(reply.new_card.claim_url)
    assert reply.new_card.claim_url.startswith(CLAIM_BASE)
    assert reply.new_card.proxy_number.isdigit()
    assert (reply.new_card.card_number, reply.new_card.pin, reply.new_card.cvv2) == ("", "", "")
    assert reply.funded.amount_minor == 1500 and reply.masked_number.startswith("603576")


async def test_cancel_of_a_gift_card_purchase_cashes_it_out_and_issues_nothing(mesh, redis_client):
    cards_before = await card_count(redis_client)
    reply = await mesh.stub("refund").RefundToNewCard(
        pb.RefundToNewCardRequest(request_id="n-4", order_id="order-gc", policy=pb.REFUND_TO_CARD_POLICY_NEW_CARD, old_card=ref(CARD_100)),
        metadata=auth(), timeout=5,
    )
    assert (reply.cashed_out.amount_minor, reply.funded.amount_minor) == (10000, 0)
    assert not reply.HasField("new_card")
    assert reply.masked_number == "603571******0001"
    assert await balance_of(mesh, CARD_100) == (0, card_pb2.CARD_STATUS_DEACTIVATED)
    assert await card_count(redis_client) == cards_before


async def test_fund_existing_policy_credits_the_existing_card(mesh):
    reply = await mesh.stub("refund").RefundToNewCard(
        pb.RefundToNewCardRequest(
            request_id="f-1", amount=usd(1500), policy=pb.REFUND_TO_CARD_POLICY_FUND_EXISTING,
            existing_card=ref(CARD_PIN, "1234"),
        ),
        metadata=auth(), timeout=5,
    )
    assert reply.policy == pb.REFUND_TO_CARD_POLICY_FUND_EXISTING
    assert (reply.cashed_out.amount_minor, reply.funded.amount_minor) == (0, 1500)
    assert reply.masked_number == "603571******0002"
    assert not reply.HasField("new_card")
    assert await balance_of(mesh, CARD_PIN, "1234") == (4000, card_pb2.CARD_STATUS_ACTIVE)


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (pb.RefundToNewCardRequest(request_id="b-1", amount=usd(100), policy=pb.REFUND_TO_CARD_POLICY_NEW_CARD), "program_id"),
        (pb.RefundToNewCardRequest(request_id="b-2", amount=usd(100), policy=pb.REFUND_TO_CARD_POLICY_FUND_EXISTING), "existing_card"),
        (pb.RefundToNewCardRequest(request_id="b-3", program_id="refund-pin"), "amount"),
        (pb.RefundToNewCardRequest(request_id="b-4", amount=usd(100), old_card=ref(CARD_100)), "program_id"),
        (pb.RefundToNewCardRequest(request_id="b-5", old_card=card_pb2.CardRef(card_number="12ab")), "old_card.card_number"),
    ],
)
async def test_bad_refund_to_card_input_is_invalid_argument(mesh, request_message, field):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.stub("refund").RefundToNewCard(request_message, metadata=auth(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)[1]["field"] == field
    assert await balance_of(mesh, CARD_100) == (10000, card_pb2.CARD_STATUS_ACTIVE)


class CrashingGateway:
    """The real gateway client, except that `rpc` raises once before reaching the gateway."""

    def __init__(self, inner, rpc: str) -> None:
        self._inner, self._rpc, self.crashed = inner, rpc, False

    def __getattr__(self, name):
        real = getattr(self._inner, name)

        async def call(request):
            if name == self._rpc and not self.crashed:
                self.crashed = True
                raise ConnectionError("simulated crash")
            return await real(request)

        return call


async def test_a_crash_between_cash_out_and_new_card_is_finished_by_the_retry(mesh, redis_client, watch):
    cards_before = await card_count(redis_client)
    runtime = next(r for r in mesh.runtimes if "refund" in r.services)
    logic = RefundLogic(CrashingGateway(runtime.client("gateway"), "Allocate"))
    token = bind_call(CallContext("demo", time.monotonic() + 10, f"Bearer {DEMO_KEY}"))
    try:
        with pytest.raises(ConnectionError):
            await logic.refund_to_card(
                runtime.settings.merchants["demo"], "n-9", "NEW_CARD", amount=Money(500, "USD"),
                old_card=ref(CARD_100), existing_card=None, program_id="refund-pin",
            )
    finally:
        unbind_call(token)
    assert await balance_of(mesh, CARD_100) == (0, card_pb2.CARD_STATUS_DEACTIVATED)

    reply = await mesh.stub("refund").RefundToNewCard(
        pb.RefundToNewCardRequest(request_id="n-9", amount=usd(500), old_card=ref(CARD_100), program_id="refund-pin"),
        metadata=auth(), timeout=5,
    )
    watch.add(reply.new_card.card_number, reply.new_card.pin)
    assert (reply.cashed_out.amount_minor, reply.funded.amount_minor) == (10000, 10500)
    assert await balance_of(mesh, reply.new_card.card_number, reply.new_card.pin) == (10500, card_pb2.CARD_STATUS_ACTIVE)
    assert await card_count(redis_client) == cards_before + 1


# -- refund of a redemption ------------------------------------------------------------------


async def redeem(mesh, request_id: str, number: str, minor: int, key: str = DEMO_KEY, order_id: str = "order-r") -> str:
    reply = await mesh.stub("authorization").Redeem(
        authorization_pb2.RedeemRequest(request_id=request_id, order_id=order_id, card=ref(number), amount=usd(minor)),
        metadata=auth(key), timeout=5,
    )
    assert reply.redeemed.amount_minor == minor
    return reply.transaction.transaction_id


def refund_request(request_id: str, transaction_id: str, minor: int) -> pb.RefundRequest:
    return pb.RefundRequest(request_id=request_id, transaction_id=transaction_id, amount=usd(minor))


async def test_refund_credits_the_card_that_paid_and_replays(mesh):
    txn_id = await redeem(mesh, "pay-1", CARD_100, 5000)
    assert await balance_of(mesh, CARD_100) == (5000, card_pb2.CARD_STATUS_ACTIVE)
    first = await mesh.stub("refund").Refund(refund_request("rf-1", txn_id, 1250), metadata=auth(), timeout=5)
    again = await mesh.stub("refund").Refund(refund_request("rf-1", txn_id, 1250), metadata=auth(), timeout=5)

    assert again == first
    assert (first.total_refunded.amount_minor, first.total_refunded.currency_code) == (1250, "USD")
    [part] = first.parts
    assert (part.masked_number, part.original_transaction_id, part.amount.amount_minor) == ("603571******0001", txn_id, 1250)
    assert part.transaction.kind == transaction_pb2.TRANSACTION_KIND_REFUND
    assert part.transaction.balance_after.amount_minor == 6250
    assert part.transaction.order_id == "order-r"
    assert await balance_of(mesh, CARD_100) == (6250, card_pb2.CARD_STATUS_ACTIVE)


async def test_refunds_never_exceed_what_was_redeemed(mesh):
    txn_id = await redeem(mesh, "pay-2", CARD_100, 3000)
    await mesh.stub("refund").Refund(refund_request("rf-2", txn_id, 2000), metadata=auth(), timeout=5)
    metadata = await expect_error(
        mesh.stub("refund").Refund(refund_request("rf-3", txn_id, 1001), metadata=auth(), timeout=5),
        grpc.StatusCode.FAILED_PRECONDITION, "AMOUNT_EXCEEDS_REFUNDABLE",
    )
    assert metadata["refundable_minor"] == "1000"
    await mesh.stub("refund").Refund(refund_request("rf-4", txn_id, 1000), metadata=auth(), timeout=5)
    assert await balance_of(mesh, CARD_100) == (10000, card_pb2.CARD_STATUS_ACTIVE)


async def test_100_concurrent_refunds_of_1_against_50_exactly_50_succeed(mesh):
    import asyncio

    txn_id = await redeem(mesh, "pay-3", CARD_100, 5000)
    stub = mesh.stub("refund")

    async def one(i: int):
        try:
            await stub.Refund(refund_request(f"c-{i}", txn_id, 100), metadata=auth(), timeout=20)
            return "OK"
        except grpc.aio.AioRpcError as error:
            return error_details(error)[0]

    outcomes = await asyncio.gather(*(one(i) for i in range(100)))
    assert outcomes.count("OK") == 50
    assert outcomes.count("AMOUNT_EXCEEDS_REFUNDABLE") == 50
    assert await balance_of(mesh, CARD_100) == (10000, card_pb2.CARD_STATUS_ACTIVE)


async def test_a_voided_redemption_cannot_be_refunded(mesh):
    txn_id = await redeem(mesh, "pay-4", CARD_100, 2000)
    await mesh.stub("authorization").VoidRedemption(
        authorization_pb2.VoidRedemptionRequest(request_id="void-4", transaction_id=txn_id), metadata=auth(), timeout=5
    )
    metadata = await expect_error(
        mesh.stub("refund").Refund(refund_request("rf-5", txn_id, 100), metadata=auth(), timeout=5),
        grpc.StatusCode.FAILED_PRECONDITION, "TRANSACTION_NOT_REFUNDABLE",
    )
    assert metadata["state"] == "reversed"
    assert await balance_of(mesh, CARD_100) == (10000, card_pb2.CARD_STATUS_ACTIVE)


async def test_refund_of_another_merchants_or_an_unknown_transaction_is_not_found(mesh):
    txn_id = await redeem(mesh, "pay-5", CARD_100, 1000)
    for key, transaction_id in ((ACME_KEY, txn_id), (DEMO_KEY, "txn_doesnotexist")):
        await expect_error(
            mesh.stub("refund").Refund(refund_request("rf-6", transaction_id, 100), metadata=auth(key), timeout=5),
            grpc.StatusCode.NOT_FOUND, "TRANSACTION_NOT_FOUND",
        )
    assert await balance_of(mesh, CARD_100) == (9000, card_pb2.CARD_STATUS_ACTIVE)


async def test_refund_in_another_currency_is_refused(mesh):
    txn_id = await redeem(mesh, "pay-6", CARD_100, 1000)
    await expect_error(
        mesh.stub("refund").Refund(
            pb.RefundRequest(request_id="rf-7", transaction_id=txn_id, amount=money_pb2.Money(amount_minor=100, currency_code="CAD")),
            metadata=auth(), timeout=5,
        ),
        grpc.StatusCode.FAILED_PRECONDITION, "CURRENCY_MISMATCH",
    )


async def test_a_settled_capture_is_refunded_up_to_what_was_captured(mesh):
    hold = await mesh.stub("authorization").Authorize(
        authorization_pb2.AuthorizeRequest(request_id="auth-1", order_id="order-c", card=ref(CARD_100), amount=usd(5000)),
        metadata=auth(), timeout=5,
    )
    capture = await mesh.stub("settlement").Capture(
        settlement_pb2.CaptureRequest(
            request_id="cap-1", hold_id=hold.hold.hold_id, amount=usd(3000), shipment_id="s1", final_shipment=True,
        ),
        metadata=auth(), timeout=5,
    )
    settlement_id = capture.settlement.settlement_id
    assert settlement_id.startswith("stl_")
    assert await balance_of(mesh, CARD_100) == (7000, card_pb2.CARD_STATUS_ACTIVE)

    reply = await mesh.stub("refund").Refund(refund_request("rc-1", settlement_id, 2000), metadata=auth(), timeout=5)
    [part] = reply.parts
    assert (part.original_transaction_id, part.amount.amount_minor, part.masked_number) == (settlement_id, 2000, "603571******0001")
    assert part.transaction.order_id == "order-c"
    metadata = await expect_error(
        mesh.stub("refund").Refund(refund_request("rc-2", settlement_id, 1001), metadata=auth(), timeout=5),
        grpc.StatusCode.FAILED_PRECONDITION, "AMOUNT_EXCEEDS_REFUNDABLE",
    )
    assert metadata["refundable_minor"] == "1000"
    await expect_error(
        mesh.stub("refund").Refund(refund_request("rc-3", settlement_id, 100), metadata=auth(ACME_KEY), timeout=5),
        grpc.StatusCode.NOT_FOUND, "TRANSACTION_NOT_FOUND",
    )
    assert await balance_of(mesh, CARD_100) == (9000, card_pb2.CARD_STATUS_ACTIVE)
