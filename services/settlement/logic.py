"""Captures per shipment against holds, advanced holds, batch settlement and scheduled reversals.

A capture is one settlement item in a work queue (services/shared/work_queue.py), whether it is sent
at once or left for the batch: the item is written first (the write-ahead record of the capture),
then the hold is reserved through the shared hold record (hold_begin, so captures and releases can
never together exceed what was authorized), then the provider is called with the item's
deterministic reference_id, then the hold is committed and the item finished with its lease's
fencing token. Whoever holds the item's lease does these steps; every step is idempotent, so a
worker that dies anywhere leaves an item that falls due again and is finished by the next one, and
the provider, deduplicating by reference_id, applies the capture once.

After a capture that does not complete the order, the rest of the hold becomes an *advanced hold*:
a new mesh hold for the remainder, linked to the original (parent_hold_id; the original points to
it with advanced_hold_id and is closed). Both name the same provider hold, which keeps the
remainder reserved, so later shipments capture against the advanced hold (Clutch). At the final
shipment the remainder is released at the provider instead. Reversals scheduled after a cancel
follow the chain to the hold that is open now.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from common.context import current_call
from common.errors import (
    AMOUNT_EXCEEDS_OPEN,
    CURRENCY_MISMATCH,
    HOLD_EXPIRED,
    HOLD_NOT_FOUND,
    HOLD_NOT_OPEN,
    MeshError,
    invalid_argument,
)
from common.money import Money
from giftcard.gateway.v1 import gateway_pb2
from services.authorization.logic import AuthorizationLogic, is_final, money_pb
from services.shared import holds as hold_states
from services.shared.holds import HoldRecord, HoldStore, now_ms
from services.shared.keys import INDEX_BUCKETS, IdDeriver
from services.shared.scripts import error_from_reply
from services.shared.work_queue import Claimed, WorkQueue

log = logging.getLogger("giftcard.settlement")

QUEUED, SUBMITTED, SETTLED, FAILED = "queued", "submitted", "settled", "failed"
SCHEDULED, DONE = "scheduled", "done"
# The hold refused the operation for good: the item fails with this reason.
_HOLD_REFUSALS = (HOLD_EXPIRED, HOLD_NOT_OPEN, AMOUNT_EXCEEDS_OPEN, HOLD_NOT_FOUND)
# A chain of advanced holds longer than this is a bug, not an order.
_MAX_CHAIN = 1000
# A batch stops claiming items when less than this (at most a quarter of a lease) is left of its
# deadline.
_CLAIM_MARGIN_SECONDS = 2.0


@dataclass(frozen=True)
class CaptureResult:
    settlement: dict
    open_hold: HoldRecord | None


@dataclass
class Limits:
    lease_ms: int
    concurrency: int
    retry_ms: int


class SettlementLogic:
    def __init__(
        self, gateway, holds: HoldStore, authorization: AuthorizationLogic, settlements: WorkQueue,
        reversals: WorkQueue, ids: IdDeriver, limits: Limits, worker_id: str, metrics=None,
    ) -> None:
        self._gateway = gateway
        self.holds = holds
        self._authorization = authorization
        self.settlements = settlements
        self.reversals = reversals
        self.ids = ids
        self.limits = limits
        self.worker_id = worker_id
        self._metrics = metrics

    # -- Capture --------------------------------------------------------------------------------

    async def capture(
        self, merchant: str, request_id: str, *, hold_id: str, amount: Money, shipment_id: str,
        invoice_id: str, final_shipment: bool, defer: bool,
    ) -> CaptureResult:
        settlement_id = self.ids.derive("stl", merchant, "Capture", request_id)
        hold = await self.holds.get(merchant, hold_id)
        if amount.currency != hold.currency:
            raise invalid_argument("amount.currency_code", f"the hold is in {hold.currency}", CURRENCY_MISMATCH)
        if hold.order_id:  # before the item exists: refund by order finds every capture
            await self._authorization.transactions.orders.add(merchant, hold.order_id, settlement_id)
        now = now_ms()
        item = {
            "id": settlement_id, "hold_id": hold_id, "shipment_id": shipment_id, "invoice_id": invoice_id,
            "amount": amount.amount_minor, "currency": amount.currency, "final_shipment": final_shipment,
            "state": SUBMITTED, "reference_id": self.ids.derive("ref", merchant, "Capture", request_id),
            "transaction_id": "", "failure_reason": "", "captured": 0, "create_ms": now, "update_ms": now,
        }
        new, stored = await self.settlements.put(
            merchant, settlement_id, item, due_ms=now, owner=self.worker_id, lease_ms=self.limits.lease_ms,
        )
        claim = Claimed(settlement_id, 1, stored) if new else await self.settlements.claim_one(
            merchant, settlement_id, self.worker_id, self.limits.lease_ms)
        if claim is None:  # a retry while a worker holds it: report where it stands
            return CaptureResult(stored, await self._open_hold(merchant, stored))
        if claim.item["state"] in (SETTLED, FAILED):
            return await self._answer(merchant, claim.item)
        reserved = await self._reserve(merchant, claim)
        if reserved is None:
            return await self._answer(merchant, await self.settlements.get(merchant, settlement_id))
        if defer:
            _, queued = await self.settlements.finish(
                merchant, claim, {"state": QUEUED, "update_ms": now_ms()}, final=False, due_ms=now_ms())
            return CaptureResult(queued, await self._open_hold(merchant, queued))
        done = await self._send(merchant, claim)
        return await self._answer(merchant, done)

    async def _answer(self, merchant: str, item: dict) -> CaptureResult:
        if item["state"] == FAILED:
            raise _failure(item["failure_reason"])
        return CaptureResult(item, await self._open_hold(merchant, item))

    async def _reserve(self, merchant: str, claim: Claimed) -> bool | None:
        """Reserve the capture on the hold and continue the hold (advanced hold / final release).
        None when the hold refused: the item is then finished as failed."""
        item = claim.item
        try:
            await self.holds.begin(merchant, item["hold_id"], item["reference_id"], "capture", item["amount"])
        except MeshError as error:
            if error.reason not in _HOLD_REFUSALS:
                raise
            await self._finish(merchant, claim, FAILED, failure_reason=error.reason)
            return None
        await self._continue_hold(merchant, item)
        return True

    async def _continue_hold(self, merchant: str, item: dict) -> None:
        """What stays open after this shipment: released (final shipment) or moved to an
        advanced hold. Idempotent: every reference is derived from the settlement."""
        hold_id = item["hold_id"]
        if item["final_shipment"]:
            try:
                await self._authorization.release(merchant, hold_id, None, self.ids.derive("fin", merchant, item["id"]))
            except MeshError as error:
                if error.reason not in (HOLD_NOT_OPEN, HOLD_EXPIRED):
                    raise
            return
        transfer = self.ids.derive("xfr", merchant, item["id"])
        try:
            op = await self.holds.begin(merchant, hold_id, transfer, "transfer", None)
        except MeshError as error:
            if error.reason in (HOLD_NOT_OPEN, HOLD_EXPIRED):
                return  # nothing left open: no advanced hold
            raise
        hold = await self.holds.get(merchant, hold_id)
        advanced_id = self.advanced_hold_id(merchant, item["id"])
        await self.holds.create(
            merchant, hold_id=advanced_id, order_id=hold.order_id, card=await self.holds.card(merchant, hold_id),
            masked=hold.masked_number, provider=hold.provider, provider_hold_id=hold.provider_hold_id,
            hold_mode=hold.hold_mode, currency=hold.currency, authorized=op.amount,
            expires_at_ms=hold.expires_at_ms, parent_hold_id=hold_id, reference_id=hold.reference_id,
        )
        await self.holds.link_advanced(merchant, hold_id, advanced_id)
        await self.holds.commit(merchant, hold_id, transfer, op.amount)

    def advanced_hold_id(self, merchant: str, settlement_id: str) -> str:
        return self.ids.derive("hld", merchant, "Advance", settlement_id)

    async def _send(self, merchant: str, claim: Claimed) -> dict:
        """The provider call and its outcome, for a claimed item whose hold is reserved."""
        item = claim.item
        hold = await self.holds.get(merchant, item["hold_id"])
        op_amount = item["amount"]
        try:
            reply = await self._gateway.CaptureHold(gateway_pb2.CaptureHoldRequest(
                reference_id=item["reference_id"], card=await self.holds.card(merchant, item["hold_id"]),
                provider_hold_id=hold.provider_hold_id, amount=money_pb(op_amount, item["currency"]),
                release_remainder=False,
            ))
        except MeshError as error:
            if is_final(error):
                await self.holds.abort(merchant, item["hold_id"], item["reference_id"])
                return await self._finish(merchant, claim, FAILED, failure_reason=error.reason)
            # Unknown outcome: the item falls due again and is re-sent under the same reference.
            _, back = await self.settlements.finish(
                merchant, claim, {"state": QUEUED, "failure_reason": error.reason, "update_ms": now_ms()},
                final=False, due_ms=now_ms() + self.limits.retry_ms,
            )
            self._count("captures", "retried")
            return back
        committed = await self.holds.commit(merchant, item["hold_id"], item["reference_id"], reply.result.amount.amount_minor)
        return await self._finish(
            merchant, claim, SETTLED, transaction_id=reply.result.provider_transaction_id,
            captured=committed.moved, failure_reason="",
        )

    async def _finish(self, merchant: str, claim: Claimed, state: str, **fields) -> dict:
        recorded, item = await self.settlements.finish(
            merchant, claim, {"state": state, "update_ms": now_ms(), **fields}, final=True)
        if recorded:
            self._count("captures", state)
        return item

    async def settle(self, merchant: str, claim: Claimed) -> dict:
        """Process one claimed item of the batch (also one a dead worker left half done)."""
        if claim.item["state"] in (SETTLED, FAILED):  # finished by its holder; just leave the queue
            return (await self.settlements.finish(merchant, claim, {}, final=True))[1]
        if await self._reserve(merchant, claim) is None:
            return await self.settlements.get(merchant, claim.item_id)
        return await self._send(merchant, claim)

    async def _open_hold(self, merchant: str, item: dict) -> HoldRecord | None:
        """The hold now open for the order (an advanced hold, or the original), if any."""
        try:
            hold = await self.open_descendant(merchant, item["hold_id"])
        except MeshError:
            return None
        state, _, open_minor = hold.view()
        return hold if state == hold_states.OPEN and open_minor > 0 else None

    async def open_descendant(self, merchant: str, hold_id: str) -> HoldRecord:
        """Follow advanced holds from `hold_id` while the current one has nothing open."""
        chain = await self.chain(merchant, hold_id)
        for hold in chain:
            if hold.state == hold_states.OPEN and hold.open > 0:
                return hold
        return chain[-1]

    async def chain(self, merchant: str, hold_id: str) -> list[HoldRecord]:
        """The hold and the advanced holds that continue it, oldest first."""
        chain = [await self.holds.get(merchant, hold_id)]
        while chain[-1].advanced_hold_id and len(chain) < _MAX_CHAIN:
            chain.append(await self.holds.get(merchant, chain[-1].advanced_hold_id))
        return chain

    # -- batch ----------------------------------------------------------------------------------

    async def run_batch(self, merchant: str, max_items: int) -> list[dict]:
        """Claim and settle up to `max_items` due items of `merchant`, `concurrency` at a time,
        one provider call each. Returns the items in the order they were finished."""
        results: list[dict] = []
        budget = [max_items]
        margin = min(_CLAIM_MARGIN_SECONDS, self.limits.lease_ms / 4000)
        next_bucket = [0]

        async def claim_next() -> Claimed | None:
            for _ in range(INDEX_BUCKETS):
                # Nothing new once the run's deadline is near: what is claimed gets finished.
                if budget[0] <= 0 or current_call().remaining() < margin:
                    return None
                bucket = next_bucket[0]
                next_bucket[0] = (bucket + 1) % INDEX_BUCKETS
                budget[0] -= 1
                claimed = await self.settlements.claim(merchant, bucket, self.worker_id, self.limits.lease_ms, 1)
                if claimed:
                    return claimed[0]
                budget[0] += 1
            return None

        async def worker() -> None:
            while True:
                claim = await claim_next()
                if claim is None:
                    return
                try:
                    results.append(await self.settle(merchant, claim))
                except Exception as error:  # noqa: BLE001 - one item must not stop the batch
                    # A transient failure (Redis, a release at the provider): the item's lease
                    # runs out and it is taken again, every step a replay.
                    log.warning("settlement item not finished; will retry", extra={
                        "reason": getattr(error, "reason", type(error).__name__)})
                    self._count("captures", "retried")

        await asyncio.gather(*(worker() for _ in range(max(1, min(self.limits.concurrency, max_items)))))
        return results

    # -- reversals ------------------------------------------------------------------------------

    async def schedule_reversal(
        self, merchant: str, request_id: str, *, hold_id: str, amount: Money | None, run_ms: int, reason: str,
    ) -> dict:
        hold = await self.holds.get(merchant, hold_id)
        if amount is not None and amount.currency != hold.currency:
            raise invalid_argument("amount.currency_code", f"the hold is in {hold.currency}", CURRENCY_MISMATCH)
        reversal_id = self.ids.derive("rvs", merchant, "ScheduleReversal", request_id)
        item = {
            "id": reversal_id, "hold_id": hold_id, "currency": hold.currency,
            "amount": None if amount is None else amount.amount_minor, "run_ms": run_ms, "state": SCHEDULED,
            "reason": reason, "released": 0, "failure_reason": "", "create_ms": now_ms(),
        }
        _, stored = await self.reversals.put(merchant, reversal_id, item, due_ms=run_ms)
        return stored

    async def run_reversals(self, merchant: str, max_items: int) -> list[dict]:
        done: list[dict] = []
        for bucket in range(INDEX_BUCKETS):
            for claim in await self.reversals.claim(merchant, bucket, self.worker_id, self.limits.lease_ms, max_items):
                done.append(await self.reverse(merchant, claim))
        return done

    async def reverse(self, merchant: str, claim: Claimed) -> dict:
        """Release the reversal's amount (or all that is open) of the hold now open for the order,
        under a reference derived from the reversal, so a repeat releases nothing more."""
        item = claim.item
        if item["state"] != SCHEDULED:
            return (await self.reversals.finish(merchant, claim, {}, final=True))[1]
        amount = None if item["amount"] is None else Money(item["amount"], item["currency"])
        try:
            if amount is None:  # full cancel: everything open along the chain of advanced holds
                released = 0
                for hold in await self.chain(merchant, item["hold_id"]):
                    released += await self._release_all(merchant, hold.hold_id, item["id"])
                return await self._finish_reversal(merchant, claim, DONE, released=released)
            target = await self.open_descendant(merchant, item["hold_id"])
            operation = self.ids.derive("rel", merchant, item["id"], target.hold_id)
            _, moved = await self._authorization.release(merchant, target.hold_id, amount, operation)
        except MeshError as error:
            if is_final(error):
                return await self._finish_reversal(merchant, claim, FAILED, failure_reason=error.reason)
            _, back = await self.reversals.finish(merchant, claim, {"failure_reason": error.reason}, final=False,
                                                  due_ms=now_ms() + self.limits.retry_ms)
            self._count("reversals", "retried")
            return back
        return await self._finish_reversal(merchant, claim, DONE, released=moved.amount_minor)

    async def _release_all(self, merchant: str, hold_id: str, reversal_id: str) -> int:
        try:
            _, moved = await self._authorization.release(
                merchant, hold_id, None, self.ids.derive("rel", merchant, reversal_id, hold_id))
        except MeshError as error:
            if error.reason in (HOLD_NOT_OPEN, HOLD_EXPIRED):
                return 0
            raise
        return moved.amount_minor

    async def _finish_reversal(self, merchant: str, claim: Claimed, state: str, **fields) -> dict:
        recorded, item = await self.reversals.finish(merchant, claim, {"state": state, **fields}, final=True)
        if recorded:
            self._count("reversals", state)
        return item

    # -- expiry ---------------------------------------------------------------------------------

    async def expire_holds(self, merchant: str, limit: int) -> int:
        """Release at the provider what is still open on holds past their expiry and record it;
        returns how many holds were closed as expired."""
        expired = 0
        for hold_id in await self.holds.expiring(merchant, now_ms(), limit):
            try:
                hold = await self.holds.get(merchant, hold_id)
            except MeshError:
                await self.holds.unindex(merchant, hold_id)
                continue
            if hold.state != hold_states.OPEN:
                await self.holds.unindex(merchant, hold_id)
                continue
            released = 0
            if hold.open > 0:
                try:
                    released = await self._release_expired(merchant, hold)
                except MeshError as error:
                    log.warning("expired hold not released; will retry", extra={"reason": error.reason})
                    continue
            state, _, _ = await self.holds.expire(merchant, hold_id, released)
            if state != hold_states.OPEN:
                await self.holds.unindex(merchant, hold_id)
                expired += 1
        return expired

    async def _release_expired(self, merchant: str, hold: HoldRecord) -> int:
        # One reference per amount already released, so a later round (after an aborted capture
        # gave some back) is a new release, and a repeat of this round a replay.
        reference = self.ids.derive("exp", merchant, hold.hold_id, hold.released)
        try:
            reply = await self._gateway.ReleaseHold(gateway_pb2.ReleaseHoldRequest(
                reference_id=reference, card=await self.holds.card(merchant, hold.hold_id),
                provider_hold_id=hold.provider_hold_id, amount=money_pb(hold.open, hold.currency),
            ))
        except MeshError as error:
            if error.reason in (HOLD_EXPIRED, HOLD_NOT_OPEN, HOLD_NOT_FOUND):
                return hold.open  # the provider let it go at the expiry itself
            raise
        return reply.result.amount.amount_minor

    def _count(self, queue: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.item(queue, outcome)


def _failure(reason: str) -> MeshError:
    """The error a failed capture answers with (HOLD_EXPIRED, HOLD_NOT_OPEN, a provider's reason)."""
    return error_from_reply(reason)
