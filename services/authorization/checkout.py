"""Multi-tender checkout: every gift card tender succeeds, or every one that succeeded is voided.

The checkout is written down before the first tender is sent (a write-ahead record with each
tender's sealed card and its deterministic provider reference), and every tender's progress is
recorded around its provider call:

    mesh:checkout:{checkout:<merchant>:<bucket>}:<checkout_id>   hash
        checkout_id, order_id, action (redeem | authorize), state, created_ms, state_ms, count,
        externals (JSON), response (final, serialized CheckoutResponse),
        t:<i>    JSON {state: new | attempting | approved | declined | unknown | voided | not_applied,
                       reason, moved, provider, provider_transaction_id, provider_hold_id, hold_mode}
        card:<i> sealed CardRef (the record key and index bound as context)
    mesh:checkouts:{checkout:<merchant>:<bucket>}                zset  unfinished checkouts

States: in_progress -> approved, or in_progress -> compensating -> declined. Compensation reverses
every tender that may have reached the provider by its reference (Reverse(original_reference_id)):
an applied one is undone, one that never arrived is tombstoned so it cannot apply later. It is the
same routine whether a tender failed, an external tender was declined, a retry took over from a
dead worker, or `resume` (the recovery sweep) found the checkout unfinished after a crash, so a
crash at any point ends with no debit left behind.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import grpc

from common.context import current_call
from common.errors import MeshError
from common.money import Money
from common.sealing import Sealer
from giftcard.authorization.v1 import authorization_pb2 as pb
from giftcard.gateway.v1 import gateway_pb2
from giftcard.type.v1 import card_pb2
from services.authorization.logic import COMPENSATION_SECONDS, AuthorizationLogic, is_final, money_pb, reversed_amount, timestamp_of
from services.shared import transactions as txn_states
from services.shared.background import fresh_budget
from services.shared.holds import now_ms
from services.shared.keys import INDEX_BUCKETS, bucket_of, bucket_tag
from services.shared.scripts import Scripts, decode_hash, text

log = logging.getLogger("giftcard.checkout")

MAX_TENDERS = 10
IN_PROGRESS, COMPENSATING, APPROVED, DECLINED = "in_progress", "compensating", "approved", "declined"
# Tender states that may have moved money at the provider: compensation reverses them.
MAY_HAVE_MOVED = ("attempting", "approved", "unknown")

_TENDER_STATE = {
    "approved": pb.TENDER_STATE_APPROVED,
    "declined": pb.TENDER_STATE_DECLINED,
    "voided": pb.TENDER_STATE_VOIDED,
    "not_applied": pb.TENDER_STATE_DECLINED,
    "new": pb.TENDER_STATE_NOT_ATTEMPTED,
}


class CheckoutStore:
    def __init__(self, redis, sealer: Sealer) -> None:
        self._redis = redis
        self._scripts = Scripts(redis, Path(__file__).parent)
        self._sealer = sealer

    @staticmethod
    def keys(merchant: str, checkout_id: str) -> list[str]:
        tag = bucket_tag("checkout", merchant, bucket_of(checkout_id))
        return [f"mesh:checkout:{tag}:{checkout_id}", f"mesh:checkouts:{tag}"]

    async def create(self, merchant: str, checkout_id: str, fields: dict, cards: list[card_pb2.CardRef],
                     tenders: list[dict]) -> str:
        keys = self.keys(merchant, checkout_id)
        args: list = []
        for name, value in fields.items():
            args += [name, value]
        for index, (card, tender) in enumerate(zip(cards, tenders)):
            args += [f"card:{index}", self._sealer.seal(card.SerializeToString(), f"{keys[0]}#{index}".encode())]
            args += [f"t:{index}", json.dumps(tender)]
        return text(await self._scripts("checkout_create", keys, [now_ms(), "state", IN_PROGRESS, *args]))

    async def tender(self, merchant: str, checkout_id: str, index: int, tender: dict, required: str) -> bool:
        reply = await self._scripts("checkout_tender", self.keys(merchant, checkout_id)[:1],
                                    [index, json.dumps(tender), required])
        return text(reply[0]) == "OK"

    async def set_state(self, merchant: str, checkout_id: str, expected: tuple[str, ...], new_state: str, *,
                        claim_before_ms: int | None = None, response: bytes = b"") -> tuple[bool, str]:
        reply = await self._scripts(
            "checkout_state", self.keys(merchant, checkout_id),
            [",".join(expected), new_state, now_ms(), "" if claim_before_ms is None else claim_before_ms, response],
        )
        return text(reply[0]) == "OK", text(reply[1])

    async def load(self, merchant: str, checkout_id: str) -> dict:
        return decode_hash(await self._redis.hgetall(self.keys(merchant, checkout_id)[0]))

    def card(self, merchant: str, checkout_id: str, raw: dict, index: int) -> card_pb2.CardRef:
        key = self.keys(merchant, checkout_id)[0]
        return card_pb2.CardRef.FromString(self._sealer.unseal(raw[f"card:{index}"], f"{key}#{index}".encode()))

    async def unfinished(self, merchant: str, older_than_ms: int) -> list[str]:
        cutoff = now_ms() - older_than_ms
        found = []
        for bucket in range(INDEX_BUCKETS):
            index = f"mesh:checkouts:{bucket_tag('checkout', merchant, bucket)}"
            for key in await self._redis.zrangebyscore(index, "-inf", cutoff):
                found.append(text(key).rsplit(":", 1)[1])
        return found


class CheckoutFlow:
    def __init__(self, gateway, store: CheckoutStore, logic: AuthorizationLogic) -> None:
        self._gateway = gateway
        self._store = store
        self._logic = logic

    async def run(
        self, merchant: str, request_id: str, *, order_id: str,
        tenders: list[tuple[card_pb2.CardRef, str, Money]], externals: list[tuple[str, bool]],
        authorize: bool, ttl_ms: int,
    ) -> pb.CheckoutResponse:
        ids = self._logic.ids
        checkout_id = ids.derive("chk", merchant, "Checkout", request_id)
        plan = []
        for index, (_, masked, amount) in enumerate(tenders):
            plan.append({
                "state": "new", "reason": "", "moved": 0, "masked": masked,
                "amount": amount.amount_minor, "currency": amount.currency,
                "reference_id": ids.derive("ref", merchant, "Checkout", request_id, index),
                "record_id": ids.derive("hld" if authorize else "txn", merchant, "Checkout", request_id, index),
            })
        state = await self._store.create(
            merchant, checkout_id,
            {"checkout_id": checkout_id, "order_id": order_id, "action": "authorize" if authorize else "redeem",
             "count": len(tenders), "externals": json.dumps(externals), "expires_at_ms": now_ms() + ttl_ms},
            [card for card, _, _ in tenders], plan,
        )
        if state in (APPROVED, DECLINED):
            return await self._stored_response(merchant, checkout_id)
        if state != "new":
            # An earlier attempt of this request died mid-way (the idempotency lease ran out):
            # nobody knows how far it got, so finish the way that is always safe.
            return await self.compensate(merchant, checkout_id)
        if not all(approved for _, approved in externals):
            return await self.compensate(merchant, checkout_id)

        expires_at_ms = now_ms() + ttl_ms
        for index, (card, _, amount) in enumerate(tenders):
            tender = plan[index]
            if current_call().remaining() <= 0:
                # The caller stopped waiting: debiting further cards helps nobody; undo the rest.
                tender["reason"] = "DEADLINE_EXCEEDED"
                await self._store.tender(merchant, checkout_id, index, tender, IN_PROGRESS)
                return await self.compensate(merchant, checkout_id)
            tender["state"] = "attempting"
            if not await self._store.tender(merchant, checkout_id, index, tender, IN_PROGRESS):
                raise _taken_over()
            try:
                tender.update(await self._send(tender, card, amount, authorize, expires_at_ms))
                tender["state"] = "approved"
            except MeshError as error:
                tender["state"] = "declined" if is_final(error) else "unknown"
                tender["reason"] = error.reason
            if not await self._store.tender(merchant, checkout_id, index, tender, IN_PROGRESS):
                raise _taken_over()
            if tender["state"] != "approved":
                return await self.compensate(merchant, checkout_id)

        for index, (card, masked, amount) in enumerate(tenders):
            await self._write_record(
                merchant, order_id, checkout_id, plan[index], card, amount, authorize, expires_at_ms
            )
        response = self._response(checkout_id, APPROVED, plan)
        done, current = await self._store.set_state(
            merchant, checkout_id, (IN_PROGRESS,), APPROVED, response=response.SerializeToString()
        )
        if not done:
            raise _taken_over()
        return response

    async def _send(self, tender: dict, card, amount: Money, authorize: bool, expires_at_ms: int) -> dict:
        reference = tender["reference_id"]
        if authorize:
            reply = await self._gateway.PlaceHold(gateway_pb2.PlaceHoldRequest(
                reference_id=reference, card=card, amount=money_pb(amount.amount_minor, amount.currency),
                allow_partial=False, expire_time=timestamp_of(expires_at_ms),
            ))
            return {"moved": reply.result.amount.amount_minor, "provider": reply.result.provider,
                    "provider_transaction_id": reply.result.provider_transaction_id,
                    "provider_hold_id": reply.provider_hold_id, "hold_mode": reply.hold_mode}
        reply = await self._gateway.Redeem(gateway_pb2.RedeemRequest(
            reference_id=reference, card=card, amount=money_pb(amount.amount_minor, amount.currency),
            allow_partial=False,
        ))
        return {"moved": reply.result.amount.amount_minor, "provider": reply.result.provider,
                "provider_transaction_id": reply.result.provider_transaction_id,
                "balance_after": reply.result.balance.amount_minor}

    async def _write_record(self, merchant, order_id, checkout_id, tender, card, amount, authorize, expires_at_ms):
        """Approved tenders become ordinary holds / redemptions, so settlement, void and refund
        work on them like on any other."""
        if authorize:
            await self._logic.holds.create(
                merchant, hold_id=tender["record_id"], order_id=order_id, card=card, masked=tender["masked"],
                provider=tender["provider"], provider_hold_id=tender["provider_hold_id"],
                hold_mode=tender["hold_mode"], currency=amount.currency, authorized=tender["moved"],
                expires_at_ms=expires_at_ms, reference_id=tender["reference_id"],
            )
            return
        transactions = self._logic.transactions
        await transactions.create_pending(
            merchant, transaction_id=tender["record_id"], card=card, masked=tender["masked"],
            currency=amount.currency, amount=amount.amount_minor, tip=0, order_id=order_id,
            client_transaction_id="", reference_id=tender["reference_id"], checkout_id=checkout_id,
        )
        await transactions.transition(
            merchant, tender["record_id"], (txn_states.PENDING,), txn_states.APPROVED,
            redeemed=tender["moved"], redeemed_tip=0, balance_after=tender.get("balance_after", 0),
            provider=tender["provider"], provider_transaction_id=tender["provider_transaction_id"],
        )

    async def compensate(
        self, merchant: str, checkout_id: str, *, claim_before_ms: int | None = None
    ) -> pb.CheckoutResponse:
        """Reverse every tender that may have reached the provider, then close as DECLINED.
        Safe to run again at any point: reversals are idempotent by the tender's reference."""
        taken, state = await self._store.set_state(
            merchant, checkout_id, (IN_PROGRESS, COMPENSATING), COMPENSATING, claim_before_ms=claim_before_ms,
        )
        if not taken:
            if state in (APPROVED, DECLINED):
                return await self._stored_response(merchant, checkout_id)
            raise _taken_over()
        raw = await self._store.load(merchant, checkout_id)
        count = int(text(raw["count"]))
        authorize = text(raw["action"]) == "authorize"
        plan = [json.loads(text(raw[f"t:{index}"])) for index in range(count)]
        with fresh_budget(COMPENSATION_SECONDS):
            for index, tender in enumerate(plan):
                if tender["state"] not in MAY_HAVE_MOVED:
                    continue
                card = self._store.card(merchant, checkout_id, raw, index)
                reply = await self._gateway.Reverse(gateway_pb2.ReverseRequest(
                    reference_id=self._logic.ids.derive("cmp", merchant, tender["reference_id"]), card=card,
                    original_reference_id=tender["reference_id"],
                ))
                applied = reply.reversed
                if not tender.get("reason"):
                    tender["reason"] = "CHECKOUT_DECLINED" if tender["state"] == "approved" else "INTERRUPTED"
                tender["state"] = "voided" if applied else "not_applied"
                await self._store.tender(merchant, checkout_id, index, tender, COMPENSATING)
                moved = reversed_amount(reply, tender.get("moved", 0))
                await self._mirror_reversal(merchant, tender, authorize, moved)
        response = self._response(checkout_id, DECLINED, plan)
        done, current = await self._store.set_state(
            merchant, checkout_id, (COMPENSATING,), DECLINED, response=response.SerializeToString()
        )
        if not done and current in (APPROVED, DECLINED):
            return await self._stored_response(merchant, checkout_id)
        return response

    async def _mirror_reversal(self, merchant: str, tender: dict, authorize: bool, amount: int) -> None:
        """A record written for the tender (a crash after it) must show the reversal too."""
        if authorize:
            try:
                await self._logic.holds.get(merchant, tender["record_id"])
            except MeshError:
                return
            operation = self._logic.ids.derive("cmp", merchant, tender["record_id"])
            try:
                op = await self._logic.holds.begin(merchant, tender["record_id"], operation, "release", None)
            except MeshError:
                return
            await self._logic.holds.commit(merchant, tender["record_id"], operation, op.amount)
            return
        try:
            await self._logic.transactions.transition(
                merchant, tender["record_id"], (txn_states.PENDING, txn_states.APPROVED), txn_states.REVERSED,
                reversed_amount=amount, reversed_ms=now_ms(), reversal_found=int(amount > 0),
            )
        except MeshError:
            return

    async def resume(self, merchant: str, older_than_seconds: float) -> int:
        """Finish (by compensation) checkouts of `merchant` left unfinished for longer than
        `older_than_seconds`, e.g. by a crash. Call inside a call context for the merchant."""
        cutoff_ms = int(older_than_seconds * 1000)
        finished = 0
        for checkout_id in await self._store.unfinished(merchant, cutoff_ms):
            try:
                await self.compensate(merchant, checkout_id, claim_before_ms=now_ms() - cutoff_ms)
                finished += 1
            except MeshError as error:
                log.warning("checkout not resumed; will retry", extra={"reason": error.reason})
        return finished

    async def _stored_response(self, merchant: str, checkout_id: str) -> pb.CheckoutResponse:
        raw = await self._store.load(merchant, checkout_id)
        return pb.CheckoutResponse.FromString(raw["response"])

    @staticmethod
    def _response(checkout_id: str, outcome: str, plan: list[dict]) -> pb.CheckoutResponse:
        approved = outcome == APPROVED
        total = sum(t["moved"] for t in plan) if approved else 0
        currency = plan[0]["currency"] if plan else ""
        return pb.CheckoutResponse(
            checkout_id=checkout_id,
            outcome=pb.CHECKOUT_OUTCOME_APPROVED if approved else pb.CHECKOUT_OUTCOME_DECLINED,
            tenders=[
                pb.TenderResult(
                    index=index, masked_number=t["masked"],
                    state=_TENDER_STATE.get(t["state"], pb.TENDER_STATE_DECLINED),
                    amount=money_pb(t["moved"] if t["state"] in ("approved", "voided") else t["amount"], t["currency"]),
                    reference_id=t["record_id"] if t["state"] in ("approved", "voided") else "",
                    reason=t.get("reason", "") if t["state"] != "approved" else "",
                )
                for index, t in enumerate(plan)
            ],
            total_approved=money_pb(total, currency),
        )


def _taken_over() -> MeshError:
    # Recovery (or a retry) took this checkout over; its outcome is the one stored.
    return MeshError(grpc.StatusCode.ABORTED, "REQUEST_IN_PROGRESS",
                     "this checkout is being finished by another worker; retry to receive its outcome",
                     retryable=True)
