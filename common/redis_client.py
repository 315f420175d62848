"""The Redis client of a process, standalone or Cluster, from settings (one pool per process)."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.config import RedisSettings


def create_redis(settings: RedisSettings) -> Redis | RedisCluster:
    password = settings.password.get_secret_value() if settings.password else None
    # Retries only re-send after a connection error *before* a reply; money scripts are additionally
    # idempotent by reference id, so a re-sent script cannot apply twice.
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.01), retries=3)
    common = dict(
        password=password,
        socket_timeout=settings.socket_timeout_seconds,
        socket_connect_timeout=settings.socket_timeout_seconds,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    url = settings.url
    if settings.tls and url.startswith("redis://"):
        url = "rediss://" + url[len("redis://"):]
    if settings.cluster:
        return RedisCluster.from_url(url, max_connections=settings.max_connections, **common)
    # A full pool makes callers wait for a free connection (up to the socket timeout) instead of
    # failing at once with MaxConnectionsError under bursts.
    pool = BlockingConnectionPool.from_url(
        url, max_connections=settings.max_connections, timeout=settings.socket_timeout_seconds, **common
    )
    return Redis.from_pool(pool)  # closing the client closes its pool
