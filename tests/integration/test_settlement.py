"""SettlementService through the public gRPC API on the native provider, in both deployment modes:
captures per shipment, advanced holds, the batch queue, scheduled reversals, hold expiry,
idempotency and merchant isolation. Amounts are checked to the cent, at the mesh and at the ledger.
"""

from __future__ import annotations

import asyncio
import secrets

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from giftcard.authorization.v1 import authorization_pb2 as apb
from giftcard.settlement.v1 import settlement_pb2 as pb
from giftcard.type.v1 import card_pb2, hold_pb2, money_pb2
from services.shared.background import merchant_call
from tests.integration.test_mesh_server import error_details
from tests.support.mesh import ACME_KEY, DEMO_KEY, MODES, auth, start_mesh

USD = "USD"
# Jobs are run by the tests (scheduler off), except where a test says otherwise.
QUIET = {"scheduler_enabled": False, "job_api_keys": {"demo": DEMO_KEY}}


@pytest.fixture(params=MODES)
async def mesh(request, redis_client, redis_url):
    running = await start_mesh(request.param, redis_url, settlement=QUIET)
    yield running
    await running.close()


def usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code=USD)


def rid() -> str:
    return "req-" + secrets.token_hex(8)


def ledger(mesh):
    return mesh.runtimes[0].providers.native_ledger


def settlement_runtime(mesh):
    return next(r for r in mesh.runtimes if "settlement" in r.services)


def jobs(mesh):
    return settlement_runtime(mesh).schedulers[0].jobs


async def run_job(mesh, job: str, merchant: str = "demo", key: str = DEMO_KEY):
    """One run of a scheduler job, as the scheduler does it (with the merchant's job key)."""
    with merchant_call(merchant, 30, f"Bearer {key}"):
        return await getattr(jobs(mesh), job)(merchant)


async def new_card(mesh, balance_minor: int, merchant: str = "demo") -> str:
    number = "7777" + "".join(secrets.choice("0123456789") for _ in range(12))
    await ledger(mesh).create_card(merchant, number, USD, balance_minor=balance_minor, active=True)
    return number


async def at_ledger(mesh, number: str, merchant: str = "demo") -> tuple[int, int]:
    state = await ledger(mesh).get_card(merchant, number)
    return state.balance_minor, state.held_minor


async def ledger_entries(mesh, number: str, kind: str, merchant: str = "demo") -> list[dict]:
    return [e for e in await ledger(mesh).history(merchant, number) if e["kind"] == kind]


async def authorize(mesh, number: str, minor: int, key: str = DEMO_KEY, **kwargs) -> hold_pb2.Hold:
    reply = await mesh.stub("authorization").Authorize(apb.AuthorizeRequest(
        request_id=rid(), order_id="order-1", card=card_pb2.CardRef(card_number=number), amount=usd(minor), **kwargs,
    ), metadata=auth(key), timeout=10)
    return reply.hold


async def get_hold(mesh, hold_id: str) -> hold_pb2.Hold:
    reply = await mesh.stub("authorization").GetHold(apb.GetHoldRequest(hold_id=hold_id), metadata=auth(), timeout=10)
    return reply.hold


async def call(mesh, rpc: str, request, key: str = DEMO_KEY):
    return await getattr(mesh.stub("settlement"), rpc)(request, metadata=auth(key), timeout=10)


async def fails(mesh, rpc: str, request, key: str = DEMO_KEY) -> tuple[grpc.StatusCode, str, dict]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(mesh, rpc, request, key)
    reason, metadata, _ = error_details(caught.value)
    return caught.value.code(), reason, metadata


def capture(hold_id: str, minor: int, **kwargs) -> pb.CaptureRequest:
    return pb.CaptureRequest(request_id=kwargs.pop("request_id", rid()), hold_id=hold_id, amount=usd(minor),
                             shipment_id=kwargs.pop("shipment_id", "ship-1"), invoice_id=kwargs.pop("invoice_id", "inv-1"),
                             **kwargs)


# -- Capture ------------------------------------------------------------------------------------

