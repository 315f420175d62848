"""Scrape-time metric sources that read Redis (registered on `common.telemetry.ScrapeCollector`).

They run in the Prometheus server's thread with their own small synchronous Redis client, so a
scrape never competes with the event loop, and the collector caches their answer a few seconds.

Open holds come from the native ledger's per-card keys (gateway/adapters/native/ledger.py:
`{gc:<merchant>:<card_id>}:card` with `held` and `currency`, `...:hold_expiry` with one member per
open hold). Hook for later: the mesh's own hold records (services/shared/holds.py) have no
per-merchant index yet; when they get one, add a source reading it with `add_holds_source`. The job
backlog (`giftcard_job_queue_depth`, `giftcard_oldest_unresolved_intent_age_seconds`) has no
source yet for the same reason: the settlement / intent services register theirs with
`add_jobs_source` when they land.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator

import redis

from common.config import RedisSettings
from common.telemetry import OpenHolds

CARD_PATTERN = "{gc:*}:card"


def create_sync_redis(settings: RedisSettings):
    password = settings.password.get_secret_value() if settings.password else None
    url = settings.url
    if settings.tls and url.startswith("redis://"):
        url = "rediss://" + url[len("redis://"):]
    options = dict(password=password, socket_timeout=settings.socket_timeout_seconds,
                   socket_connect_timeout=settings.socket_timeout_seconds)
    if settings.cluster:
        return redis.RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, max_connections=4, **options)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def merchant_of_card_key(key: str) -> str:
    """`{gc:<merchant>:<card_id>}:card` -> merchant (merchant ids may hold ':', card ids do not)."""
    tag = key[len("{gc:"):key.rindex("}")]
    return tag.rpartition(":")[0]


def iter_native_cards(client, merchant: str | None = None, batch: int = 500) -> Iterator[tuple[str, str]]:
    """(merchant, card key prefix `{gc:...}`) for every native card, optionally of one merchant."""
    pattern = CARD_PATTERN if merchant is None else "{gc:" + _glob_escape(merchant) + ":*}:card"
    for raw in client.scan_iter(match=pattern, count=batch):
        key = _text(raw)
        yield merchant_of_card_key(key), key[: -len(":card")]


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class NativeOpenHolds:
    """Open holds and held amounts per merchant and currency on the native ledger.

    Cost: one SCAN over the keyspace plus one pipelined HMGET/ZCOUNT per card, every
    `metrics.scrape_cache_seconds` at most (the collector caches).
    """

    def __init__(self, client, now_ms=lambda: time.time_ns() // 1_000_000) -> None:
        self._client = client
        self._now_ms = now_ms

    def __call__(self) -> list[OpenHolds]:
        count: dict[tuple[str, str], int] = defaultdict(int)
        held: dict[tuple[str, str], int] = defaultdict(int)
        for hold in open_native_holds(self._client, now_ms=self._now_ms()):
            group = (hold["merchant"], hold["currency"])
            count[group] += 1
            held[group] += hold["open_minor"]
        return [OpenHolds(m, c, count[(m, c)], held[(m, c)]) for (m, c) in sorted(count)]


def open_native_holds(client, merchant: str | None = None, now_ms: int | None = None) -> Iterator[dict]:
    """Every open, unexpired native hold: merchant, masked_number, hold_id, currency, amount_minor,
    open_minor, expires_at_ms, created_ms. (Expired holds are only swept when their card is next
    touched, so they are filtered here by time, like the ledger does.)"""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    cards = list(iter_native_cards(client, merchant))
    for start in range(0, len(cards), 200):
        chunk = cards[start:start + 200]
        pipe = client.pipeline(transaction=False)
        for _, prefix in chunk:
            pipe.zrangebyscore(prefix + ":hold_expiry", f"({now}", "+inf")
            pipe.hmget(prefix + ":card", "masked", "currency")
        replies = pipe.execute()
        pipe = client.pipeline(transaction=False)
        wanted = []
        for index, (card_merchant, prefix) in enumerate(chunk):
            hold_ids = [_text(h) for h in replies[2 * index]]
            if hold_ids:
                pipe.hmget(prefix + ":holds", hold_ids)
                masked, currency = (_text(v or b"") for v in replies[2 * index + 1])
                wanted.append((card_merchant, masked, currency, hold_ids))
        for (card_merchant, masked, currency, hold_ids), raw_holds in zip(wanted, pipe.execute() if wanted else []):
            for hold_id, raw in zip(hold_ids, raw_holds):
                if raw is None:
                    continue
                hold = json.loads(raw)
                # The ledger stores a hold without its id (the hash field) and currency (the
                # card's), see gateway/adapters/native/scripts/lib.lua.
                hold.setdefault("hold_id", hold_id)
                hold.setdefault("currency", currency)
                if hold.get("state") != "open":
                    continue
                amount = int(hold.get("amount_minor", 0))
                open_minor = amount - int(hold.get("captured_minor", 0)) - int(hold.get("released_minor", 0))
                yield {
                    "merchant": card_merchant, "masked_number": masked,
                    "hold_id": hold.get("hold_id", ""), "currency": hold.get("currency", ""),
                    "amount_minor": amount, "open_minor": open_minor,
                    "expires_at_ms": int(hold.get("expires_at_ms", 0)),
                    "created_ms": int(hold.get("created_ms", 0)),
                }
