"""Multi-tender Checkout and crash recovery, in both deployment modes: all-or-nothing, compensation
of every approved tender, external tender declines, a crash between redemptions finished by the
recovery sweep (and by a retry of the same request), and the write-ahead intent resolver."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from common.errors import MeshError
from common.money import Money
from giftcard.authorization.v1 import authorization_pb2 as pb
from giftcard.type.v1 import hold_pb2, transaction_pb2
from services.authorization.checkout import CheckoutFlow, CheckoutStore
from services.shared.background import merchant_call
from tests.integration.test_authorization import balance_of, call, card, fails, new_card, rid, usd
from tests.support.mesh import DEMO_KEY, MODES, start_mesh


@pytest.fixture(params=MODES)
async def mesh(request, redis_client, redis_url):
    running = await start_mesh(request.param, redis_url)
    yield running
    await running.close()


def authorization_runtime(mesh):
    return next(r for r in mesh.runtimes if "authorization" in r.services)


def servicer(mesh):
    return authorization_runtime(mesh)._servicers["authorization"]


def checkout(tenders, *, externals=(), action=pb.CHECKOUT_ACTION_REDEEM, request_id=None) -> pb.CheckoutRequest:
    return pb.CheckoutRequest(
        request_id=request_id or rid(), order_id="order-9",
        tenders=[pb.CheckoutTender(card=card(number), amount=usd(minor)) for number, minor in tenders],
        external_tenders=[pb.ExternalTender(kind=kind, approved=ok, description="test") for kind, ok in externals],
        action=action,
    )


def states(reply) -> list[int]:
    return [t.state for t in reply.tenders]


# -- the happy path and compensation ----------------------------------------------------------------


async def test_checkout_redeems_every_tender(mesh):
    cards = [await new_card(mesh, 50_00) for _ in range(3)]
    reply = await call(mesh, "Checkout", checkout([(cards[0], 50_00), (cards[1], 30_00), (cards[2], 5_55)]))
    assert reply.outcome == pb.CHECKOUT_OUTCOME_APPROVED
    assert states(reply) == [pb.TENDER_STATE_APPROVED] * 3
    assert reply.total_approved.amount_minor == 85_55
    assert [await balance_of(mesh, c) for c in cards] == [(0, 0), (20_00, 0), (44_45, 0)]
    # Each approved tender is an ordinary redemption: it can be voided on its own.
    void = await call(mesh, "VoidRedemption", pb.VoidRedemptionRequest(
        request_id=rid(), transaction_id=reply.tenders[1].reference_id))
    assert void.credited.amount_minor == 30_00
    assert await balance_of(mesh, cards[1]) == (50_00, 0)


async def test_checkout_with_holds_places_holds(mesh):
    cards = [await new_card(mesh, 50_00) for _ in range(2)]
    reply = await call(mesh, "Checkout", checkout([(cards[0], 10_00), (cards[1], 20_00)], action=pb.CHECKOUT_ACTION_AUTHORIZE))
    assert reply.outcome == pb.CHECKOUT_OUTCOME_APPROVED
    assert [await balance_of(mesh, c) for c in cards] == [(50_00, 10_00), (50_00, 20_00)]
    hold = (await call(mesh, "GetHold", pb.GetHoldRequest(hold_id=reply.tenders[1].reference_id))).hold
    assert (hold.state, hold.open.amount_minor) == (hold_pb2.HOLD_STATE_OPEN, 20_00)


async def test_third_card_failing_voids_the_first_two(mesh):
    cards = [await new_card(mesh, 40_00), await new_card(mesh, 40_00), await new_card(mesh, 10_00)]
    reply = await call(mesh, "Checkout", checkout([(cards[0], 40_00), (cards[1], 25_00), (cards[2], 10_01)]))
    assert reply.outcome == pb.CHECKOUT_OUTCOME_DECLINED
    assert states(reply) == [pb.TENDER_STATE_VOIDED, pb.TENDER_STATE_VOIDED, pb.TENDER_STATE_DECLINED]
    assert reply.tenders[2].reason == "INSUFFICIENT_FUNDS"
    assert reply.total_approved.amount_minor == 0
    assert [await balance_of(mesh, c) for c in cards] == [(40_00, 0), (40_00, 0), (10_00, 0)]


async def test_failing_tender_stops_the_rest_and_releases_holds(mesh):
    cards = [await new_card(mesh, 40_00), await new_card(mesh, 5_00), await new_card(mesh, 40_00)]
    reply = await call(mesh, "Checkout", checkout([(cards[0], 40_00), (cards[1], 6_00), (cards[2], 1_00)],
                                                  action=pb.CHECKOUT_ACTION_AUTHORIZE))
    assert states(reply) == [pb.TENDER_STATE_VOIDED, pb.TENDER_STATE_DECLINED, pb.TENDER_STATE_NOT_ATTEMPTED]
    assert [await balance_of(mesh, c) for c in cards] == [(40_00, 0), (5_00, 0), (40_00, 0)]


async def test_declined_external_tender_moves_no_money(mesh):
    cards = [await new_card(mesh, 40_00) for _ in range(2)]
    reply = await call(mesh, "Checkout", checkout([(cards[0], 10_00), (cards[1], 10_00)],
                                                  externals=[("credit_card", True), ("risk_check", False)]))
    assert reply.outcome == pb.CHECKOUT_OUTCOME_DECLINED
    assert states(reply) == [pb.TENDER_STATE_NOT_ATTEMPTED] * 2
    assert [await balance_of(mesh, c) for c in cards] == [(40_00, 0), (40_00, 0)]


async def test_checkout_is_idempotent_by_request_id(mesh):
    cards = [await new_card(mesh, 40_00) for _ in range(2)]
    request = checkout([(cards[0], 10_00), (cards[1], 10_00)])
    first, second = await call(mesh, "Checkout", request), await call(mesh, "Checkout", request)
    assert first == second
    assert [await balance_of(mesh, c) for c in cards] == [(30_00, 0), (30_00, 0)]


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda c: pb.CheckoutRequest(request_id="r1", order_id="o"), "tenders"),
        (lambda c: pb.CheckoutRequest(request_id="r1", tenders=[pb.CheckoutTender(card=card(c), amount=usd(1))]), "order_id"),
        (lambda c: pb.CheckoutRequest(request_id="r1", order_id="o", tenders=[pb.CheckoutTender(card=card(c), amount=usd(1))] * 11), "tenders"),
        (lambda c: pb.CheckoutRequest(request_id="r1", order_id="o", tenders=[pb.CheckoutTender(card=card(c))]), "tenders[0].amount.currency_code"),
        (lambda c: pb.CheckoutRequest(request_id="r1", order_id="o", tenders=[
            pb.CheckoutTender(card=card(c), amount=usd(1)), pb.CheckoutTender(amount=usd(1))]), "tenders[1].card"),
    ],
)
async def test_checkout_rejects_bad_input_naming_the_field(mesh, build, field):
    number = await new_card(mesh, 10_00)
    code, _, _, fields = await fails(mesh, "Checkout", build(number))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    assert await balance_of(mesh, number) == (10_00, 0)


# -- crash in the middle --------------------------------------------------------------------------


class DiesAtRedeem:
    """A gateway client that forwards until the n-th Redeem, then hangs there as a process that
    died would: the caller's work is cancelled mid-checkout, nothing is compensated."""

    def __init__(self, gateway, n: int) -> None:
        self._gateway = gateway
        self._n = n
        self.reached = asyncio.Event()

    def __getattr__(self, rpc):
        forward = getattr(self._gateway, rpc)
        if rpc != "Redeem":
            return forward

        async def redeem(request):
            self._n -= 1
            if self._n == 0:
                self.reached.set()
                await asyncio.Event().wait()
            return await forward(request)

        return redeem