async def test_full_shipment_is_one_capture_that_closes_the_hold(mesh):
    number = await new_card(mesh, 100_00)
    hold = await authorize(mesh, number, 60_00)

    reply = await call(mesh, "Capture", capture(hold.hold_id, 60_00, final_shipment=True))

    assert reply.settlement.state == pb.SETTLEMENT_STATE_SETTLED
    assert reply.settlement.amount == usd(60_00)
    assert reply.settlement.hold_id == hold.hold_id
    assert reply.settlement.shipment_id == "ship-1" and reply.settlement.invoice_id == "inv-1"
    assert reply.settlement.transaction_id
    assert not reply.HasField("open_hold")
    closed = await get_hold(mesh, hold.hold_id)
    assert closed.state == hold_pb2.HOLD_STATE_CLOSED
    assert closed.captured == usd(60_00) and closed.open == usd(0)
    assert await at_ledger(mesh, number) == (40_00, 0)
    assert [e["amount_minor"] for e in await ledger_entries(mesh, number, "capture")] == [-60_00]


async def test_final_shipment_for_less_releases_the_rest_at_the_provider(mesh):
    number = await new_card(mesh, 100_00)
    hold = await authorize(mesh, number, 60_00)

    reply = await call(mesh, "Capture", capture(hold.hold_id, 45_50, final_shipment=True))

    assert reply.settlement.state == pb.SETTLEMENT_STATE_SETTLED
    closed = await get_hold(mesh, hold.hold_id)
    assert (closed.state, closed.captured, closed.released) == (hold_pb2.HOLD_STATE_CLOSED, usd(45_50), usd(14_50))
    assert await at_ledger(mesh, number) == (54_50, 0)


async def test_three_partial_shipments_continue_on_advanced_holds_until_fully_captured(mesh):
    number = await new_card(mesh, 100_00)
    original = await authorize(mesh, number, 60_00)

    first = await call(mesh, "Capture", capture(original.hold_id, 10_00, shipment_id="ship-1"))
    advanced = first.open_hold
    assert first.settlement.state == pb.SETTLEMENT_STATE_SETTLED
    assert advanced.hold_id != original.hold_id
    assert advanced.parent_hold_id == original.hold_id
    assert (advanced.state, advanced.authorized, advanced.open) == (hold_pb2.HOLD_STATE_OPEN, usd(50_00), usd(50_00))
    assert await at_ledger(mesh, number) == (90_00, 50_00)

    second = await call(mesh, "Capture", capture(advanced.hold_id, 20_00, shipment_id="ship-2"))
    again = second.open_hold
    assert again.parent_hold_id == advanced.hold_id
    assert (again.authorized, again.open) == (usd(30_00), usd(30_00))
    assert await at_ledger(mesh, number) == (70_00, 30_00)

    third = await call(mesh, "Capture", capture(again.hold_id, 30_00, shipment_id="ship-3", final_shipment=True))
    assert third.settlement.state == pb.SETTLEMENT_STATE_SETTLED
    assert not third.HasField("open_hold")

    assert await at_ledger(mesh, number) == (40_00, 0)
    assert [e["amount_minor"] for e in await ledger_entries(mesh, number, "capture")] == [-10_00, -20_00, -30_00]
    for hold_id, captured in ((original.hold_id, 10_00), (advanced.hold_id, 20_00), (again.hold_id, 30_00)):
        hold = await get_hold(mesh, hold_id)
        assert (hold.state, hold.captured, hold.open) == (hold_pb2.HOLD_STATE_CLOSED, usd(captured), usd(0))


async def test_a_continued_hold_is_closed_and_refuses_another_capture(mesh):
    number = await new_card(mesh, 100_00)
    original = await authorize(mesh, number, 60_00)
    await call(mesh, "Capture", capture(original.hold_id, 10_00))

    code, reason, _ = await fails(mesh, "Capture", capture(original.hold_id, 5_00))

    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_NOT_OPEN")
    assert await at_ledger(mesh, number) == (90_00, 50_00)


async def test_capture_never_exceeds_what_is_open(mesh):
    number = await new_card(mesh, 100_00)
    hold = await authorize(mesh, number, 60_00)

    code, reason, metadata = await fails(mesh, "Capture", capture(hold.hold_id, 60_01))

    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "AMOUNT_EXCEEDS_OPEN")
    assert await at_ledger(mesh, number) == (100_00, 60_00)
    assert (await get_hold(mesh, hold.hold_id)).open == usd(60_00)


async def test_capture_of_a_released_hold_is_refused(mesh):
    number = await new_card(mesh, 100_00)
    hold = await authorize(mesh, number, 60_00)
    await mesh.stub("authorization").ReverseAuthorization(
        apb.ReverseAuthorizationRequest(request_id=rid(), hold_id=hold.hold_id), metadata=auth(), timeout=10)

    code, reason, _ = await fails(mesh, "Capture", capture(hold.hold_id, 10_00))

    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_NOT_OPEN")
    assert await at_ledger(mesh, number) == (100_00, 0)


