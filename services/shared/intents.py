"""Write-ahead intents: every provider call that may move money is written down first, so an
outcome that was never recorded (a crash, a timeout) can be found and resolved afterwards.

    mesh:intent:{intent:<merchant>:<bucket>}:<reference_id>   hash
        reference_id, operation, card (sealed, the intent key bound), params (JSON), owner_kind,
        owner_id, state, created_ms, state_ms
    mesh:intents:{intent:<merchant>:<bucket>}                 zset  pending intents by created_ms

States: pending -> done | failed (the caller recorded the outcome) | resolving -> reversed | done
(the resolver took it). The reference_id is the one sent to the provider, so the resolver acts on
exactly that operation: `Reverse(original_reference_id=...)` undoes it if it was applied, and if it
never arrived leaves a tombstone so it can never apply later (DESIGN.md section 5).

`resolve_pending(older_than)` is what settlement's scheduler runs: operations that take money
(redeem, hold) are reversed; operations that give money back (release, reversal) are confirmed by
running them again under the same reference (providers replay them). Owners (the authorization
logic) register a callback per operation to bring their own records in line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from common.errors import MeshError
from common.sealing import Sealer
from giftcard.type.v1 import card_pb2
from services.shared.holds import now_ms
from services.shared.keys import INDEX_BUCKETS, bucket_of, bucket_tag
from services.shared.scripts import Scripts, decode_hash, text

log = logging.getLogger("giftcard.intents")

PENDING, RESOLVING, DONE, FAILED, REVERSED = "pending", "resolving", "done", "failed", "reversed"
FINAL = (DONE, FAILED, REVERSED)
# Operations that take money from the card: an unknown outcome is undone.
TAKES_MONEY = ("redeem", "hold")


@dataclass(frozen=True)
class Intent:
    merchant: str
    reference_id: str
    operation: str
    state: str
    params: dict[str, Any]
    owner_kind: str
    owner_id: str
    created_ms: int


class IntentLog:
    def __init__(self, redis: Redis, sealer: Sealer) -> None:
        self._redis = redis
        self._scripts = Scripts(redis)
        self._sealer = sealer

    @staticmethod
    def keys(merchant: str, reference_id: str) -> list[str]:
        tag = bucket_tag("intent", merchant, bucket_of(reference_id))
        return [f"mesh:intent:{tag}:{reference_id}", f"mesh:intents:{tag}"]

    async def begin(
        self, merchant: str, reference_id: str, operation: str, card: card_pb2.CardRef, *,
        params: dict[str, Any] | None = None, owner_kind: str = "", owner_id: str = "",
    ) -> str:
        """Write the intent (once); returns its state, `pending` when new or still open."""
        state, _ = await self.open(merchant, reference_id, operation, card, params=params,
                                   owner_kind=owner_kind, owner_id=owner_id)
        return state

    async def open(
        self, merchant: str, reference_id: str, operation: str, card: card_pb2.CardRef, *,
        params: dict[str, Any] | None = None, owner_kind: str = "", owner_id: str = "",
    ) -> tuple[str, dict[str, Any]]:
        """`begin`, also returning the params as first written (a retry gets the first attempt's),
        in the same round trip."""
        keys = self.keys(merchant, reference_id)
        sealed = self._sealer.seal(card.SerializeToString(), keys[0].encode())
        fields = ["reference_id", reference_id, "operation", operation, "card", sealed,
                  "params", json.dumps(params or {}, sort_keys=True), "owner_kind", owner_kind,
                  "owner_id", owner_id, "merchant", merchant]
        reply = await self._scripts("intent_begin", keys, [now_ms(), *fields])
        return text(reply[0]), json.loads(text(reply[1]))

    async def finish(
        self, merchant: str, reference_id: str, new_state: str, expected: tuple[str, ...] = (PENDING,),
        *, claim_before_ms: int | None = None,
    ) -> tuple[bool, str]:
        """Compare-and-set the state; (True, new) or (False, current)."""
        reply = await self._scripts(
            "intent_finish", self.keys(merchant, reference_id),
            [",".join(expected), new_state, now_ms(), "1" if claim_before_ms is not None else "0",
             claim_before_ms or 0],
        )
        return text(reply[0]) == "OK", text(reply[1])

    async def get(self, merchant: str, reference_id: str) -> Intent | None:
        raw = decode_hash(await self._redis.hgetall(self.keys(merchant, reference_id)[0]))
        if not raw:
            return None
        s = {k: text(v) for k, v in raw.items() if k != "card"}
        return Intent(merchant, s["reference_id"], s["operation"], s["state"], json.loads(s["params"]),
                      s.get("owner_kind", ""), s.get("owner_id", ""), int(s["created_ms"]))

    async def card(self, merchant: str, reference_id: str) -> card_pb2.CardRef:
        key = self.keys(merchant, reference_id)[0]
        return card_pb2.CardRef.FromString(self._sealer.unseal(await self._redis.hget(key, "card"), key.encode()))

    async def stale(self, merchant: str, older_than_ms: int) -> list[str]:
        """Reference ids of intents of `merchant` still not final and created before the cutoff."""
        cutoff = now_ms() - older_than_ms
        found: list[str] = []
        for bucket in range(INDEX_BUCKETS):
            index = f"mesh:intents:{bucket_tag('intent', merchant, bucket)}"
            for key in await self._redis.zrangebyscore(index, "-inf", cutoff):
                found.append(text(key).rsplit(":", 1)[1])
        return found


# (intent, card) -> None: bring the owner's records in line after the resolver acted.
OnResolved = Callable[[Intent, card_pb2.CardRef], Awaitable[None]]


async def resolve_pending(
    log_: IntentLog, merchant: str, older_than_seconds: float, *,
    reverse: Callable[[Intent, card_pb2.CardRef], Awaitable[None]],
    confirm: dict[str, OnResolved],
) -> dict[str, int]:
    """Resolve every intent of `merchant` left pending for longer than `older_than_seconds`.

    Each is claimed first (pending -> resolving; a claim older than the cutoff is taken over), so
    a request still running or a second resolver never acts on the same intent at once. Operations
    in TAKES_MONEY go to `reverse` (then state reversed); others to `confirm[operation]` (then
    done). A failure leaves the intent resolving, and it is retried after the cutoff.
    """
    cutoff_ms = int(older_than_seconds * 1000)
    counts = {"reversed": 0, "confirmed": 0, "failed": 0}
    for reference_id in await log_.stale(merchant, cutoff_ms):
        claimed, _ = await log_.finish(
            merchant, reference_id, RESOLVING, (PENDING, RESOLVING), claim_before_ms=now_ms() - cutoff_ms,
        )
        if not claimed:
            continue
        intent = await log_.get(merchant, reference_id)
        if intent is None:
            continue
        card = await log_.card(merchant, reference_id)
        try:
            if intent.operation in TAKES_MONEY:
                await reverse(intent, card)
                await log_.finish(merchant, reference_id, REVERSED, (RESOLVING,))
                counts["reversed"] += 1
            else:
                handler = confirm.get(intent.operation)
                if handler is not None:
                    await handler(intent, card)
                await log_.finish(merchant, reference_id, DONE, (RESOLVING,))
                counts["confirmed"] += 1
        except MeshError as error:
            counts["failed"] += 1
            log.warning("intent not resolved; will retry", extra={
                "operation": intent.operation, "reason": error.reason})
    return counts
