"""Merchant authentication: a per-merchant API key in `authorization: Bearer <key>` metadata.

Keys are never stored: the config holds SHA-256 digests, and a presented key is hashed and looked up.
Config digests are compared with every configured digest by `hmac.compare_digest`, without an early
exit, so the time taken does not depend on how much of a key an attacker got right. The Redis store
is looked up by digest: that timing depends only on the digest, which an attacker cannot steer
towards a stored key without knowing the key.

Two sources of digests:

- the config (`merchants.<id>.api_key_sha256`), fixed for the life of the process;
- `ApiKeyStore` in Redis, managed at runtime by `giftcard key create|rotate|revoke` (mesh/admin.py).
  The authenticator caches each answer from Redis for `cache_seconds` (default 5 s), so the hot
  path does not hit Redis on every call, and a revocation takes effect within that time.

Redis layout (one key per command, so it runs unchanged on Redis Cluster; none of this is money):

    auth:key:{<digest>}        hash  merchant, key_id, created_ms, expires_ms (0 = never), revoked_ms
    auth:merchant:{<merchant>} set   digests of the merchant's keys (for rotate / revoke / list)
    auth:merchants             hash  merchant -> JSON profile of merchants added at runtime
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from common.errors import unauthenticated

DEV_MERCHANT_ID = "demo"
DEV_API_KEY = "dev-demo-key"

# Generated keys: a readable prefix (so a leaked key is recognisable in a scan) + 256 random bits.
KEY_PREFIX = "gcm_"
MERCHANTS_KEY = "auth:merchants"


def key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def key_id_of(digest: str) -> str:
    """A short public name for a key (a digest prefix: safe to print, useless to an attacker)."""
    return digest[:12]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class StoredKey:
    digest: str
    merchant: str
    key_id: str
    created_ms: int
    expires_ms: int  # 0 = no expiry
    revoked_ms: int  # 0 = not revoked

    def active(self, at_ms: int) -> bool:
        return self.revoked_ms == 0 and (self.expires_ms == 0 or at_ms < self.expires_ms)


class ApiKeyStore:
    """API key digests and runtime merchants in Redis (the async client of the process)."""

    def __init__(self, redis, now_ms: Callable[[], int] = _now_ms) -> None:
        self._redis = redis
        self._now_ms = now_ms

    @staticmethod
    def _key(digest: str) -> str:
        return "auth:key:{" + digest + "}"

    @staticmethod
    def _merchant_index(merchant: str) -> str:
        return "auth:merchant:{" + merchant + "}"

    async def lookup(self, digest: str) -> StoredKey | None:
        data = await self._redis.hgetall(self._key(digest))
        if not data:
            return None
        text = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                for k, v in data.items()}
        return StoredKey(
            digest=digest, merchant=text["merchant"], key_id=text.get("key_id", key_id_of(digest)),
            created_ms=int(text.get("created_ms", 0)), expires_ms=int(text.get("expires_ms", 0)),
            revoked_ms=int(text.get("revoked_ms", 0)),
        )

    async def create(self, merchant: str) -> tuple[str, StoredKey]:
        """A new random key for `merchant`: returns (key, record). The key itself is not stored."""
        api_key = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = key_digest(api_key)
        record = StoredKey(digest, merchant, key_id_of(digest), self._now_ms(), 0, 0)
        await self._redis.hset(self._key(digest), mapping={
            "merchant": merchant, "key_id": record.key_id, "created_ms": record.created_ms,
            "expires_ms": 0, "revoked_ms": 0,
        })
        await self._redis.sadd(self._merchant_index(merchant), digest)
        return api_key, record

    async def keys(self, merchant: str) -> list[StoredKey]:
        digests = sorted(d.decode() if isinstance(d, bytes) else d
                         for d in await self._redis.smembers(self._merchant_index(merchant)))
        found = [await self.lookup(digest) for digest in digests]
        return sorted((k for k in found if k is not None), key=lambda k: k.created_ms)

    async def expire(self, merchant: str, *, grace_seconds: float, keep: str | None = None,
                     key_id: str | None = None) -> list[StoredKey]:
        """Ends the merchant's active keys (all, or the one named `key_id`) after `grace_seconds`
        (0 = revoked now). Returns the keys changed."""
        now = self._now_ms()
        changed = []
        for record in await self.keys(merchant):
            if record.digest == keep or not record.active(now):
                continue
            if key_id is not None and record.key_id != key_id:
                continue
            if grace_seconds <= 0:
                await self._redis.hset(self._key(record.digest), "revoked_ms", now)
            else:
                await self._redis.hset(self._key(record.digest), "expires_ms", now + int(grace_seconds * 1000))
            changed.append(record)
        return changed

    # -- merchants added at runtime --------------------------------------------------------------

    async def add_merchant(self, merchant: str, profile: Mapping) -> bool:
        """Registers a merchant (False if it already exists)."""
        return bool(await self._redis.hsetnx(MERCHANTS_KEY, merchant, json.dumps(dict(profile), sort_keys=True)))

    async def merchant(self, merchant: str) -> dict | None:
        raw = await self._redis.hget(MERCHANTS_KEY, merchant)
        return None if raw is None else json.loads(raw)

    async def merchants(self) -> dict[str, dict]:
        raw = await self._redis.hgetall(MERCHANTS_KEY)
        return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}


INTERNAL_MERCHANT_HEADER = "x-giftcard-merchant"


def _acting_for(metadata) -> str:
    """The merchant a mesh process acts for, named by the internal identity's call."""
    for name, value in metadata or ():
        if name.lower() == INTERNAL_MERCHANT_HEADER:
            merchant = value.decode(errors="replace") if isinstance(value, bytes) else value
            if merchant and merchant.isprintable() and len(merchant) <= 128:
                return merchant
    raise unauthenticated(f"internal calls must name the merchant in {INTERNAL_MERCHANT_HEADER}")


