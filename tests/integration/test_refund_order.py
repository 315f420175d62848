"""Refund by order_id, in both deployment modes: a 3-card checkout refunded by each split strategy
(exact parts to the cent), replay, over-refund refused before anything moves, voided tenders left
out, captures included, and concurrent order refunds that never exceed what the order paid."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from giftcard.authorization.v1 import authorization_pb2 as apb
from giftcard.refund.v1 import refund_pb2 as pb
from giftcard.settlement.v1 import settlement_pb2
from tests.integration.test_authorization import balance_of, call, card, new_card, rid, usd
from tests.integration.test_mesh_server import error_details
from tests.support.mesh import MODES, auth, start_mesh

TENDERS = (40_00, 25_00, 10_01)  # paid in this order; 75.01 in all


@pytest.fixture(params=MODES)
async def mesh(request, redis_client, redis_url):
    running = await start_mesh(request.param, redis_url)
    yield running
    await running.close()


async def paid_order(mesh) -> tuple[str, list[str], list[str]]:
    """(order id, cards, transaction ids): a 3-card checkout, each card starting at 50.00."""
    order_id = "order-" + rid()
    cards = [await new_card(mesh, 50_00) for _ in TENDERS]
    reply = await call(mesh, "Checkout", apb.CheckoutRequest(
        request_id=rid(), order_id=order_id, action=apb.CHECKOUT_ACTION_REDEEM,
        tenders=[apb.CheckoutTender(card=card(c), amount=usd(m)) for c, m in zip(cards, TENDERS)],
    ))
    assert reply.outcome == apb.CHECKOUT_OUTCOME_APPROVED
    return order_id, cards, [t.reference_id for t in reply.tenders]


def by_order(request_id: str, order_id: str, minor: int, strategy=pb.REFUND_SPLIT_STRATEGY_UNSPECIFIED):
    return pb.RefundRequest(request_id=request_id, order_id=order_id, amount=usd(minor), strategy=strategy)


async def refund(mesh, request: pb.RefundRequest, timeout: float = 20) -> pb.RefundResponse:
    return await mesh.stub("refund").Refund(request, metadata=auth(), timeout=timeout)


async def refused(mesh, request: pb.RefundRequest) -> tuple[grpc.StatusCode, str, dict]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await refund(mesh, request)
    reason, metadata, _ = error_details(caught.value)
    return caught.value.code(), reason, metadata


def parts_of(reply: pb.RefundResponse) -> dict[str, int]:
    return {p.original_transaction_id: p.amount.amount_minor for p in reply.parts}


async def balances(mesh, cards) -> list[int]:
    return [(await balance_of(mesh, c))[0] for c in cards]


@pytest.mark.parametrize("strategy, expected", [
    (pb.REFUND_SPLIT_STRATEGY_LAST_PAID_FIRST, (24_99, 25_00, 10_01)),
    (pb.REFUND_SPLIT_STRATEGY_FIRST_PAID_FIRST, (40_00, 20_00, 0)),
    # 60.00 x (40.00, 25.00, 10.01) / 75.01 = 31.9957, 19.9973, 8.0069: the two cents left go to
    # the largest remainders (the second and third payment).
    (pb.REFUND_SPLIT_STRATEGY_PRO_RATA, (31_99, 20_00, 8_01)),
])
async def test_a_3_card_order_is_refunded_by_strategy_to_the_cent(mesh, strategy, expected):
    order_id, cards, txns = await paid_order(mesh)
    assert await balances(mesh, cards) == [10_00, 25_00, 39_99]
    reply = await refund(mesh, by_order(rid(), order_id, 60_00, strategy))

    assert parts_of(reply) == {t: m for t, m in zip(txns, expected) if m}
    assert [p.original_transaction_id for p in reply.parts] == [t for t, m in zip(txns, expected) if m]
    assert (reply.total_refunded.amount_minor, reply.total_refunded.currency_code) == (60_00, "USD")
    for part in reply.parts:
        assert part.masked_number.endswith(cards[txns.index(part.original_transaction_id)][-4:])
        assert part.transaction.order_id == order_id
    assert await balances(mesh, cards) == [b + m for b, m in zip((10_00, 25_00, 39_99), expected)]


async def test_the_merchant_default_is_last_paid_first_and_a_retry_refunds_once(mesh):
    order_id, cards, txns = await paid_order(mesh)
    request = by_order(rid(), order_id, 30_00)
    first = await refund(mesh, request)
    again = await refund(mesh, request)
    assert again == first
    assert parts_of(first) == {txns[2]: 10_01, txns[1]: 19_99}
    assert await balances(mesh, cards) == [10_00, 44_99, 50_00]
    # Each part is an ordinary refund of its payment: what is left is 75.01 - 30.00.
    code, reason, metadata = await refused(mesh, by_order(rid(), order_id, 45_02))
    assert (code, reason, metadata["refundable_minor"]) == (grpc.StatusCode.FAILED_PRECONDITION, "AMOUNT_EXCEEDS_REFUNDABLE", "4501")


async def test_an_over_refund_is_refused_before_anything_moves(mesh):
    order_id, cards, txns = await paid_order(mesh)
    code, reason, metadata = await refused(mesh, by_order(rid(), order_id, 75_02))
    assert (code, reason, metadata["refundable_minor"]) == (grpc.StatusCode.FAILED_PRECONDITION, "AMOUNT_EXCEEDS_REFUNDABLE", "7501")
    # A refund of one payment counts against the order too.
    await refund(mesh, pb.RefundRequest(request_id=rid(), transaction_id=txns[0], amount=usd(40_00)))
    code, reason, _ = await refused(mesh, by_order(rid(), order_id, 35_02))
    assert reason == "AMOUNT_EXCEEDS_REFUNDABLE"
    assert await balances(mesh, cards) == [50_00, 25_00, 39_99]
    code, reason, _ = await refused(mesh, by_order(rid(), "order-never-paid", 1))
    assert reason == "AMOUNT_EXCEEDS_REFUNDABLE"


async def test_a_voided_tender_is_not_refundable(mesh):
    order_id, cards, txns = await paid_order(mesh)
    await call(mesh, "VoidRedemption", apb.VoidRedemptionRequest(request_id=rid(), transaction_id=txns[2]))
    assert await balances(mesh, cards) == [10_00, 25_00, 50_00]
    code, reason, metadata = await refused(mesh, by_order(rid(), order_id, 65_01))
    assert (reason, metadata["refundable_minor"]) == ("AMOUNT_EXCEEDS_REFUNDABLE", "6500")
    reply = await refund(mesh, by_order(rid(), order_id, 60_00))
    assert parts_of(reply) == {txns[0]: 35_00, txns[1]: 25_00}
    assert await balances(mesh, cards) == [45_00, 50_00, 50_00]


async def test_a_settled_capture_of_the_order_is_refunded_last_paid_first(mesh):
    order_id, cards, txns = await paid_order(mesh)
    extra = await new_card(mesh, 50_00)
    hold = await call(mesh, "Authorize", apb.AuthorizeRequest(
        request_id=rid(), order_id=order_id, card=card(extra), amount=usd(20_00)))
    capture = await mesh.stub("settlement").Capture(settlement_pb2.CaptureRequest(
        request_id=rid(), hold_id=hold.hold.hold_id, amount=usd(15_00), shipment_id="s1", final_shipment=True,
    ), metadata=auth(), timeout=10)
    settlement_id = capture.settlement.settlement_id
    reply = await refund(mesh, by_order(rid(), order_id, 20_00))
    assert parts_of(reply) == {settlement_id: 15_00, txns[2]: 5_00}
    assert await balances(mesh, [extra]) == [50_00]


async def test_concurrent_order_refunds_never_exceed_what_the_order_paid(mesh):
    order_id, cards, txns = await paid_order(mesh)
    strategies = (pb.REFUND_SPLIT_STRATEGY_LAST_PAID_FIRST, pb.REFUND_SPLIT_STRATEGY_FIRST_PAID_FIRST,
                  pb.REFUND_SPLIT_STRATEGY_PRO_RATA)

    async def one(i: int) -> str:
        try:
            await refund(mesh, by_order(f"cc-{order_id}-{i}", order_id, 10_00, strategies[i % 3]), timeout=120)
            return "OK"
        except grpc.aio.AioRpcError as error:
            return error_details(error)[0]

    outcomes = await asyncio.gather(*(one(i) for i in range(12)))
    assert outcomes.count("OK") <= 7
    assert set(outcomes) <= {"OK", "AMOUNT_EXCEEDS_REFUNDABLE"}
    after = await balances(mesh, cards)
    assert sum(after) - (10_00 + 25_00 + 39_99) == 10_00 * outcomes.count("OK")
    assert all(a <= 50_00 for a in after)
    # What is left is exactly refundable afterwards.
    left = 75_01 - 10_00 * outcomes.count("OK")
    await refund(mesh, by_order(rid(), order_id, left))
    assert await balances(mesh, cards) == [50_00, 50_00, 50_00]


async def test_a_part_refused_by_the_provider_returns_the_later_reservations(mesh, redis_client):
    order_id, cards, txns = await paid_order(mesh)
    # The middle card is cashed out (deactivated): its part of a refund is refused.
    await mesh.stub("refund").CashOut(pb.CashOutRequest(request_id=rid(), card=card(cards[1])), metadata=auth(), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        # Last-paid-first: 24.99, 25.00, 10.01; the parts are credited oldest payment first.
        await refund(mesh, by_order(rid(), order_id, 60_00))
    reason, metadata, _ = error_details(caught.value)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, reason
    assert metadata["refunded_minor"] == "2499"
    assert (await balance_of(mesh, cards[0]))[0] == 34_99
    # The last payment's reservation came back: all 10.01 of it can still be refunded.
    reply = await refund(mesh, pb.RefundRequest(request_id=rid(), transaction_id=txns[2], amount=usd(10_01)))
    assert reply.total_refunded.amount_minor == 10_01
    assert (await balance_of(mesh, cards[2]))[0] == 50_00
    # The index holds payment ids only, never a card number.
    async for key in redis_client.scan_iter(match="mesh:order:*"):
        dump = repr(await redis_client.dump(key))
        assert not any(number in dump or number[-8:] in dump for number in cards)
