"""Operator commands behind `giftcard merchant|key|card|holds|audit` (mesh/cli.py parses).

Each command talks to Redis (and the native ledger) directly with the process config, so it
works with or without a running server. Output: results on stdout, progress and errors on
stderr. Exit codes: 0 ok, 1 a failure was found or the operation failed, 2 usage (argparse).
Card numbers are never printed; only masked numbers (first 6 / last 4).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import redis
from redis.asyncio import Redis

from common.auth import ApiKeyStore
from common.config import MerchantSettings, ProviderProfile, Settings
from common.errors import MeshError
from common.redis_client import create_redis
from mesh.admin_sources import create_sync_redis, open_native_holds

OK, FAILED = 0, 1


class CommandFailed(Exception):
    """An operation that could not be done; the message is for the operator (no card data)."""


@dataclass
class Io:
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)


def run(command: Callable[..., object], settings: Settings, io: Io, **kwargs) -> int:
    """Runs one command, turning the failures an operator can act on into exit code 1."""
    try:
        result = command(settings, io, **kwargs)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return OK if result is None else int(result)
    except CommandFailed as error:
        io.note(f"giftcard: {error}")
    except MeshError as error:
        io.note(f"giftcard: {error.reason}: {error.message}")
    except (redis.RedisError, OSError) as error:
        io.note(f"giftcard: cannot reach Redis at {_safe_url(settings.redis.url)}: {type(error).__name__}")
    return FAILED


def _safe_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


async def _with_redis(settings: Settings, body):
    client: Redis = create_redis(settings.redis)
    try:
        return await body(client)
    finally:
        await client.aclose()


# -- merchants ----------------------------------------------------------------------------------

async def merchant_add(settings: Settings, io: Io, *, merchant: str, provider: str, currencies: list[str]) -> int:
    if merchant in settings.merchants:
        raise CommandFailed(f"merchant {merchant} is already configured in the config file")
    profile = MerchantSettings(
        currencies=currencies, providers=[ProviderProfile(provider=provider)]
    ).model_dump(mode="json", exclude={"api_key_sha256"})
    if provider != "native":
        # Vendor profiles need credentials and a base URL: those belong in the config / secrets.
        raise CommandFailed(f"provider {provider}: add vendor merchants through the config (credentials)")

    async def body(client):
        if not await ApiKeyStore(client).add_merchant(merchant, profile):
            raise CommandFailed(f"merchant {merchant} already exists")
    await _with_redis(settings, body)
    io.say(f"merchant {merchant} added (provider {provider}, currencies {', '.join(currencies)})")
    io.note(f"next: giftcard key create {merchant}")
    return OK


async def merchant_list(settings: Settings, io: Io) -> int:
    async def body(client):
        return await ApiKeyStore(client).merchants()
    runtime = await _with_redis(settings, body)
    for merchant in sorted(settings.merchants):
        io.say(f"{merchant}\tconfig")
    for merchant in sorted(runtime):
        if merchant not in settings.merchants:
            io.say(f"{merchant}\truntime")
    return OK


# -- API keys -----------------------------------------------------------------------------------

async def _require_merchant(settings: Settings, store: ApiKeyStore, merchant: str) -> None:
    if merchant not in settings.merchants and await store.merchant(merchant) is None:
        raise CommandFailed(f"unknown merchant {merchant} (giftcard merchant add {merchant})")


def _print_new_key(io: Io, merchant: str, api_key: str, key_id: str) -> None:
    # The key is shown once, alone on stdout (easy to capture in a script); only its digest is kept.
    io.say(api_key)
    io.note(f"new API key {key_id} for merchant {merchant}: store it now, it cannot be shown again")


async def key_create(settings: Settings, io: Io, *, merchant: str) -> int:
    async def body(client):
        store = ApiKeyStore(client)
        await _require_merchant(settings, store, merchant)
        return await store.create(merchant)
    api_key, record = await _with_redis(settings, body)
    _print_new_key(io, merchant, api_key, record.key_id)
    return OK


async def key_rotate(settings: Settings, io: Io, *, merchant: str, grace_seconds: float) -> int:
    async def body(client):
        store = ApiKeyStore(client)
        await _require_merchant(settings, store, merchant)
        api_key, record = await store.create(merchant)
        old = await store.expire(merchant, grace_seconds=grace_seconds, keep=record.digest)
        return api_key, record, old
    api_key, record, old = await _with_redis(settings, body)
    _print_new_key(io, merchant, api_key, record.key_id)
    when = "now" if grace_seconds <= 0 else f"in {grace_seconds:g} s"
    for key in old:
        io.note(f"old key {key.key_id} stops working {when}")
    if merchant in settings.merchants and settings.merchants[merchant].api_key_sha256:
        io.note("note: keys configured in the config file (api_key_sha256) are not affected")
    return OK


async def key_revoke(settings: Settings, io: Io, *, merchant: str, key_id: str | None) -> int:
    async def body(client):
        store = ApiKeyStore(client)
        await _require_merchant(settings, store, merchant)
        return await store.expire(merchant, grace_seconds=0, key_id=key_id)
    revoked = await _with_redis(settings, body)
    if not revoked:
        raise CommandFailed(f"no active key {key_id or ''} of merchant {merchant} to revoke".replace("  ", " "))
    cache = settings.security.api_key_cache_seconds
    for key in revoked:
        io.say(f"revoked {key.key_id}")
    io.note(f"servers stop accepting it within {cache:g} s (security.api_key_cache_seconds)")
    return OK


async def key_list(settings: Settings, io: Io, *, merchant: str) -> int:
    async def body(client):
        return await ApiKeyStore(client).keys(merchant)
    now = time.time_ns() // 1_000_000
    for key in await _with_redis(settings, body):
        state = "active" if key.active(now) else "revoked" if key.revoked_ms else "expired"
        if key.active(now) and key.expires_ms:
            state = f"expires in {(key.expires_ms - now) / 1000:.0f} s"
        io.say(f"{key.key_id}\t{state}\tcreated {_iso(key.created_ms)}")
    return OK


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


# -- cards (native ledger) ----------------------------------------------------------------------

def _ledger(settings: Settings, client):
    from gateway.adapters.native.ledger import NativeLedger

    return NativeLedger(client, settings.card_hash_key)


def _money(minor: int, currency: str) -> str:
    from common.money import Money, format_decimal

    return f"{format_decimal(Money(minor, currency))} {currency}"


async def card_issue(settings: Settings, io: Io, *, merchant: str, card_number: str, amount_minor: int,
                     currency: str, pin: str | None, inactive: bool) -> int:
    async def body(client):
        await _require_merchant(settings, ApiKeyStore(client), merchant)
        return await _ledger(settings, client).create_card(
            merchant, card_number, currency, pin=pin, balance_minor=amount_minor, active=not inactive,
        )
    state = await _with_redis(settings, body)
    io.say(f"issued {state.masked_number} {state.status} {_money(state.balance_minor, state.currency)}")
    return OK


async def card_balance(settings: Settings, io: Io, *, merchant: str, card_number: str, pin: str | None) -> int:
    async def body(client):
        return await _ledger(settings, client).get_card(merchant, card_number, pin=pin)
    state = await _with_redis(settings, body)
    io.say(
        f"{state.masked_number} {state.status} balance {_money(state.balance_minor, state.currency)} "
        f"held {_money(state.held_minor, state.currency)} available {_money(state.available_minor, state.currency)}"
    )
    return OK


# -- holds ------------------------------------------------------------------------------------

def holds_list(settings: Settings, io: Io, *, merchant: str | None, as_json: bool) -> int:
    client = create_sync_redis(settings.redis)
    try:
        holds = sorted(open_native_holds(client, merchant), key=lambda h: (h["merchant"], h["expires_at_ms"]))
    finally:
        client.close()
    for hold in holds:
        if as_json:
            io.say(json.dumps(hold, sort_keys=True))
        else:
            io.say(
                f"{hold['merchant']}\t{hold['hold_id']}\t{hold['masked_number']}\t"
                f"open {_money(hold['open_minor'], hold['currency'])}\tof {_money(hold['amount_minor'], hold['currency'])}"
                f"\texpires {_iso(hold['expires_at_ms'])}"
            )
    io.note(f"{len(holds)} open hold(s)")
    return OK


# -- audit ------------------------------------------------------------------------------------

def audit(settings: Settings, io: Io, *, merchant: str | None, progress_every: int = 1000,
          intent_grace_seconds: float = 300) -> int:
    """The money audit of mesh/audit.py: native cards (history sums to the balance, balance >= 0,
    0 <= held <= balance, held equals its open holds) and the mesh's hold, redemption, refund and
    intent records. Exit 1 if anything breaks an invariant."""
    from mesh.audit import LedgerAudit

    def progress(cards: int, violations: int) -> None:
        if progress_every and cards % progress_every == 0:
            io.note(f"audited {cards} cards, {violations} violation(s) so far")

    client = create_sync_redis(settings.redis)
    try:
        report = LedgerAudit(client, merchant=merchant, intent_grace_seconds=intent_grace_seconds,
                             on_card=progress).run()
    finally:
        client.close()
    for violation in report.violations:
        io.say(str(violation))
    io.note(report.summary())
    io.say(f"audited {report.counts['cards']} card(s): {len(report.violations)} violation(s)")
    return FAILED if report.violations else OK


# -- jobs -------------------------------------------------------------------------------------

async def jobs_run_settlement(settings: Settings, io: Io, *, target: str, api_key: str, max_items: int,
                              until_empty: bool, deadline: float) -> int:
    """Runs deferred-capture batches for the merchant owning `api_key` through the settlement API
    (RunSettlementBatch), one request id per batch; with `until_empty`, until a batch finds nothing."""
    import grpc

    import giftcard_client
    from giftcard.settlement.v1 import settlement_pb2

    settled = failed = batches = 0
    async with giftcard_client.connect(target, api_key, deadline=deadline) as mesh:
        while True:
            try:
                reply = await mesh.settlement.RunSettlementBatch(settlement_pb2.RunSettlementBatchRequest(
                    request_id=mesh.new_request_id(), max_items=max_items,
                ))
            except grpc.aio.AioRpcError as error:
                raise CommandFailed(f"RunSettlementBatch: {error.code().name}: {error.details()}") from None
            batches += 1
            settled += reply.settled_count
            failed += reply.failed_count
            for item in reply.results:
                if item.failure_reason:
                    io.say(f"FAILED {item.settlement_id} hold {item.hold_id}: {item.failure_reason}")
            io.note(f"batch {batches}: {len(reply.results)} item(s), settled {reply.settled_count}, "
                    f"failed {reply.failed_count}")
            if not until_empty or not reply.results:
                break
    io.say(f"settlement: {batches} batch(es), settled {settled}, failed {failed}")
    return FAILED if failed else OK