class ApiKeyAuthenticator:
    """Config digests first (no I/O), then the Redis key store through a short cache.

    `on_runtime_merchant(merchant, profile)` is called when a key of a merchant added at runtime
    authenticates, so the process can learn that merchant's provider profile (mesh/admin_registry.py).
    """

    def __init__(
        self,
        digests_by_merchant: Mapping[str, Iterable[str]],
        store: ApiKeyStore | None = None,
        *,
        cache_seconds: float = 5.0,
        max_cached: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        on_runtime_merchant: Callable[[str, dict], None] | None = None,
        internal_token: str | None = None,
    ) -> None:
        self._internal_digest = key_digest(internal_token) if internal_token else None
        self._merchant_by_digest: dict[str, str] = {}
        for merchant_id, digests in digests_by_merchant.items():
            for digest in digests:
                self._merchant_by_digest[digest.lower()] = merchant_id
        self._store = store
        self._cache_seconds = cache_seconds
        self._max_cached = max_cached
        self._clock = clock
        self._on_runtime_merchant = on_runtime_merchant
        # digest -> (merchant or None for "no such key", valid until clock())
        self._cache: dict[str, tuple[str | None, float]] = {}

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
        """The merchant id owning the bearer key in `metadata` (config keys only); UNAUTHENTICATED otherwise."""
        merchant_id = self._config_merchant(self._digest(metadata))
        if merchant_id is None:
            raise unauthenticated("invalid API key")
        return merchant_id

    async def authenticate_async(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
        """As `authenticate`, also accepting active keys of the Redis key store."""
        digest = self._digest(metadata)
        merchant_id = self._config_merchant(digest)
        if merchant_id is not None:
            return merchant_id
        if self._internal_digest is not None and hmac.compare_digest(self._internal_digest, digest):
            return _acting_for(metadata)
        if self._store is None:
            raise unauthenticated("invalid API key")
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is None or cached[1] <= now:
            cached = await self._resolve(digest, now)
        if cached[0] is None:
            raise unauthenticated("invalid API key")
        return cached[0]

    async def _resolve(self, digest: str, now: float) -> tuple[str | None, float]:
        assert self._store is not None
        record = await self._store.lookup(digest)
        wall = _now_ms()
        until = now + self._cache_seconds
        merchant: str | None = None
        if record is not None and record.active(wall):
            merchant = record.merchant
            if record.expires_ms:  # a key in its rotation grace period stops exactly on time
                until = min(until, now + (record.expires_ms - wall) / 1000)
            if self._on_runtime_merchant is not None and merchant not in self._merchant_by_digest.values():
                profile = await self._store.merchant(merchant)
                if profile is not None:
                    self._on_runtime_merchant(merchant, profile)
        if len(self._cache) >= self._max_cached:
            self._cache.clear()  # bounded memory under a flood of random keys
        self._cache[digest] = (merchant, until)
        return self._cache[digest]

    def _digest(self, metadata) -> str:
        key = bearer_key(metadata)
        if key is None:
            raise unauthenticated("missing API key: send metadata 'authorization: Bearer <key>'")
        return key_digest(key)

    def _config_merchant(self, digest: str) -> str | None:
        """The merchant whose configured digest equals `digest`: every digest is compared in
        constant time and the loop never exits early (a handful of keys: microseconds)."""
        found = None
        for stored, merchant_id in self._merchant_by_digest.items():
            if hmac.compare_digest(stored.encode(), digest.encode()):
                found = merchant_id
        return found


def bearer_key(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for name, value in metadata or ():
        if name.lower() != "authorization":
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        scheme, _, key = text.strip().partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            return key.strip()
    return None
