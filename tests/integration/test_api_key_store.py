"""Runtime API keys (common/auth.py) on a real Redis: digests only, cached per process, revocation
effective once the cache entry ends, rotation grace, runtime merchants learned on first use."""

from __future__ import annotations

import grpc
import pytest

from common.auth import ApiKeyAuthenticator, ApiKeyStore, key_digest
from common.errors import MeshError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bearer(key: str):
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture
def store(redis_client):
    return ApiKeyStore(redis_client)


async def refused(authenticator, key: str) -> bool:
    try:
        await authenticator.authenticate_async(bearer(key))
    except MeshError as error:
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
        return True
    return False


async def test_a_created_key_authenticates_and_only_its_digest_is_stored(store, redis_client):
    api_key, record = await store.create("shop")
    authenticator = ApiKeyAuthenticator({}, store)
    assert await authenticator.authenticate_async(bearer(api_key)) == "shop"
    assert record.key_id == key_digest(api_key)[:12]
    dump = b"".join([k + b"".join((await redis_client.hgetall(k)).values()) for k in await redis_client.keys("auth:key:*")])
    assert api_key.encode() not in dump


async def test_config_keys_need_no_redis(store, redis_client):
    authenticator = ApiKeyAuthenticator({"demo": [key_digest("cfg-key")]}, store)
    await redis_client.aclose()  # any Redis call would now fail
    assert await authenticator.authenticate_async(bearer("cfg-key")) == "demo"
    assert authenticator.authenticate(bearer("cfg-key")) == "demo"


async def test_revocation_takes_effect_when_the_cache_entry_ends(store):
    clock = Clock()
    api_key, record = await store.create("shop")
    authenticator = ApiKeyAuthenticator({}, store, cache_seconds=5, clock=clock)
    assert await authenticator.authenticate_async(bearer(api_key)) == "shop"
    assert [k.key_id for k in await store.expire("shop", grace_seconds=0)] == [record.key_id]
    clock.now += 4.9
    assert await authenticator.authenticate_async(bearer(api_key)) == "shop"  # cached
    clock.now += 0.2
    assert await refused(authenticator, api_key)


async def test_unknown_and_missing_keys_are_refused(store):
    clock = Clock()
    authenticator = ApiKeyAuthenticator({}, store, cache_seconds=5, clock=clock)
    assert await refused(authenticator, "gcm_unknown")
    with pytest.raises(MeshError):  # no key at all: refused before any lookup
        await authenticator.authenticate_async(())


async def test_the_cache_is_bounded(store):
    authenticator = ApiKeyAuthenticator({}, store, max_cached=10)
    for index in range(25):
        assert await refused(authenticator, f"random-{index}")
    assert len(authenticator._cache) <= 10


async def test_rotation_grace_ends_the_old_key_on_time(store, redis_client):
    old_key, old = await store.create("shop")
    new_key, new = await store.create("shop")
    changed = await store.expire("shop", grace_seconds=60, keep=new.digest)
    assert [k.key_id for k in changed] == [old.key_id]
    authenticator = ApiKeyAuthenticator({}, store)
    assert await authenticator.authenticate_async(bearer(old_key)) == "shop"
    # Move the expiry into the past (as if the grace period had run out).
    await redis_client.hset(f"auth:key:{{{old.digest}}}", "expires_ms", 1)
    assert await refused(ApiKeyAuthenticator({}, store), old_key)
    assert await ApiKeyAuthenticator({}, store).authenticate_async(bearer(new_key)) == "shop"


async def test_runtime_merchants_are_learned_on_first_use(store):
    assert await store.add_merchant("shop", {"currencies": ["USD"], "providers": [{"provider": "native"}]})
    assert not await store.add_merchant("shop", {})
    learned = []
    api_key, _ = await store.create("shop")
    authenticator = ApiKeyAuthenticator({}, store, on_runtime_merchant=lambda m, p: learned.append((m, p)))
    await authenticator.authenticate_async(bearer(api_key))
    await authenticator.authenticate_async(bearer(api_key))  # cached: learned once
    assert learned == [("shop", {"currencies": ["USD"], "providers": [{"provider": "native"}]})]
