"""What has been refunded of each original payment, kept next to its record in Redis.

A payment is a redemption (`txn_...`, the authorization service's transaction record) or a settled
capture (`stl_...`, the settlement service's work item). Its refunds live under the same hash tag
as its record, so one script reads the record and reserves against it atomically
(refund_reserve.lua), on one Cluster slot:

    refund:{txn:<merchant>:<transaction_id>}            redemption   hash  total (reserved + done),
    refund:{stl:<merchant>:<bucket>}:<settlement_id>    capture            refunded (done),
                                                                           r:<refund_id> JSON entry
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
from redis.exceptions import ResponseError

from common.errors import MeshError
from common.redis_scripts import ScriptSet
from services.shared.work_queue import WorkQueue
from services.shared.keys import bucket_of, bucket_tag, redemption_refunds_key
from services.shared.transactions import TransactionStore

CAPTURE_PREFIX = "stl_"
SETTLEMENT_QUEUE_KIND = "stl"  # services/settlement/server.py

PENDING, DONE, ABORTED = "pending", "done", "aborted"
_CODES = {
    "TRANSACTION_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "REFUND_NOT_FOUND": grpc.StatusCode.INTERNAL,
}
_MESSAGES = {
    "TRANSACTION_NOT_FOUND": "transaction not found",
    "TRANSACTION_NOT_REFUNDABLE": "only an approved (not voided) redemption or a settled capture can be refunded",
    "CURRENCY_MISMATCH": "the refund's currency differs from the transaction's",
    "IDEMPOTENCY_KEY_REUSED": "request_id was already used for a refund of another amount",
    "AMOUNT_EXCEEDS_REFUNDABLE": "the refund exceeds what is left to refund of this transaction",
}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _error(reply: str) -> MeshError:
    reason, _, rest = reply.partition(" ")
    try:
        body, _ = json.JSONDecoder().raw_decode(rest) if rest.strip() else ({}, 0)
    except ValueError:
        body = {}
    return MeshError(
        _CODES.get(reason, grpc.StatusCode.FAILED_PRECONDITION), reason,
        _MESSAGES.get(reason, reason.lower().replace("_", " ")),
        metadata={k: str(v) for k, v in (body if isinstance(body, dict) else {}).items()},
    )


class RefundLedger:
    def __init__(self, redis) -> None:
        self._scripts = ScriptSet(redis, Path(__file__).parent)
        self._redis = redis
        self._captures = WorkQueue(redis, SETTLEMENT_QUEUE_KIND)

    @staticmethod
    def is_capture(transaction_id: str) -> bool:
        return transaction_id.startswith(CAPTURE_PREFIX)

    @staticmethod
    def key(merchant: str, transaction_id: str) -> str:
        if RefundLedger.is_capture(transaction_id):
            tag = bucket_tag(SETTLEMENT_QUEUE_KIND, merchant, bucket_of(transaction_id))
            return f"refund:{tag}:{transaction_id}"
        return redemption_refunds_key(merchant, transaction_id)

    def _source(self, merchant: str, transaction_id: str) -> tuple[str, str]:
        if self.is_capture(transaction_id):
            return self._captures.keys(merchant, bucket_of(transaction_id))[0], "stl"
        return TransactionStore.key(merchant, transaction_id), "txn"

    async def reserve(
        self, merchant: str, transaction_id: str, refund_id: str, amount_minor: int, currency: str
    ) -> tuple[bool, str]:
        """(new, entry state). Raises the refusals listed in refund_reserve.lua."""
        source_key, kind = self._source(merchant, transaction_id)
        try:
            status, state = await self._scripts["refund_reserve"](
                keys=[source_key, self.key(merchant, transaction_id)],
                args=[refund_id, amount_minor, currency, _now_ms(), kind, transaction_id],
            )
        except ResponseError as exc:
            raise _error(str(exc)) from None
        return _text(status) == "NEW", _text(state)

    async def settle(
        self, merchant: str, transaction_id: str, refund_id: str, state: str, provider_transaction_id: str = ""
    ) -> str:
        try:
            reply = await self._scripts["refund_settle"](
                keys=[self.key(merchant, transaction_id)],
                args=[refund_id, state, _now_ms(), provider_transaction_id],
            )
        except ResponseError as exc:
            raise _error(str(exc)) from None
        return _text(reply)

    async def totals(self, merchant: str, transaction_id: str) -> tuple[int, int]:
        """(reserved + done, done) in minor units."""
        total, refunded = await self._redis.hmget(self.key(merchant, transaction_id), "total", "refunded")
        return int(total or 0), int(refunded or 0)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
