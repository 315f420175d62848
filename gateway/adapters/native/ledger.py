"""The native stored-value ledger: card balances, holds and an append-only history in Redis.

Every money transition is ONE Lua script in `scripts/` (see each file's header for its keys,
arguments, return value and invariant); this module only validates arguments, derives keys and
hashes, runs the script and maps its error replies to `MeshError`. Nothing here reads state and
writes it back: concurrent calls are serialized by Redis, one script at a time.

Key layout (all keys of one card share the hash tag `{gc:<merchant>:<card_id>}`, so a script only
ever touches one Redis Cluster slot):

    {gc:<merchant>:<card_id>}:card         hash  masked, status, balance, held, currency, pin (HMAC),
                                                 pin_fail, locked_until, created_ms
    {gc:<merchant>:<card_id>}:history      list  JSON entries, append-only
    {gc:<merchant>:<card_id>}:holds        hash  hold_id -> JSON hold
    {gc:<merchant>:<card_id>}:hold_expiry  zset  open hold ids scored by expires_at_ms
    {gc:<merchant>:<card_id>}:txns         hash  transaction_id -> JSON record (with its result)
    {gc:<merchant>:<card_id>}:client_txns  hash  client_txn_id -> {fp, txn} | reversal tombstone
    {gc:<merchant>:<card_id>}:escrows      hash  escrow_id -> JSON exchange out-leg

`card_id` is HMAC-SHA256(card_hash_key, merchant NUL card_number), so Redis never holds a card
number; the PIN is stored as HMAC(card_hash_key, card_id NUL pin). Transaction ids (`t_...`) and
hold ids (`h_...`) are random and only meaningful under their card's tag: every call that takes
one also takes the card, and a foreign id is simply not found.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from common.errors import (
    AMOUNT_EXCEEDS_OPEN,
    BALANCE_LIMIT_EXCEEDED,
    CARD_ALREADY_ACTIVE,
    CARD_ALREADY_EXISTS,
    CARD_HAS_OPEN_HOLDS,
    CARD_INACTIVE,
    CARD_LOCKED,
    CARD_NOT_FOUND,
    CURRENCY_MISMATCH,
    HOLD_EXPIRED,
    HOLD_NOT_FOUND,
    HOLD_NOT_OPEN,
    IDEMPOTENCY_KEY_REUSED,
    INSUFFICIENT_FUNDS,
    INVALID_PIN,
    TRANSACTION_NOT_FOUND,
    TRANSACTION_NOT_REVERSIBLE,
    TRANSACTION_REVERSED,
    MeshError,
    invalid_argument,
)
from common.cards import mask_number
from common.redis_scripts import LuaScript, hash_tag

# Reasons this ledger adds to the mesh's set (candidates for common/errors.py).

_FAILED_PRECONDITION = (
    INSUFFICIENT_FUNDS, CARD_ALREADY_ACTIVE, CARD_INACTIVE, CURRENCY_MISMATCH, HOLD_EXPIRED,
    HOLD_NOT_OPEN, AMOUNT_EXCEEDS_OPEN, TRANSACTION_REVERSED, IDEMPOTENCY_KEY_REUSED,
    CARD_ALREADY_EXISTS, CARD_HAS_OPEN_HOLDS, TRANSACTION_NOT_REVERSIBLE, BALANCE_LIMIT_EXCEEDED,
)
_CODE_BY_REASON: dict[str, grpc.StatusCode] = {
    **{reason: grpc.StatusCode.FAILED_PRECONDITION for reason in _FAILED_PRECONDITION},
    CARD_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    HOLD_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    TRANSACTION_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    INVALID_PIN: grpc.StatusCode.PERMISSION_DENIED,
    CARD_LOCKED: grpc.StatusCode.PERMISSION_DENIED,
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
}

_SCRIPT_DIR = Path(__file__).with_name("scripts")
_SCRIPTS = (
    "card_create", "card_read", "hold_read", "activate", "hold", "capture", "release", "redeem",
    "credit", "reverse", "cash_out", "exchange_out", "exchange_in", "exchange_complete",
    "exchange_cancel",
)
_KEY_SUFFIXES = ("card", "history", "holds", "hold_expiry", "txns", "client_txns", "escrows")
_CREDIT_KINDS = ("reload", "refund")
_CURRENCY = re.compile(r"[A-Z]{3}")
# Hash tags break if a merchant id contains braces; whitespace has no business in ids either.
_SAFE_ID = re.compile(r"[^{}\s]{1,128}")


@dataclass(frozen=True)
class CardState:
    card_id: str
    masked_number: str
    status: str  # "inactive" | "active" | "deactivated"
    balance_minor: int
    held_minor: int  # open, unexpired holds only
    currency: str

    @property
    def available_minor(self) -> int:
        return self.balance_minor - self.held_minor


@dataclass(frozen=True)
class LedgerResult:
    transaction_id: str
    amount_minor: int  # amount actually moved / approved
    balance_minor: int  # after the transaction
    held_minor: int
    currency: str
    hold_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)


@dataclass(frozen=True)
class _Card:
    """One card as the scripts see it: its id (a keyed hash), its keys and its masked number."""

    card_id: str
    keys: tuple[str, ...]
    masked: str


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _fingerprint(*parts: object) -> str:
    """What a client_txn_id was first used for; a retry must match it to be replayed."""
    return "|".join(str(part) for part in parts)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _mesh_error(reply: str) -> MeshError:
    """Script error reply `REASON {json}` (Redis may append ` script: ...`) -> MeshError."""
    reason, _, rest = reply.partition(" ")
    code = _CODE_BY_REASON.get(reason)
    if code is None:
        return MeshError(grpc.StatusCode.INTERNAL, "LEDGER_ERROR", f"ledger script failed: {reply[:200]}")
    try:
        body, _ = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        body = {}
    message = str(body.pop("message", reason))
    field_name = body.pop("field", None)
    return MeshError(code, reason, message, field=field_name, metadata={k: str(v) for k, v in body.items()})


def _result(data: dict[str, Any]) -> LedgerResult:
    return LedgerResult(
        transaction_id=data["transaction_id"],
        amount_minor=int(data["amount_minor"]),
        balance_minor=int(data["balance_minor"]),
        held_minor=int(data["held_minor"]),
        currency=data["currency"],
        hold_id=data.get("hold_id") or None,
        extra=data.get("extra") or {},
    )


class NativeLedger:
    """Stored-value cards on Redis. All amounts are int minor units of the card's currency.

    Idempotency is per card and client_txn_id: the same request again returns the first result
    (with `extra["replayed"] = True`) and moves nothing; a different request under a used
    client_txn_id is refused with IDEMPOTENCY_KEY_REUSED. Failed calls are not recorded, so a
    refused request can be retried with the same client_txn_id once the cause is fixed.

    PIN: cards provisioned with a PIN need it for balance inquiries, holds and redeems when
    `require_pin` is true (the default); activation checks it only when one is given. A wrong PIN
    counts towards a lockout (`max_pin_failures` in a row locks the card for `pin_lock_ms`); a
    missing PIN does not count.
    """

    def __init__(
        self,
        redis: Redis,
        card_hash_key: bytes,
        now_ms: Callable[[], int] | None = None,
        *,
        max_pin_failures: int = 5,
        pin_lock_ms: int = 15 * 60 * 1000,
        require_pin: bool = True,
        max_balance_minor: int = 10**11,
    ) -> None:
        if len(card_hash_key) < 16:
            raise ValueError("card_hash_key must be at least 16 bytes")
        # Lua's cjson prints at most 14 significant digits; stay well inside that.
        if not 0 < max_balance_minor <= 10**12:
            raise ValueError("max_balance_minor must be in (0, 10**12]")
        self._redis = redis
        self._key = card_hash_key
        self._now_ms = now_ms or _wall_clock_ms
        self._max_pin_failures = max_pin_failures
        self._pin_lock_ms = pin_lock_ms
        self._require_pin = require_pin
        self._max_balance = max_balance_minor
        library = (_SCRIPT_DIR / "lib.lua").read_text()
        # lib.lua is prepended to every script: Redis scripts cannot include one another.
        self._scripts = {
            name: LuaScript(redis, library + (_SCRIPT_DIR / f"{name}.lua").read_text())
            for name in _SCRIPTS
        }

    # -- provisioning and reads ---------------------------------------------------------------

    async def create_card(
        self,
        merchant: str,
        card_number: str,
        currency: str,
        pin: str | None = None,
        balance_minor: int = 0,
        active: bool = False,
    ) -> CardState:
        card = self._card(merchant, card_number)
        _check_currency(currency)
        self._check_amount("balance_minor", balance_minor, minimum=0)
        data = await self._run(
            "card_create", card, card.masked, currency, balance_minor,
            "active" if active else "inactive", pin=pin,
        )
        return self._state(card, data)

    async def get_card(self, merchant: str, card_number: str, pin: str | None = None) -> CardState:
        card = self._card(merchant, card_number)
        data = await self._run("card_read", card, pin=pin, pin_required=self._require_pin)
        return self._state(card, data)

    async def get_hold(self, merchant: str, card_number: str, hold_id: str) -> dict[str, Any]:
        """{hold_id, transaction_id, amount_minor, captured_minor, released_minor, open_minor,
        state: open|closed|expired, expires_at_ms, currency, created_ms}."""
        card = self._card(merchant, card_number)
        return await self._run("hold_read", card, _check_id("hold_id", hold_id))

    async def history(self, merchant: str, card_number: str) -> list[dict[str, Any]]:
        """Every entry ever appended, oldest first: transaction_id, kind, amount_minor (signed
        balance delta), balance_minor and held_minor after it, client_txn_id, ts_ms, and
        kind-specific fields (hold_id, escrow_id, reversed_transaction_id, ...)."""
        card = self._card(merchant, card_number)
        return [json.loads(entry) for entry in await self._redis.lrange(card.keys[1], 0, -1)]

    # -- money movements ----------------------------------------------------------------------

    async def activate(
        self,
        merchant: str,
        card_number: str,
        amount_minor: int,
        currency: str,
        *,
        pin: str | None = None,
        client_txn_id: str,
        max_balance_minor: int | None = None,
    ) -> LedgerResult:
        """inactive -> active plus a load of `amount_minor`; an unknown card is created active
        (an open-loop sell). An active card is refused with CARD_ALREADY_ACTIVE and not loaded.
        `max_balance_minor`: the merchant's cap, checked in the script (see `credit`)."""
        card = self._card(merchant, card_number)
        _check_currency(currency)
        self._check_amount("amount_minor", amount_minor, minimum=0)
        return _result(await self._run(
            "activate", card, amount_minor, currency, card.masked, pin=pin,
            client_txn_id=client_txn_id, fingerprint=_fingerprint("activate", amount_minor, currency),
            max_balance=max_balance_minor,
        ))

    async def hold(
        self,
        merchant: str,
        card_number: str,
        amount_minor: int,
        currency: str,
        *,
        allow_partial: bool,
        expires_at_ms: int,
        client_txn_id: str,
        pin: str | None = None,
    ) -> LedgerResult:
        """Reserve up to `amount_minor` of the available balance until `expires_at_ms`.
        `amount_minor` of the result is what was approved (less than asked only if allow_partial).
        The expiry is not part of the idempotency fingerprint: a retry may recompute it."""
        card = self._card(merchant, card_number)
        _check_currency(currency)
        self._check_amount("amount_minor", amount_minor)
        if isinstance(expires_at_ms, bool) or not isinstance(expires_at_ms, int) or not 0 < expires_at_ms < 10**14:
            raise invalid_argument("expires_at_ms", "expires_at_ms must be epoch milliseconds")
        return _result(await self._run(
            "hold", card, amount_minor, currency, int(allow_partial), expires_at_ms, _new_id("h"),
            pin=pin, pin_required=self._require_pin, client_txn_id=client_txn_id,
            fingerprint=_fingerprint("hold", amount_minor, currency, int(allow_partial)),
        ))

    async def capture(
        self,
        merchant: str,
        card_number: str,
        hold_id: str,
        amount_minor: int,
        *,
        client_txn_id: str,
        release_remainder: bool = False,
    ) -> LedgerResult:
        """Debit `amount_minor` of an open hold (0 is allowed, to close it with release_remainder).
        extra: released_minor (remainder released), open_minor (still held), hold_state."""
        card = self._card(merchant, card_number)
        _check_id("hold_id", hold_id)
        self._check_amount("amount_minor", amount_minor, minimum=0)
        return _result(await self._run(
            "capture", card, hold_id, amount_minor, int(release_remainder),
            client_txn_id=client_txn_id,
            fingerprint=_fingerprint("capture", hold_id, amount_minor, int(release_remainder)),
        ))

    async def release(
        self,
        merchant: str,
        card_number: str,
        hold_id: str,
        amount_minor: int | None,
        *,
        client_txn_id: str,
    ) -> LedgerResult:
        """Release `amount_minor` of a hold's open amount, or all of it when None.
        extra: open_minor (still held), hold_state."""
        card = self._card(merchant, card_number)
        _check_id("hold_id", hold_id)
        if amount_minor is not None:
            self._check_amount("amount_minor", amount_minor)
        amount_arg = "" if amount_minor is None else amount_minor
        return _result(await self._run(
            "release", card, hold_id, amount_arg, client_txn_id=client_txn_id,
            fingerprint=_fingerprint("release", hold_id, "all" if amount_minor is None else amount_minor),
        ))

    async def redeem(
        self,
        merchant: str,
        card_number: str,
        amount_minor: int,
        currency: str,
        *,
        partial: bool,
        tip_minor: int = 0,
        client_txn_id: str,
        pin: str | None = None,
    ) -> LedgerResult:
        """Debit amount + tip from the available balance. STRICT (partial=False) refuses with
        INSUFFICIENT_FUNDS when short; PARTIAL takes min(available, amount + tip), covering the
        amount before the tip. extra: requested_minor, tip_minor (approved tip), partial."""
        card = self._card(merchant, card_number)
        _check_currency(currency)
        self._check_amount("amount_minor", amount_minor)
        self._check_amount("tip_minor", tip_minor, minimum=0)
        return _result(await self._run(
            "redeem", card, amount_minor, tip_minor, currency, int(partial),
            pin=pin, pin_required=self._require_pin, client_txn_id=client_txn_id,
            fingerprint=_fingerprint("redeem", amount_minor, tip_minor, currency, int(partial)),
        ))

    async def credit(
        self,
        merchant: str,
        card_number: str,
        amount_minor: int,
        currency: str,
        *,
        client_txn_id: str,
        kind: str = "reload",
        max_balance_minor: int | None = None,
    ) -> LedgerResult:
        """Add value to an active card: kind "reload" (fund) or "refund".

        `max_balance_minor` is the merchant's maximum card balance (the lower of it and the
        ledger's own cap applies). It is checked inside the credit script, against the balance the
        script reads, so concurrent reloads that each fit alone cannot together exceed it: the
        one that would is refused with BALANCE_LIMIT_EXCEEDED and credits nothing."""
        card = self._card(merchant, card_number)
        _check_currency(currency)
        self._check_amount("amount_minor", amount_minor)
        if kind not in _CREDIT_KINDS:
            raise invalid_argument("kind", "kind must be reload or refund")
        return _result(await self._run(
            "credit", card, amount_minor, currency, kind, client_txn_id=client_txn_id,
            fingerprint=_fingerprint(kind, amount_minor, currency), max_balance=max_balance_minor,
        ))

    async def reverse(
        self,
        merchant: str,
        card_number: str,
        *,
        transaction_id: str | None = None,
        client_txn_id: str | None = None,
    ) -> LedgerResult:
        """Undo a redeem, capture, credit, activation load or hold (= release what is open).

        Target by `transaction_id` (wins when both are given) or by the original call's
        `client_txn_id`. Applies once: reversing again returns the first reversal's result.
        If no transaction carries `client_txn_id` yet (the original timed out and never arrived),
        a tombstone is recorded and amount 0 returned (extra.nothing_to_reverse); the original,
        should it arrive later on this card, is refused with TRANSACTION_REVERSED.
        extra: reversed (False for a tombstone), reversed_transaction_id, reversed_kind."""
        card = self._card(merchant, card_number)
        if transaction_id is None and client_txn_id is None:
            raise invalid_argument("transaction_id", "give transaction_id or client_txn_id")
        if transaction_id is not None:
            _check_id("transaction_id", transaction_id)
        if client_txn_id is not None:
            _check_id("client_txn_id", client_txn_id)
        return _result(await self._run("reverse", card, transaction_id or "", client_txn_id or ""))

    async def cash_out(self, merchant: str, card_number: str, *, client_txn_id: str) -> LedgerResult:
        """Pay out the whole balance (amount_minor) and deactivate the card. Refused with
        CARD_HAS_OPEN_HOLDS while holds are open: that money is promised to someone."""
        card = self._card(merchant, card_number)
        return _result(await self._run(
            "cash_out", card, client_txn_id=client_txn_id, fingerprint=_fingerprint("cash_out"),
        ))

    async def exchange(
        self, merchant: str, old_card: str, new_card: str, *, client_txn_id: str
    ) -> LedgerResult:
        """Move the whole balance of an active card to an inactive (or unknown -> created) card
        and deactivate the old one. The two cards live in different Redis Cluster slots, so this
        is not one script but a resumable saga around an escrow record on the old card, whose id
        is derived from (old card, client_txn_id):

        A. `exchange_out` (old card): balance -> escrow (pending), old card deactivated, history
           "exchange_out". Idempotent by client_txn_id; a replay reports the escrow's state.
        B. `exchange_in` (new card): credit the escrowed amount, idempotent by the escrow id used
           as the new card's client_txn_id, history "exchange_in".
        C. `exchange_complete` (old card): escrow -> completed.

        A crash (or timeout) between any two steps is repaired by calling exchange again with the
        same client_txn_id: A replays, B replays or runs for the first time, C is a no-op or runs;
        the new card is credited exactly once. If the new card refuses the credit (already active,
        deactivated, other currency), the in-leg is tombstoned on the new card first (so it can
        never land later), then `exchange_cancel` returns the escrow to the old card and
        reactivates it, and the refusal is raised; a later re-call raises the same refusal.

        Returns the new card's result: amount_minor moved, its balance/held/currency; extra:
        escrow_id, created (new card created), exchange_out_transaction_id.
        """
        old = self._card(merchant, old_card)
        new = self._card(merchant, new_card)
        if old.card_id == new.card_id:
            raise invalid_argument("new_card", "the new card must differ from the old card")
        out = await self._exchange_out(old, new, client_txn_id)
        escrow_id = out.extra["escrow_id"]
        if out.extra["escrow_state"] == "cancelled":
            reason = out.extra.get("failure_reason") or TRANSACTION_REVERSED
            code = _CODE_BY_REASON.get(reason, grpc.StatusCode.FAILED_PRECONDITION)
            raise MeshError(code, reason, out.extra.get("failure_message") or "exchange was cancelled",
                            metadata={"escrow_id": escrow_id})
        try:
            incoming = await self._exchange_in(new, out)
        except MeshError as refused:
            if await self._void_exchange_in(new, escrow_id):
                await self._run("exchange_cancel", old, escrow_id, refused.reason, refused.message)
                raise
            incoming = await self._exchange_in(new, out)  # a concurrent call landed it: replay
        await self._run("exchange_complete", old, escrow_id, incoming.transaction_id)
        extra = {**incoming.extra, "exchange_out_transaction_id": out.transaction_id}
        return replace(incoming, extra=extra)

    async def _exchange_out(self, old: _Card, new: _Card, client_txn_id: str) -> LedgerResult:
        escrow_id = "x_" + hmac.new(
            self._key, f"escrow\0{old.card_id}\0{client_txn_id}".encode(), hashlib.sha256
        ).hexdigest()[:32]
        return _result(await self._run(
            "exchange_out", old, escrow_id, new.card_id, client_txn_id=client_txn_id,
            fingerprint=_fingerprint("exchange_out", new.card_id),
        ))

    async def _exchange_in(self, new: _Card, out: LedgerResult) -> LedgerResult:
        escrow_id = out.extra["escrow_id"]
        return _result(await self._run(
            "exchange_in", new, out.amount_minor, out.currency, new.masked, client_txn_id=escrow_id,
            fingerprint=_fingerprint("exchange_in", escrow_id, out.amount_minor, out.currency),
        ))

    async def _void_exchange_in(self, new: _Card, escrow_id: str) -> bool:
        """Tombstone the in-leg on the new card. False if it has landed there after all (a
        concurrent call got through), in which case the escrow must not be cancelled."""
        try:
            voided = await self._run("reverse", new, "", escrow_id)
        except MeshError as err:
            if err.reason == TRANSACTION_NOT_REVERSIBLE:
                return False
            raise
        return bool(voided["extra"].get("nothing_to_reverse"))

    # -- the one choke point to Redis ----------------------------------------------------------

    async def _run(
        self,
        script: str,
        card: _Card,
        *op_args: str | int,
        client_txn_id: str = "",
        fingerprint: str = "",
        pin: str | None = None,
        pin_required: bool = False,
        max_balance: int | None = None,
    ) -> dict[str, Any]:
        """Run one ledger script on one card; its error replies become MeshError. `max_balance`
        (a merchant's cap) lowers the ledger's own maximum balance for this call (ARGV[9])."""
        if client_txn_id != "" or fingerprint:
            _check_id("client_txn_id", client_txn_id)
        pin_hash = "" if pin is None else self._pin_hash(card.card_id, pin)
        header = [
            self._now_ms(), client_txn_id, fingerprint, _new_id("t"), pin_hash, int(pin_required),
            self._max_pin_failures, self._pin_lock_ms,
            self._max_balance if not max_balance or max_balance <= 0 else min(max_balance, self._max_balance),
        ]
        try:
            raw = await self._scripts[script](keys=card.keys, args=[*header, *op_args])
        except ResponseError as exc:
            raise _mesh_error(str(exc)) from None
        return json.loads(raw)

    def _card(self, merchant: str, card_number: str) -> _Card:
        if not isinstance(merchant, str) or not _SAFE_ID.fullmatch(merchant):
            raise invalid_argument("merchant", "merchant id is empty or contains braces/whitespace")
        if (
            not isinstance(card_number, str)
            or not 0 < len(card_number) <= 64
            or not (card_number.isascii() and card_number.isalnum())
        ):
            raise invalid_argument("card_number", "card number must be 1-64 letters or digits")
        card_id = hmac.new(
            self._key, f"{merchant}\0{card_number}".encode(), hashlib.sha256
        ).hexdigest()[:32]
        tag = hash_tag("gc", merchant, card_id)
        return _Card(card_id, tuple(f"{tag}:{suffix}" for suffix in _KEY_SUFFIXES), mask_number(card_number))

    def _pin_hash(self, card_id: str, pin: str) -> str:
        if not isinstance(pin, str) or not 0 < len(pin) <= 16:
            raise invalid_argument("pin", "PIN must be 1-16 characters")
        return hmac.new(self._key, f"{card_id}\0{pin}".encode(), hashlib.sha256).hexdigest()

    def _check_amount(self, name: str, value: int, minimum: int = 1) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= self._max_balance:
            raise invalid_argument(name, f"{name} must be an integer from {minimum} to {self._max_balance}")

    @staticmethod
    def _state(card: _Card, data: dict[str, Any]) -> CardState:
        return CardState(
            card_id=card.card_id,
            masked_number=data["masked_number"],
            status=data["status"],
            balance_minor=int(data["balance_minor"]),
            held_minor=int(data["held_minor"]),
            currency=data["currency"],
        )


def _check_currency(currency: str) -> None:
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise invalid_argument("currency", "currency must be an ISO 4217 alphabetic code")


def _check_id(name: str, value: str) -> str:
    if not isinstance(value, str) or not _SAFE_ID.fullmatch(value):
        raise invalid_argument(name, f"{name} must be 1-128 characters without braces or whitespace")
    return value
