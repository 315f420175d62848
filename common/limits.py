"""Abuse limits: per-merchant call rate, per-card velocity, and unknown-card lookups per merchant.

One mechanism for all three: a token bucket in Redis taken by one Lua script (`limits_take.lua`,
one key per bucket, so it runs unchanged on Redis Cluster), shared by every process of the mesh.
One EVALSHA per check, and none at all for a limit that is off (the default).

    limit:{m:<merchant>}:rpc:<service>   calls of one merchant to one service API (interceptor;
                                          not the provider gateway, see INTERNAL_SERVICE_PREFIX)
    limit:{c:<card hmac>}                 customer operations on one card of one merchant (gateway)
    limit:{m:<merchant>}:unknown_cards    lookups of that merchant that found no card (gateway)

A card is keyed by HMAC(card_hash_key, merchant, identifier), never by its number.

The unknown-card budget is reserved before a lookup (one token) and given back when the lookup
found the card; once it is spent, every card lookup of the merchant (known cards too) answers
RESOURCE_EXHAUSTED until it refills, so an attacker learns nothing from which numbers are refused
and can test only `unknown_card_lookups_per_minute` numbers a minute, however many calls run at
once (a check-then-spend would let every concurrent call through on the same last token). The cost:
lookups in flight hold a token each, so the budget must exceed a merchant's peak concurrent lookups.

Redis errors do not turn a limit into an outage: a check that cannot reach Redis lets the call
through (logged) and the call itself then meets the same Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import grpc
from redis.exceptions import RedisError

from common.cards import CardId
from common.config import LimitsSettings
from common.errors import MeshError
from common.redis_scripts import ScriptSet

log = logging.getLogger("giftcard.limits")

RATE_LIMITED = "RATE_LIMITED"
CARD_VELOCITY_EXCEEDED = "CARD_VELOCITY_EXCEEDED"
UNKNOWN_CARD_LOOKUPS_EXCEEDED = "UNKNOWN_CARD_LOOKUPS_EXCEEDED"


# The provider gateway is called by the other services with the caller's forwarded key (in
# microservices mode): a merchant limit there would count one call twice and could refuse a
# compensation (release, reverse) in the middle of a flow. Its card operations are still limited.
INTERNAL_SERVICE_PREFIX = "giftcard.gateway."


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_ms: int
    remaining: int


class TokenBuckets:
    """Token buckets in Redis: `take` is one script call, atomic across processes."""

    def __init__(self, redis) -> None:
        self._scripts = ScriptSet(redis, Path(__file__).parent)

    async def take(self, key: str, *, capacity: float, per_second: float, cost: int = 1) -> Decision:
        allowed, retry_ms, remaining = await self._scripts["limits_take"](
            keys=[key], args=[capacity, per_second, cost]
        )
        return Decision(bool(int(allowed)), int(retry_ms), int(remaining))


def _exhausted(reason: str, message: str, decision: Decision) -> MeshError:
    return MeshError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, reason, message,
        metadata={"retry_after_ms": str(decision.retry_after_ms)}, retryable=True,
    )


class MeshLimits:
    """The limits of `LimitsSettings`, each off when its setting is 0."""

    def __init__(self, redis, settings: LimitsSettings, card_hash_key: bytes) -> None:
        self._buckets = TokenBuckets(redis)
        self._settings = settings
        self._key = card_hash_key

    @property
    def limits_merchant_calls(self) -> bool:
        return self._settings.merchant_rps > 0

    @property
    def limits_cards(self) -> bool:
        return self._settings.card_ops_per_minute > 0 or self._settings.unknown_card_lookups_per_minute > 0

    async def admit_merchant_call(self, merchant: str, service: str) -> None:
        """RESOURCE_EXHAUSTED RATE_LIMITED when the merchant is over `merchant_rps` on `service`."""
        rps = self._settings.merchant_rps
        if rps <= 0 or service.startswith(INTERNAL_SERVICE_PREFIX):
            return
        capacity = self._settings.merchant_burst or max(rps, 1.0)
        key = f"limit:{{m:{_tag(merchant)}}}:rpc:{service}"
        decision = await self._take(key, capacity, rps, 1)
        if decision is not None and not decision.allowed:
            raise _exhausted(RATE_LIMITED, "too many requests for this merchant; retry later", decision)

    async def admit_card_operation(self, merchant: str, card: CardId) -> bool:
        """Before a customer operation on `card`: reserve one of the merchant's unknown-card tokens
        and take one of the card's `card_ops_per_minute`. Returns whether a reservation is held:
        the caller must `card_found` unless the operation answered CARD_NOT_FOUND."""
        reserved = False
        lookups = self._settings.unknown_card_lookups_per_minute
        if lookups > 0:
            decision = await self._take(self._unknown_key(merchant), lookups, lookups / 60.0, 1)
            if decision is not None and not decision.allowed:
                raise _exhausted(
                    UNKNOWN_CARD_LOOKUPS_EXCEEDED, "too many lookups of unknown cards; retry later", decision
                )
            reserved = decision is not None
        per_minute = self._settings.card_ops_per_minute
        if per_minute > 0:
            decision = await self._take(self._card_key(merchant, card), per_minute, per_minute / 60.0, 1)
            if decision is not None and not decision.allowed:
                if reserved:
                    await self.card_found(merchant)
                raise _exhausted(CARD_VELOCITY_EXCEEDED, "too many operations on this card; retry later", decision)
        return reserved

    async def card_found(self, merchant: str) -> None:
        """The lookup did not answer CARD_NOT_FOUND: give its unknown-card reservation back."""
        lookups = self._settings.unknown_card_lookups_per_minute
        if lookups > 0:
            await self._take(self._unknown_key(merchant), lookups, lookups / 60.0, -1)

    def _card_key(self, merchant: str, card: CardId) -> str:
        digest = hmac.new(
            self._key, f"velocity\0{merchant}\0{card.kind}\0{card.value}".encode(), hashlib.sha256
        ).hexdigest()[:32]
        return f"limit:{{c:{digest}}}"

    @staticmethod
    def _unknown_key(merchant: str) -> str:
        return f"limit:{{m:{_tag(merchant)}}}:unknown_cards"

    async def _take(self, key: str, capacity: float, per_second: float, cost: int) -> Decision | None:
        try:
            return await self._buckets.take(key, capacity=capacity, per_second=per_second, cost=cost)
        except RedisError:
            log.warning("limit check skipped: Redis unavailable", extra={"limit_key": key.split("}")[0] + "}"})
            return None


def _tag(merchant: str) -> str:
    # Percent-encode so a merchant id cannot close the hash tag or collide with another key shape.
    return quote(merchant, safe="")