def merchant_context(mesh):
    """Call context for work outside an RPC; over gRPC it needs a merchant key to present."""
    return merchant_call("demo", 30.0, f"Bearer {DEMO_KEY}")


async def _crash_checkout(mesh, cards, request_id):
    runtime = authorization_runtime(mesh)
    gateway = DiesAtRedeem(runtime.client("gateway"), 3)
    flow = CheckoutFlow(gateway, CheckoutStore(runtime.redis, runtime.sealer), servicer(mesh).logic)
    tenders = [(card(n), n[:6], amount) for n, amount in cards]

    async def run():
        with merchant_context(mesh):
            await flow.run("demo", request_id, order_id="order-crash",
                           tenders=[(c, m, Money(a, "USD")) for c, m, a in tenders],
                           externals=[], authorize=False, ttl_ms=60_000)

    task = asyncio.ensure_future(run())
    await asyncio.wait_for(gateway.reached.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("mode", MODES)
async def test_crash_between_redemptions_is_compensated_after_restart(redis_client, redis_url, mode):
    running = await start_mesh(mode, redis_url)
    try:
        cards = [await new_card(running, 40_00) for _ in range(3)]
        await _crash_checkout(running, [(cards[0], 10_00), (cards[1], 20_00), (cards[2], 30_00)], "crash-1")
        # The "process" died after two redemptions: the money is gone from cards 1 and 2.
        assert [await balance_of(running, c) for c in cards] == [(30_00, 0), (20_00, 0), (40_00, 0)]
    finally:
        await running.close()

    restarted = await start_mesh(mode, redis_url)
    try:
        with merchant_context(restarted):
            counts = await servicer(restarted).recovery.run("demo", older_than_seconds=0)
        assert counts["checkouts"] == 1
        assert [await balance_of(restarted, c) for c in cards] == [(40_00, 0), (40_00, 0), (40_00, 0)]
        # A retry of the crashed request now gets the compensated outcome, and nothing moves.
        with merchant_context(restarted):
            flow = servicer(restarted).checkout
            reply = await flow.run("demo", "crash-1", order_id="order-crash",
                                   tenders=[(card(c), c[:6], Money(a, "USD")) for c, a in
                                            [(cards[0], 10_00), (cards[1], 20_00), (cards[2], 30_00)]],
                                   externals=[], authorize=False, ttl_ms=60_000)
        assert reply.outcome == pb.CHECKOUT_OUTCOME_DECLINED
        assert states(reply) == [pb.TENDER_STATE_VOIDED, pb.TENDER_STATE_VOIDED, pb.TENDER_STATE_DECLINED]
        assert [await balance_of(restarted, c) for c in cards] == [(40_00, 0), (40_00, 0), (40_00, 0)]
    finally:
        await restarted.close()


async def test_retry_after_crash_compensates_instead_of_continuing(mesh):
    cards = [await new_card(mesh, 40_00) for _ in range(3)]
    await _crash_checkout(mesh, [(cards[0], 10_00), (cards[1], 10_00), (cards[2], 10_00)], "crash-2")
    with merchant_context(mesh):
        reply = await servicer(mesh).checkout.run(
            "demo", "crash-2", order_id="order-crash",
            tenders=[(card(c), c[:6], Money(10_00, "USD")) for c in cards], externals=[], authorize=False,
            ttl_ms=60_000,
        )
    assert reply.outcome == pb.CHECKOUT_OUTCOME_DECLINED
    assert [await balance_of(mesh, c) for c in cards] == [(40_00, 0)] * 3


async def test_recovery_leaves_recent_checkouts_alone(mesh):
    cards = [await new_card(mesh, 40_00) for _ in range(3)]
    await _crash_checkout(mesh, [(cards[0], 10_00), (cards[1], 10_00), (cards[2], 10_00)], "crash-3")
    with merchant_context(mesh):
        counts = await servicer(mesh).recovery.run("demo", older_than_seconds=3600)
    assert counts["checkouts"] == 0
    assert [await balance_of(mesh, c) for c in cards] == [(30_00, 0), (30_00, 0), (40_00, 0)]


# -- the write-ahead intent resolver ----------------------------------------------------------------


class TimesOut:
    """A gateway client whose Redeem times out: after reaching the provider, or before."""

    def __init__(self, gateway, arrives: bool) -> None:
        self._gateway = gateway
        self._arrives = arrives

    def __getattr__(self, rpc):
        forward = getattr(self._gateway, rpc)
        if rpc != "Redeem":
            return forward

        async def redeem(request):
            if self._arrives:
                await forward(request)
            raise MeshError(grpc.StatusCode.DEADLINE_EXCEEDED, "PROVIDER_TIMEOUT", "provider timed out", retryable=True)

        return redeem


@pytest.mark.parametrize("arrives", [True, False])
async def test_resolver_reverses_a_redemption_whose_outcome_was_never_recorded(mesh, arrives):
    from services.authorization.logic import AuthorizationLogic

    number = await new_card(mesh, 50_00)
    logic = servicer(mesh).logic
    timing_out = AuthorizationLogic(TimesOut(authorization_runtime(mesh).client("gateway"), arrives),
                                    logic.holds, logic.transactions, logic.intents, logic.ids)
    with merchant_context(mesh):
        with pytest.raises(MeshError):
            await timing_out.redeem("demo", "to-1", order_id="o", card=card(number), masked="x",
                                    amount=Money(20_00, "USD"), tip=None, partial=False, client_transaction_id="")
    assert await balance_of(mesh, number) == ((30_00 if arrives else 50_00), 0)
    with merchant_context(mesh):
        counts = await servicer(mesh).recovery.run("demo", older_than_seconds=0)
    assert counts["reversed"] == 1
    assert await balance_of(mesh, number) == (50_00, 0)
    transaction_id = logic.ids.derive("txn", "demo", "Redeem", "to-1")
    record = await logic.transactions.get("demo", transaction_id)
    assert (record.state, record.reversed_amount) == ("reversed", 20_00 if arrives else 0)
    # The same request retried later is refused: it was reversed, it never applies again.
    with merchant_context(mesh):
        with pytest.raises(MeshError) as caught:
            await logic.redeem("demo", "to-1", order_id="o", card=card(number), masked="x",
                               amount=Money(20_00, "USD"), tip=None, partial=False, client_transaction_id="")
    assert caught.value.reason == "TRANSACTION_REVERSED"
    assert await balance_of(mesh, number) == (50_00, 0)


async def test_reverse_by_client_id_after_a_timeout_that_did_arrive(mesh):
    from services.authorization.logic import AuthorizationLogic

    number = await new_card(mesh, 50_00)
    logic = servicer(mesh).logic
    timing_out = AuthorizationLogic(TimesOut(authorization_runtime(mesh).client("gateway"), True),
                                    logic.holds, logic.transactions, logic.intents, logic.ids)
    with merchant_context(mesh):
        with pytest.raises(MeshError):
            await timing_out.redeem("demo", "to-2", order_id="o", card=card(number), masked="x",
                                    amount=Money(7_00, "USD"), tip=None, partial=False, client_transaction_id="pos-to-2")
    assert await balance_of(mesh, number) == (43_00, 0)
    reply = await call(mesh, "ReverseTransaction", pb.ReverseTransactionRequest(request_id=rid(), client_transaction_id="pos-to-2"))
    assert (reply.outcome, reply.amount.amount_minor) == (pb.REVERSAL_OUTCOME_REVERSED, 7_00)
    assert reply.transaction.state == transaction_pb2.TRANSACTION_STATE_REVERSED
    assert await balance_of(mesh, number) == (50_00, 0)


async def test_authorize_and_redeem_rerun_after_a_takeover_apply_once(mesh):
    """What a retry does after the first worker died past the provider call: same ids, same
    reference, the provider replays, the mesh records are written once."""
    number = await new_card(mesh, 50_00)
    logic = servicer(mesh).logic
    with merchant_context(mesh):
        holds = [await logic.authorize("demo", "takeover-a", order_id="o", card=card(number), masked="x",
                                       amount=Money(10_00, "USD"), allow_partial=False, ttl_ms=60_000,
                                       client_transaction_id="tk-a") for _ in range(2)]
        redemptions = [await logic.redeem("demo", "takeover-r", order_id="o", card=card(number), masked="x",
                                          amount=Money(5_00, "USD"), tip=None, partial=False,
                                          client_transaction_id="tk-r") for _ in range(2)]
    assert holds[0].hold == holds[1].hold
    assert redemptions[0].transaction == redemptions[1].transaction
    assert await balance_of(mesh, number) == (45_00, 10_00)
