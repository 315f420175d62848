"""Mesh hold records: what the mesh knows of each authorization, next to the provider's own hold.

    mesh:hold:{hold:<merchant>:<hold_id>}   hash
        merchant, hold_id, order_id, card (sealed CardRef, the record key bound as context),
        masked, provider, provider_hold_id, hold_mode, currency, authorized, captured, released,
        reserved (amounts of operations begun but not yet confirmed by the provider), state
        (open | closed | released | expired), created_ms, expires_at_ms, parent_hold_id,
        client_transaction_id, reference_id, and one field `op:<reference>` per release/capture/
        transfer (JSON {kind, amount, state pending|done, moved}); set by settlement: transferred
        (the remainder moved to an advanced hold) and advanced_hold_id (that hold).
    mesh:holdexp:{holdexp:<merchant>:<bucket>}   zset  hold ids by expires_at_ms (expiry sweep)

Every change of an amount is one script on the one key (hold_begin / hold_commit / hold_abort):
an operation first reserves its amount (so captured + released + reserved <= authorized holds even
when releases and captures race), then the provider is called with the operation's reference, then
the reservation is committed or returned. A retried operation finds its entry and continues.
Expiry is read, and later written: a hold past `expires_at_ms` with something open is reported
EXPIRED and the open rest as released (the provider releases it at the same instant); settlement's
expiry sweep releases it at the provider and records it (hold_expire).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from common.errors import not_found, HOLD_NOT_FOUND
from common.sealing import Sealer
from giftcard.type.v1 import card_pb2
from services.shared.keys import INDEX_BUCKETS, bucket_of, bucket_tag, record_key
from services.shared.scripts import Scripts, decode_hash, text

OPEN, CLOSED, RELEASED, EXPIRED = "open", "closed", "released", "expired"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class HoldRecord:
    hold_id: str
    order_id: str
    masked_number: str
    provider: str
    provider_hold_id: str
    hold_mode: int
    currency: str
    authorized: int
    captured: int
    released: int
    reserved: int
    state: str  # stored state: open | closed | released
    created_ms: int
    expires_at_ms: int
    parent_hold_id: str
    client_transaction_id: str
    reference_id: str
    # Moved to the advanced hold `advanced_hold_id` after a partial shipment (settlement).
    transferred: int = 0
    advanced_hold_id: str = ""

    def expired(self, at_ms: int | None = None) -> bool:
        return self.state == OPEN and (now_ms() if at_ms is None else at_ms) >= self.expires_at_ms

    @property
    def open(self) -> int:
        return self.authorized - self.captured - self.released - self.reserved - self.transferred

    def view(self, at_ms: int | None = None) -> tuple[str, int, int]:
        """(state, released, open) as a caller should see them, expiry applied."""
        if self.expired(at_ms):
            return EXPIRED, self.released + self.open, 0
        return self.state, self.released, self.open


@dataclass(frozen=True)
class HoldOperation:
    kind: str
    amount: int
    state: str  # pending | done
    moved: int


class HoldStore:
    def __init__(self, redis: Redis, sealer: Sealer) -> None:
        self._redis = redis
        self._scripts = Scripts(redis)
        self._sealer = sealer

    @staticmethod
    def key(merchant: str, hold_id: str) -> str:
        return record_key("hold", merchant, hold_id)

    async def create(
        self, merchant: str, *, hold_id: str, order_id: str, card: card_pb2.CardRef, masked: str,
        provider: str, provider_hold_id: str, hold_mode: int, currency: str, authorized: int,
        expires_at_ms: int, client_transaction_id: str = "", reference_id: str = "",
        parent_hold_id: str = "",
    ) -> bool:
        """Write the approved hold; False when it was already written (a retry)."""
        created, _ = await self.create_record(
            merchant, hold_id=hold_id, order_id=order_id, card=card, masked=masked, provider=provider,
            provider_hold_id=provider_hold_id, hold_mode=hold_mode, currency=currency, authorized=authorized,
            expires_at_ms=expires_at_ms, client_transaction_id=client_transaction_id,
            reference_id=reference_id, parent_hold_id=parent_hold_id,
        )
        return created

    async def create_record(
        self, merchant: str, *, hold_id: str, order_id: str, card: card_pb2.CardRef, masked: str,
        provider: str, provider_hold_id: str, hold_mode: int, currency: str, authorized: int,
        expires_at_ms: int, client_transaction_id: str = "", reference_id: str = "",
        parent_hold_id: str = "",
    ) -> tuple[bool, HoldRecord]:
        """Write the approved hold and index its expiry, in one round trip; returns (created,
        the record as stored): a retry gets the record the first attempt wrote."""
        key = self.key(merchant, hold_id)
        created_ms = now_ms()
        fields = {
            "merchant": merchant, "hold_id": hold_id, "order_id": order_id,
            "card": self._sealer.seal(card.SerializeToString(), key.encode()),
            "masked": masked, "provider": provider, "provider_hold_id": provider_hold_id,
            "hold_mode": hold_mode, "currency": currency, "authorized": authorized, "captured": 0,
            "released": 0, "reserved": 0, "state": OPEN, "created_ms": created_ms,
            "expires_at_ms": expires_at_ms, "parent_hold_id": parent_hold_id,
            "client_transaction_id": client_transaction_id, "reference_id": reference_id,
        }
        args: list = []
        for name, value in fields.items():
            args += [name, value]
        # The expiry index entry goes ahead of the record in the same round trip (its own hash
        # tag, so not inside the script); an error in either raises. A crash between them, in
        # either order (a Cluster sends each node's share apart), leaves at worst an index entry
        # the sweep drops, or a record whose creating operation is not finished (Authorize's
        # intent still pending, settlement's transfer not committed): its retry sends both
        # again, or the resolver reverses the hold and closes the record.
        index = self.expiry_index(merchant, bucket_of(hold_id))
        reply = await self._scripts.after(
            self._redis, [("ZADD", index, expires_at_ms, hold_id)], "hold_create", [key], args,
        )
        if isinstance(reply, list):  # already written by an earlier attempt: the stored record
            return False, _record(decode_hash(dict(zip(reply[::2], reply[1::2]))))
        return True, HoldRecord(
            hold_id=hold_id, order_id=order_id, masked_number=masked, provider=provider,
            provider_hold_id=provider_hold_id, hold_mode=int(hold_mode), currency=currency,
            authorized=int(authorized), captured=0, released=0, reserved=0, state=OPEN,
            created_ms=created_ms, expires_at_ms=int(expires_at_ms), parent_hold_id=parent_hold_id,
            client_transaction_id=client_transaction_id, reference_id=reference_id,
        )

    @staticmethod
    def expiry_index(merchant: str, bucket: int) -> str:
        return f"mesh:holdexp:{bucket_tag('holdexp', merchant, bucket)}"

    async def expiring(self, merchant: str, before_ms: int, limit: int) -> list[str]:
        """Ids of holds of `merchant` whose expiry is before `before_ms` (still indexed)."""
        found: list[str] = []
        for bucket in range(INDEX_BUCKETS):
            index = self.expiry_index(merchant, bucket)
            found += [text(m) for m in await self._redis.zrangebyscore(index, "-inf", before_ms, start=0, num=limit)]
        return found[:limit] if len(found) > limit else found

    async def unindex(self, merchant: str, hold_id: str) -> None:
        await self._redis.zrem(self.expiry_index(merchant, bucket_of(hold_id)), hold_id)

    async def expire(self, merchant: str, hold_id: str, released: int) -> tuple[str, int, int]:
        """Record that the provider released `released` of an expired hold: (state, released
        now, still open); see hold_expire.lua."""
        reply = await self._scripts("hold_expire", [self.key(merchant, hold_id)], [now_ms(), released])
        return text(reply[0]), int(reply[1]), int(reply[2])

    async def link_advanced(self, merchant: str, hold_id: str, advanced_hold_id: str) -> None:
        """Point a hold at the advanced hold that continues it (a link, no amount changes)."""
        await self._redis.hset(self.key(merchant, hold_id), "advanced_hold_id", advanced_hold_id)

    async def get(self, merchant: str, hold_id: str) -> HoldRecord:
        """The hold of this merchant; NOT_FOUND for an unknown id or another merchant's."""
        raw = decode_hash(await self._redis.hgetall(self.key(merchant, hold_id)))
        if not raw:
            raise not_found("hold", HOLD_NOT_FOUND)
        return _record(raw)

    async def card(self, merchant: str, hold_id: str) -> card_pb2.CardRef:
        """The card the hold was placed on, unsealed for the next provider call (never logged)."""
        key = self.key(merchant, hold_id)
        sealed = await self._redis.hget(key, "card")
        if sealed is None:
            raise not_found("hold", HOLD_NOT_FOUND)
        return card_pb2.CardRef.FromString(self._sealer.unseal(sealed, key.encode()))

    async def begin(
        self, merchant: str, hold_id: str, reference: str, kind: str, amount: int | None
    ) -> HoldOperation:
        """Reserve `amount` (None: everything open) for operation `reference` (HOLD_NOT_OPEN,
        HOLD_EXPIRED, AMOUNT_EXCEEDS_OPEN); a retry gets the operation as first begun."""
        reply = await self._scripts(
            "hold_begin", [self.key(merchant, hold_id)],
            [reference, kind, "" if amount is None else amount, now_ms()],
        )
        return _operation(reply)

    async def commit(self, merchant: str, hold_id: str, reference: str, moved: int) -> HoldOperation:
        reply = await self._scripts("hold_commit", [self.key(merchant, hold_id)], [reference, moved, now_ms()])
        return _operation(reply)

    async def abort(self, merchant: str, hold_id: str, reference: str) -> bool:
        return bool(await self._scripts("hold_abort", [self.key(merchant, hold_id)], [reference]))


def _record(raw: dict[str, bytes]) -> HoldRecord:
    s = {k: text(v) for k, v in raw.items() if k != "card"}
    return HoldRecord(
        hold_id=s["hold_id"], order_id=s["order_id"], masked_number=s["masked"],
        provider=s["provider"], provider_hold_id=s["provider_hold_id"],
        hold_mode=int(s["hold_mode"]), currency=s["currency"], authorized=int(s["authorized"]),
        captured=int(s["captured"]), released=int(s["released"]), reserved=int(s["reserved"]),
        state=s["state"], created_ms=int(s["created_ms"]), expires_at_ms=int(s["expires_at_ms"]),
        parent_hold_id=s["parent_hold_id"], client_transaction_id=s["client_transaction_id"],
        reference_id=s["reference_id"], transferred=int(s.get("transferred") or 0),
        advanced_hold_id=s.get("advanced_hold_id", ""),
    )


def _operation(reply) -> HoldOperation:
    data = json.loads(text(reply))
    return HoldOperation(kind=data["kind"], amount=int(data["amount"]), state=data["state"],
                         moved=int(data.get("moved", 0)))