async def test_capture_is_idempotent_by_request_id(mesh):
    number = await new_card(mesh, 100_00)
    hold = await authorize(mesh, number, 60_00)
    request = capture(hold.hold_id, 25_00)

    first = await call(mesh, "Capture", request)
    second = await call(mesh, "Capture", request)

    assert first == second
    assert len(await ledger_entries(mesh, number, "capture")) == 1
    assert await at_ledger(mesh, number) == (75_00, 35_00)


async def test_capture_validates_its_input(mesh):
    number = await new_card(mesh, 100_00)
    hold = await authorize(mesh, number, 60_00)

    assert (await fails(mesh, "Capture", capture("", 1_00)))[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert (await fails(mesh, "Capture", capture(hold.hold_id, 0)))[0] == grpc.StatusCode.INVALID_ARGUMENT
    bad_currency = capture(hold.hold_id, 1_00)
    bad_currency.amount.currency_code = "CAD"
    assert (await fails(mesh, "Capture", bad_currency))[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "CURRENCY_MISMATCH")
    assert await at_ledger(mesh, number) == (100_00, 60_00)


async def test_another_merchant_cannot_capture_or_list_a_hold(mesh):
    number = await new_card(mesh, 100_00)
    hold = await authorize(mesh, number, 60_00)
    await call(mesh, "Capture", capture(hold.hold_id, 10_00, defer_to_batch=True))

    code, reason, _ = await fails(mesh, "Capture", capture(hold.hold_id, 10_00), key=ACME_KEY)
    listed = await call(mesh, "ListOpenSettlements", pb.ListOpenSettlementsRequest(), key=ACME_KEY)
    batch = await call(mesh, "RunSettlementBatch", pb.RunSettlementBatchRequest(request_id=rid()), key=ACME_KEY)

    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "HOLD_NOT_FOUND")
    assert list(listed.settlements) == [] and list(batch.results) == []
    assert await at_ledger(mesh, number) == (100_00, 60_00)


# -- batch --------------------------------------------------------------------------------------

async def test_deferred_captures_are_listed_in_pages_and_settled_by_the_batch(mesh):
    cards = [await new_card(mesh, 100_00) for _ in range(5)]
    holds = [await authorize(mesh, number, 40_00) for number in cards]
    queued = []
    for hold in holds:
        reply = await call(mesh, "Capture", capture(hold.hold_id, 15_00, defer_to_batch=True))
        assert reply.settlement.state == pb.SETTLEMENT_STATE_QUEUED
        assert reply.open_hold.open == usd(25_00)  # the advanced hold, open while the capture waits
        queued.append(reply.settlement.settlement_id)
    assert [await at_ledger(mesh, n) for n in cards] == [(100_00, 40_00)] * 5

    seen, token = [], ""
    for _ in range(3):
        page = await call(mesh, "ListOpenSettlements", pb.ListOpenSettlementsRequest(page_size=2, page_token=token))
        seen += [s.settlement_id for s in page.settlements]
        assert all(s.state == pb.SETTLEMENT_STATE_QUEUED and s.amount == usd(15_00) for s in page.settlements)
        token = page.next_page_token
    assert token == "" and sorted(seen) == sorted(queued)

    batch = await call(mesh, "RunSettlementBatch", pb.RunSettlementBatchRequest(request_id=rid()))

    assert (batch.settled_count, batch.failed_count) == (5, 0)
    assert sorted(s.settlement_id for s in batch.results) == sorted(queued)
    assert all(s.state == pb.SETTLEMENT_STATE_SETTLED and s.transaction_id for s in batch.results)
    assert list((await call(mesh, "ListOpenSettlements", pb.ListOpenSettlementsRequest())).settlements) == []
    for number in cards:
        assert await at_ledger(mesh, number) == (85_00, 25_00)
        assert len(await ledger_entries(mesh, number, "capture")) == 1
    for hold in holds:
        original = await get_hold(mesh, hold.hold_id)
        assert (original.state, original.captured) == (hold_pb2.HOLD_STATE_CLOSED, usd(15_00))

    again = await call(mesh, "RunSettlementBatch", pb.RunSettlementBatchRequest(request_id=rid()))
    assert list(again.results) == []


