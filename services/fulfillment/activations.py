"""Activation records: the state of one order line's activation in Redis, moved only by the Lua
scripts next to this module, and the order event stream written when a line completes.

Keys (every key of a merchant's activations shares the hash tag ``{m:<merchant>}``, so completing a
line and publishing its event is one script on one Redis Cluster slot):

    activation:{m:<merchant>}:<order_id>/<line_id>   hash   the record (fields below)
    events:{m:<merchant>}:orders                     stream order events (services/fulfillment/README.md)
    activations:{m:<merchant>}:unfinished            zset   e-gift lines left ALLOCATED or ACTIVATED
                                                            (member: record key, score: update_ms)

The unfinished index shares the merchant's tag rather than a bucket tag of its own (as the intent
index does): it is written by the same scripts that move a record, and every record of a merchant
already lives under ``{m:<merchant>}`` (the order stream forces that), so a separate tag would
make those scripts cross-slot on Redis Cluster. It holds record keys (order and line ids), never
card data.

The merchant is percent-encoded as in common/idempotency.py; ids cannot contain ``/``, so
(order "a/b", line "c") cannot exist and every (order, line) pair has its own key.

Record fields: activation_id, attempt, fp (keyed HMAC of the request, never card data), state,
kind, order_id, line_id, amount_minor, currency, masked, provider, transaction_id,
failure_reason, promo_code, create_ms, update_ms, resumed ("1": completed by the resolver, the
sealed credentials wait for the client's retry), and while an e-gift is in flight ``sealed``: its credentials
encrypted with the mesh's Sealer (bound to the record key), dropped when the line completes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from common.redis_scripts import ScriptSet, hash_tag

PENDING, ALLOCATED, ACTIVATED, COMPLETED, FAILED = "PENDING", "ALLOCATED", "ACTIVATED", "COMPLETED", "FAILED"
LIVE_STATES = (PENDING, ALLOCATED, ACTIVATED)

DEFAULT_RECORD_TTL_SECONDS = 400 * 24 * 3600  # an order's lifetime incl. returns, with room to spare
DEFAULT_STREAM_MAXLEN = 100_000


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class ActivationRecord:
    key: str
    fields: dict[str, bytes]

    @classmethod
    def from_flat(cls, key: str, flat: list) -> "ActivationRecord":
        return cls(key, {_text(flat[i]): bytes(flat[i + 1]) if isinstance(flat[i + 1], bytes)
                         else str(flat[i + 1]).encode() for i in range(0, len(flat), 2)})

    def get(self, name: str, default: str = "") -> str:
        value = self.fields.get(name)
        return default if value is None else value.decode()

    @property
    def state(self) -> str:
        return self.get("state")

    @property
    def attempt(self) -> str:
        return self.get("attempt")

    @property
    def activation_id(self) -> str:
        return self.get("activation_id")

    @property
    def sealed(self) -> bytes | None:
        return self.fields.get("sealed")

    def reference(self, step: str) -> str:
        """The gateway reference_id of one step of this attempt: a retry of the step reuses it, so
        the provider replays instead of acting twice."""
        return f"{self.activation_id}.{self.attempt}.{step}"


class ActivationStore:
    def __init__(
        self, redis, *, record_ttl_seconds: int = DEFAULT_RECORD_TTL_SECONDS,
        stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
    ) -> None:
        self._redis = redis
        self._scripts = ScriptSet(redis, Path(__file__).parent)
        self._ttl_ms = record_ttl_seconds * 1000
        self._maxlen = stream_maxlen

    @staticmethod
    def record_key(merchant: str, order_id: str, line_id: str) -> str:
        return f"activation:{hash_tag('m', quote(merchant, safe=''))}:{order_id}/{line_id}"

    @staticmethod
    def stream_key(merchant: str) -> str:
        return f"events:{hash_tag('m', quote(merchant, safe=''))}:orders"

    @staticmethod
    def index_key(merchant: str) -> str:
        return f"activations:{hash_tag('m', quote(merchant, safe=''))}:unfinished"

    @staticmethod
    def _index_of(record_key: str) -> str:
        # activation:{m:<merchant>}:... -> activations:{m:<merchant>}:unfinished (the tag holds no
        # braces: the merchant is percent-encoded)
        return f"activations:{record_key[record_key.index('{'):record_key.index('}') + 1]}:unfinished"

    async def begin(
        self, merchant: str, order_id: str, line_id: str, *, fingerprint: str, activation_id: str,
        kind: str, amount_minor: int, currency: str,
    ) -> tuple[str, ActivationRecord]:
        key = self.record_key(merchant, order_id, line_id)
        status, flat = await self._scripts["activation_begin"](
            keys=[key],
            args=[fingerprint, activation_id, _now_ms(), kind, order_id, line_id, amount_minor,
                  currency, self._ttl_ms],
        )
        return _text(status), ActivationRecord.from_flat(key, flat)

    async def transition(
        self, record: ActivationRecord, allowed: tuple[str, ...], to_state: str, **fields: str | bytes
    ) -> tuple[bool, ActivationRecord]:
        """(moved, fresh record). Not moved: someone else moved it first; continue from fresh."""
        args: list = [record.attempt, ",".join(allowed), to_state, _now_ms()]
        for name, value in fields.items():
            args += [name, value]
        status, flat = await self._scripts["activation_transition"](
            keys=[record.key, self._index_of(record.key)], args=args)
        return _text(status) == "OK", ActivationRecord.from_flat(record.key, flat)

    async def complete(
        self, record: ActivationRecord, merchant: str, transaction_id: str, *, keep_sealed: bool = False
    ) -> tuple[bool, ActivationRecord]:
        status, flat, _ = await self._scripts["activation_complete"](
            keys=[record.key, self.stream_key(merchant), self.index_key(merchant)],
            args=[record.attempt, _now_ms(), self._maxlen, transaction_id, "1" if keep_sealed else "0"],
        )
        return _text(status) == "OK", ActivationRecord.from_flat(record.key, flat)

    async def get(self, merchant: str, order_id: str, line_id: str) -> ActivationRecord | None:
        key = self.record_key(merchant, order_id, line_id)
        flat = await self._redis.hgetall(key)
        if not flat:
            return None
        return ActivationRecord(key, {_text(k): bytes(v) for k, v in flat.items()})

    async def unfinished(self, merchant: str, older_than_ms: int, limit: int = 500) -> list[str]:
        """Record keys of e-gift lines left ALLOCATED or ACTIVATED and not moved for older_than_ms."""
        keys = await self._redis.zrangebyscore(
            self.index_key(merchant), "-inf", _now_ms() - older_than_ms, start=0, num=limit)
        return [_text(key) for key in keys]

    async def get_key(self, key: str) -> ActivationRecord | None:
        flat = await self._redis.hgetall(key)
        if not flat:
            return None
        return ActivationRecord(key, {_text(k): bytes(v) for k, v in flat.items()})

    async def forget(self, merchant: str, key: str) -> None:
        """Drop an index entry whose record expired (400 days: nothing left to resume)."""
        await self._redis.zrem(self.index_key(merchant), key)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
