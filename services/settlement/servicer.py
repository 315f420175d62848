"""SettlementService over gRPC: validation and proto <-> SettlementLogic.

Mutating RPCs run through IdempotencyStore.run keyed by the authenticated merchant; every RPC sees
only the caller's own settlements, holds and reversals (keys carry the merchant).
"""

from __future__ import annotations

import base64

from google.protobuf import timestamp_pb2

from common.config import Settings
from common.context import current_call
from common.errors import invalid_argument
from common.idempotency import IdempotencyStore
from common.validation import money_from_proto, optional_money, require_id, timestamp_ms
from giftcard.settlement.v1 import settlement_pb2 as pb
from giftcard.settlement.v1 import settlement_pb2_grpc
from services.authorization.logic import money_pb
from services.authorization.servicer import hold_pb
from services.settlement import logic as states
from services.settlement.logic import SettlementLogic
from services.shared.holds import now_ms

SERVICE = pb.DESCRIPTOR.services_by_name["SettlementService"].full_name
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_BATCH_ITEMS = 10_000
MAX_REASON_LENGTH = 256
MAX_SCHEDULE_AHEAD_MS = 400 * 24 * 3600 * 1000

_SETTLEMENT_STATE = {
    states.QUEUED: pb.SETTLEMENT_STATE_QUEUED,
    states.SUBMITTED: pb.SETTLEMENT_STATE_SUBMITTED,
    states.SETTLED: pb.SETTLEMENT_STATE_SETTLED,
    states.FAILED: pb.SETTLEMENT_STATE_FAILED,
}
_REVERSAL_STATE = {
    states.SCHEDULED: pb.REVERSAL_STATE_SCHEDULED,
    states.DONE: pb.REVERSAL_STATE_DONE,
    states.FAILED: pb.REVERSAL_STATE_FAILED,
}


def _stamp(epoch_ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(int(epoch_ms))
    return stamp


def settlement_pb(item: dict) -> pb.Settlement:
    return pb.Settlement(
        settlement_id=item["id"], hold_id=item["hold_id"], shipment_id=item["shipment_id"],
        invoice_id=item["invoice_id"], amount=money_pb(item["amount"], item["currency"]),
        state=_SETTLEMENT_STATE[item["state"]], transaction_id=item.get("transaction_id", ""),
        failure_reason=item.get("failure_reason", "") if item["state"] == states.FAILED else "",
        create_time=_stamp(item["create_ms"]), update_time=_stamp(item["update_ms"]),
    )


def reversal_pb(item: dict) -> pb.ScheduledReversal:
    message = pb.ScheduledReversal(
        reversal_id=item["id"], hold_id=item["hold_id"], run_time=_stamp(item["run_ms"]),
        state=_REVERSAL_STATE[item["state"]], reason=item["reason"],
    )
    if item["amount"] is not None:
        message.amount.CopyFrom(money_pb(item["amount"], item["currency"]))
    return message


class SettlementServicer(settlement_pb2_grpc.SettlementServiceServicer):
    def __init__(self, logic: SettlementLogic, idempotency: IdempotencyStore, settings: Settings) -> None:
        self.logic = logic
        self._idempotency = idempotency
        self._settings = settings

    async def _run(self, rpc: str, request, handler, response_type):
        merchant = current_call().merchant_id
        return await self._idempotency.run(
            merchant, f"{SERVICE}/{rpc}", request.request_id, request, handler, response_type
        )

    async def Capture(self, request: pb.CaptureRequest, context=None) -> pb.CaptureResponse:
        merchant = current_call().merchant_id
        hold_id = require_id(request.hold_id, "hold_id")
        shipment_id = require_id(request.shipment_id, "shipment_id", required=False)
        invoice_id = require_id(request.invoice_id, "invoice_id", required=False)
        amount = money_from_proto(request.amount if request.HasField("amount") else None, "amount",
                                  allowed_currencies=self._settings.merchants[merchant].currencies)

        async def handle() -> pb.CaptureResponse:
            done = await self.logic.capture(
                merchant, request.request_id, hold_id=hold_id, amount=amount, shipment_id=shipment_id,
                invoice_id=invoice_id, final_shipment=request.final_shipment, defer=request.defer_to_batch,
            )
            response = pb.CaptureResponse(settlement=settlement_pb(done.settlement))
            if done.open_hold is not None:
                response.open_hold.CopyFrom(hold_pb(done.open_hold))
            return response

        return await self._run("Capture", request, handle, pb.CaptureResponse)

    async def ListOpenSettlements(self, request: pb.ListOpenSettlementsRequest, context=None):
        merchant = current_call().merchant_id
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise invalid_argument("page_size", f"page_size must be from 0 to {MAX_PAGE_SIZE}")
        offset = _offset(request.page_token)
        items, following = await self.logic.settlements.open_items(
            merchant, offset, request.page_size or DEFAULT_PAGE_SIZE)
        return pb.ListOpenSettlementsResponse(
            settlements=[settlement_pb(item) for item in items],
            next_page_token=_token(following) if following is not None else "",
        )

    async def RunSettlementBatch(self, request: pb.RunSettlementBatchRequest, context=None):
        merchant = current_call().merchant_id
        if not 0 <= request.max_items <= MAX_BATCH_ITEMS:
            raise invalid_argument("max_items", f"max_items must be from 0 to {MAX_BATCH_ITEMS}")
        max_items = request.max_items or self._settings.settlement.batch_size

        async def handle() -> pb.RunSettlementBatchResponse:
            results = await self.logic.run_batch(merchant, max_items)
            return pb.RunSettlementBatchResponse(
                results=[settlement_pb(item) for item in results],
                settled_count=sum(1 for item in results if item["state"] == states.SETTLED),
                failed_count=sum(1 for item in results if item["state"] == states.FAILED),
            )

        return await self._run("RunSettlementBatch", request, handle, pb.RunSettlementBatchResponse)

    async def ScheduleReversal(self, request: pb.ScheduleReversalRequest, context=None):
        merchant = current_call().merchant_id
        hold_id = require_id(request.hold_id, "hold_id")
        amount = optional_money(request, "amount", "amount",
                                allowed_currencies=self._settings.merchants[merchant].currencies)
        if len(request.reason) > MAX_REASON_LENGTH or not request.reason.isprintable():
            raise invalid_argument("reason", f"reason must be printable and at most {MAX_REASON_LENGTH} characters")
        run_ms = now_ms()
        if request.HasField("run_time"):
            run_ms = timestamp_ms(request.run_time, "run_time")
            if not 0 <= run_ms <= now_ms() + MAX_SCHEDULE_AHEAD_MS:
                raise invalid_argument("run_time", "run_time must be after 1970 and at most 400 days ahead")

        async def handle() -> pb.ScheduleReversalResponse:
            item = await self.logic.schedule_reversal(
                merchant, request.request_id, hold_id=hold_id, amount=amount, run_ms=run_ms, reason=request.reason,
            )
            return pb.ScheduleReversalResponse(reversal=reversal_pb(item))

        return await self._run("ScheduleReversal", request, handle, pb.ScheduleReversalResponse)


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def _offset(token: str) -> int:
    if not token:
        return 0
    kind, offset = "", -1
    try:
        kind, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        offset = int(value)
    except ValueError:  # bad base64, bad UTF-8, not a number
        pass
    if kind != "o" or offset < 0:
        raise invalid_argument("page_token", "page_token is not one this service returned")
    return offset