async def test_batch_reports_each_item_outcome_and_respects_max_items(mesh):
    good = await new_card(mesh, 100_00)
    short = await new_card(mesh, 100_00)
    good_hold = await authorize(mesh, good, 30_00)
    short_hold = await authorize(mesh, short, 30_00, expires_in=duration_pb2.Duration(seconds=1))
    await call(mesh, "Capture", capture(good_hold.hold_id, 30_00, defer_to_batch=True, final_shipment=True))
    await call(mesh, "Capture", capture(short_hold.hold_id, 30_00, defer_to_batch=True, final_shipment=True))
    await asyncio.sleep(1.2)  # the second hold expires at the provider while its capture waits

    one = await call(mesh, "RunSettlementBatch", pb.RunSettlementBatchRequest(request_id=rid(), max_items=1))
    rest = await call(mesh, "RunSettlementBatch", pb.RunSettlementBatchRequest(request_id=rid()))

    assert len(one.results) == 1 and len(rest.results) == 1
    outcomes = {s.hold_id: (s.state, s.failure_reason) for s in [*one.results, *rest.results]}
    assert outcomes == {
        good_hold.hold_id: (pb.SETTLEMENT_STATE_SETTLED, ""),
        short_hold.hold_id: (pb.SETTLEMENT_STATE_FAILED, "HOLD_EXPIRED"),
    }
    assert one.settled_count + rest.settled_count == 1 and one.failed_count + rest.failed_count == 1
    assert await at_ledger(mesh, good) == (70_00, 0)
    assert await at_ledger(mesh, short) == (100_00, 0)


