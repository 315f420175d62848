"""Composition of RefundService from the mesh runtime's shared parts."""

from __future__ import annotations

from services.refund.logic import RefundLogic
from services.refund.refunds import RefundLedger
from services.refund.refunds import SETTLEMENT_QUEUE_KIND
from services.refund.servicer import RefundServicer
from services.shared.work_queue import WorkQueue
from services.shared.holds import HoldStore
from services.shared.sent import SentMarks
from services.shared.transactions import TransactionStore


def build_refund(runtime) -> RefundServicer:
    logic = RefundLogic(
        runtime.client("gateway"), TransactionStore(runtime.redis, runtime.sealer), RefundLedger(runtime.redis),
        HoldStore(runtime.redis, runtime.sealer), WorkQueue(runtime.redis, SETTLEMENT_QUEUE_KIND),
        SentMarks(runtime.redis),
    )
    return RefundServicer(logic, runtime.idempotency, runtime.sealer, runtime.settings.merchants)