async def test_run_settlement_batch_validates_max_items(mesh):
    code, _, _ = await fails(mesh, "RunSettlementBatch", pb.RunSettlementBatchRequest(request_id=rid(), max_items=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _, _ = await fails(mesh, "ListOpenSettlements", pb.ListOpenSettlementsRequest(page_token="bogus"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_scheduler_run_is_measured_and_finished_items_are_purged_after_retention(mesh):
    number = await new_card(mesh, 100_00)
    hold = await authorize(mesh, number, 30_00)
    queued = await call(mesh, "Capture", capture(hold.hold_id, 30_00, defer_to_batch=True, final_shipment=True))
    runtime = settlement_runtime(mesh)

    await runtime.schedulers[0].run("batch")

    sample = runtime.registry.get_sample_value
    assert sample("giftcard_settlement_job_runs_total", {"job": "batch", "outcome": "ok"}) == 1
    assert sample("giftcard_settlement_items_total", {"queue": "captures", "outcome": "settled"}) == 1
    assert sample("giftcard_settlement_queue_depth", {"queue": "captures"}) == 0
    assert await at_ledger(mesh, number) == (70_00, 0)
    queue = jobs(mesh).logic.settlements
    settlement_id = queued.settlement.settlement_id
    assert (await queue.get("demo", settlement_id))["state"] == "settled"
    assert await queue.purge("demo", older_than_ms=60_000) == 0  # kept during the retention
    assert await queue.purge("demo", older_than_ms=-1_000) == 1
    assert await queue.get("demo", settlement_id) is None


# -- scheduled reversals ------------------------------------------------------------------------

async def test_cancel_after_partial_shipment_releases_exactly_the_remainder(mesh):
    number = await new_card(mesh, 100_00)
    original = await authorize(mesh, number, 60_00)
    shipped = await call(mesh, "Capture", capture(original.hold_id, 25_00))
    advanced = shipped.open_hold

    scheduled = await call(mesh, "ScheduleReversal", pb.ScheduleReversalRequest(
        request_id=rid(), hold_id=original.hold_id, reason="order cancelled"))
    assert scheduled.reversal.state == pb.REVERSAL_STATE_SCHEDULED
    assert not scheduled.reversal.HasField("amount")
    assert await at_ledger(mesh, number) == (75_00, 35_00)  # nothing moves before the job runs

    done = await run_job(mesh, "reversals")

    assert [(d["state"], d["released"]) for d in done] == [("done", 35_00)]
    assert await at_ledger(mesh, number) == (75_00, 0)
    assert [e["amount_minor"] for e in await ledger_entries(mesh, number, "capture")] == [-25_00]
    released = await get_hold(mesh, advanced.hold_id)
    assert (released.state, released.released, released.open) == (hold_pb2.HOLD_STATE_RELEASED, usd(35_00), usd(0))
    assert (await get_hold(mesh, original.hold_id)).state == hold_pb2.HOLD_STATE_CLOSED
    assert await run_job(mesh, "reversals") == []  # done once


async def test_partial_cancel_releases_the_amount_at_its_run_time(mesh):
    number = await new_card(mesh, 100_00)
    hold = await authorize(mesh, number, 60_00)
    later = timestamp_pb2.Timestamp()
    later.GetCurrentTime()
    later.seconds += 1

    scheduled = await call(mesh, "ScheduleReversal", pb.ScheduleReversalRequest(
        request_id=rid(), hold_id=hold.hold_id, amount=usd(12_34), run_time=later, reason="line 2 cancelled"))
    assert scheduled.reversal.amount == usd(12_34)
    assert await run_job(mesh, "reversals") == []  # not due yet
    await asyncio.sleep(1.1)
    done = await run_job(mesh, "reversals")

    assert [(d["state"], d["released"]) for d in done] == [("done", 12_34)]
    assert await at_ledger(mesh, number) == (100_00, 47_66)
    partly = await get_hold(mesh, hold.hold_id)
    assert (partly.state, partly.released, partly.open) == (hold_pb2.HOLD_STATE_OPEN, usd(12_34), usd(47_66))


async def test_the_scheduler_runs_reversals_on_its_own(redis_client, redis_url):
    for mode in MODES:
        mesh = await start_mesh(mode, redis_url, settlement={
            "tick_seconds": 0.05, "reversal_interval_seconds": 0.1, "job_api_keys": {"demo": DEMO_KEY}})
        try:
            number = await new_card(mesh, 100_00)
            hold = await authorize(mesh, number, 60_00)
            await call(mesh, "ScheduleReversal", pb.ScheduleReversalRequest(request_id=rid(), hold_id=hold.hold_id))
            for _ in range(100):
                if await at_ledger(mesh, number) == (100_00, 0):
                    break
                await asyncio.sleep(0.05)
            assert await at_ledger(mesh, number) == (100_00, 0), mode
            assert (await get_hold(mesh, hold.hold_id)).state == hold_pb2.HOLD_STATE_RELEASED
        finally:
            await mesh.close()


async def test_schedule_reversal_validates_its_input(mesh):
    number = await new_card(mesh, 100_00)
    hold = await authorize(mesh, number, 60_00)
    code, reason, _ = await fails(mesh, "ScheduleReversal", pb.ScheduleReversalRequest(request_id=rid(), hold_id="hld_nope"))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "HOLD_NOT_FOUND")
    code, _, _ = await fails(mesh, "ScheduleReversal", pb.ScheduleReversalRequest(
        request_id=rid(), hold_id=hold.hold_id, reason="x" * 300))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    far = timestamp_pb2.Timestamp(seconds=253402300799)  # 9999-12-31
    code, _, _ = await fails(mesh, "ScheduleReversal", pb.ScheduleReversalRequest(
        request_id=rid(), hold_id=hold.hold_id, run_time=far))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_reversal_for_more_than_is_open_fails_and_moves_nothing(mesh):
    number = await new_card(mesh, 100_00)
    hold = await authorize(mesh, number, 60_00)
    await call(mesh, "ScheduleReversal", pb.ScheduleReversalRequest(
        request_id=rid(), hold_id=hold.hold_id, amount=usd(60_01)))

    done = await run_job(mesh, "reversals")

    assert [(d["state"], d["failure_reason"]) for d in done] == [("failed", "AMOUNT_EXCEEDS_OPEN")]
    assert await at_ledger(mesh, number) == (100_00, 60_00)


# -- expiry -------------------------------------------------------------------------------------

async def test_hold_expiry_releases_at_the_provider_and_a_late_capture_is_refused(mesh):
    number = await new_card(mesh, 100_00)
    hold = await authorize(mesh, number, 60_00, expires_in=duration_pb2.Duration(seconds=1))
    shipped = await call(mesh, "Capture", capture(hold.hold_id, 10_00))
    advanced = shipped.open_hold
    await asyncio.sleep(1.2)

    expired = await run_job(mesh, "expiry")

    assert expired == 1  # the advanced hold; the original was closed by the transfer
    assert await at_ledger(mesh, number) == (90_00, 0)
    record = await get_hold(mesh, advanced.hold_id)
    assert (record.state, record.released, record.open) == (hold_pb2.HOLD_STATE_EXPIRED, usd(50_00), usd(0))
    code, reason, _ = await fails(mesh, "Capture", capture(advanced.hold_id, 10_00))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_EXPIRED")
    assert await at_ledger(mesh, number) == (90_00, 0)
    assert await run_job(mesh, "expiry") == 0  # swept once
