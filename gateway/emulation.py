"""Hold emulation for vendors without holds (Paytronix, Ackroo, Radial), per merchant profile.

`EmulatedHolds(inner, redis, card_hash_key, mode)` is a Provider that adds place/capture/release
to any adapter whose capabilities say `hold_mode != "native"`; every other operation is the
inner adapter's. The mode comes from the merchant's `ProviderProfile.hold_emulation`:

shadow (default)
    place_hold reads the vendor balance and records a shadow hold in Redis against it (balance
    minus open shadow holds must cover it; partial approval takes what is there). Nothing moves at
    the vendor. capture redeems the captured amount at the vendor (reference = the capture's
    reference_id, so a timed-out capture is reversible by reference); release only drops the
    shadow. balance() reports the shadow holds as `held`.
    Risk (documented): spending at the vendor outside the mesh (a POS swiping the same card) is not
    seen by the shadow; the capture then fails with INSUFFICIENT_FUNDS and the hold stays open.

redeem_at_authorize
    place_hold redeems at the vendor at once (reference = the hold's reference_id); capture only
    closes the mesh record; release gives the money back: a full release of an untouched hold
    reverses the original redemption, anything else is a credit (kind refund) of the released
    amount; capture with release_remainder gives the remainder back the same way. Money cannot be
    spent elsewhere meanwhile; the cost is a real debit + credit for every cancelled hold.

Records live under the tag {gwh:<merchant>:<card hmac>} (the card identity is an HMAC with
settings.card_hash_key, never the clear identifier), one Lua script per transition
(emulation_*.lua). Hold ids are derived from the hold's reference_id, so a retried place_hold
lands on the same record, and `reverse(original_reference_id=<hold reference>)` (what the intent
resolver sends for a hold whose outcome was never recorded) finds and releases it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import time
from pathlib import Path

import grpc
from redis.exceptions import ResponseError

from common.errors import (
    AMOUNT_EXCEEDS_OPEN,
    CARD_INACTIVE,
    HOLD_EXPIRED,
    HOLD_NOT_FOUND,
    HOLD_NOT_OPEN,
    INSUFFICIENT_FUNDS,
    TRANSACTION_NOT_FOUND,
    MeshError,
)
from common.money import Money
from common.redis_scripts import ScriptSet, hash_tag
from gateway.ports import ACTIVE, CardId, OperationResult, Provider, Reversal

SHADOW, REDEEM_AT_AUTHORIZE = "shadow", "redeem_at_authorize"
MODES = (SHADOW, REDEEM_AT_AUTHORIZE)
HOLD_ID_PREFIX = "emh_"
# How long a hold record outlives its expiry (captures / releases after expiry, audits).
RETAIN_MS = 30 * 24 * 3600 * 1000

_CODES = {
    INSUFFICIENT_FUNDS: grpc.StatusCode.FAILED_PRECONDITION,
    HOLD_EXPIRED: grpc.StatusCode.FAILED_PRECONDITION,
    HOLD_NOT_OPEN: grpc.StatusCode.FAILED_PRECONDITION,
    AMOUNT_EXCEEDS_OPEN: grpc.StatusCode.FAILED_PRECONDITION,
    HOLD_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _script_error(exc: ResponseError) -> MeshError:
    reason, _, rest = str(exc).partition(" ")
    try:
        body, _ = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        body = {}
    message = str(body.pop("message", reason))
    code = _CODES.get(reason)
    if code is None:
        return MeshError(grpc.StatusCode.INTERNAL, "HOLD_EMULATION_ERROR", f"hold emulation failed: {reason[:80]}")
    return MeshError(code, reason, message, metadata={k: str(v) for k, v in body.items()})


class _Keys:
    def __init__(self, key: bytes, merchant: str, card: CardId) -> None:
        card_id = hmac.new(key, f"{merchant}\0{card.kind}\0{card.value}".encode(), hashlib.sha256).hexdigest()[:32]
        self.tag = hash_tag("gwh", merchant.replace("{", "").replace("}", ""), card_id)
        self.expiries = f"{self.tag}:exp"
        self.held = f"{self.tag}:held"

    def hold(self, hold_id: str) -> str:
        return f"{self.tag}:hold:{hold_id}"

    def op(self, reference_id: str) -> str:
        return f"{self.tag}:op:{reference_id}"


class EmulatedHolds:
    """A provider whose holds are emulated (see the module docstring); everything else delegates."""

    def __init__(self, inner: Provider, redis, card_hash_key: bytes, mode: str = SHADOW) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown hold emulation mode {mode!r}")
        self._inner = inner
        self._key = card_hash_key
        self._mode = mode
        self._redis = redis
        self._scripts = ScriptSet(redis, Path(__file__).parent)
        self.name = inner.name
        # Emulation can always approve partially (shadow: what is available; redeem_at_authorize:
        # when the vendor redeems partially).
        self.capabilities = dataclasses.replace(
            inner.capabilities, hold_mode=mode,
            partial_hold=True if mode == SHADOW else inner.capabilities.partial_redeem,
        )

    @property
    def wrapped(self) -> Provider:
        return self._inner

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def _hold_id(self, merchant: str, reference_id: str) -> str:
        digest = hmac.new(self._key, f"hold\0{merchant}\0{reference_id}".encode(), hashlib.sha256).hexdigest()
        return HOLD_ID_PREFIX + digest[:32]

    async def _run(self, name: str, keys: list[str], args: list) -> dict:
        try:
            raw = await self._scripts[f"emulation_{name}"](keys=keys, args=[str(a) for a in args])
        except ResponseError as exc:
            raise _script_error(exc) from None
        return raw if isinstance(raw, int) else json.loads(raw)

    async def _held(self, keys: _Keys) -> int:
        return int(await self._run("held", [keys.expiries, keys.held], [_now_ms()]))

    # -- the port -------------------------------------------------------------------------------

    async def balance(self, merchant, card):
        info = await self._inner.balance(merchant, card)
        if self._mode != SHADOW:
            return info
        held = await self._held(_Keys(self._key, merchant, card))
        return dataclasses.replace(info, held=Money(info.held.amount_minor + held, info.balance.currency))

    async def place_hold(self, merchant, reference_id, card, amount, *, allow_partial, expires_at_ms):
        keys = _Keys(self._key, merchant, card)
        hold_id = self._hold_id(merchant, reference_id)
        hold_keys = [keys.hold(hold_id), keys.expiries, keys.held]
        if self._mode == SHADOW:
            info = await self._inner.balance(merchant, card)
            if info.status != ACTIVE:
                raise MeshError(grpc.StatusCode.FAILED_PRECONDITION, CARD_INACTIVE, "card is not active")
            if info.balance.currency != amount.currency:
                raise MeshError(grpc.StatusCode.FAILED_PRECONDITION, "CURRENCY_MISMATCH",
                                f"the card is in {info.balance.currency}")
            placed = await self._run("hold_place", hold_keys, [
                hold_id, SHADOW, amount.amount_minor, info.balance.amount_minor, int(allow_partial),
                expires_at_ms, _now_ms(), amount.currency, reference_id, "", RETAIN_MS,
            ])
            return OperationResult(
                provider_transaction_id=hold_id, amount=Money(placed["amount"], amount.currency),
                masked_number=info.masked_number or card.masked, balance=info.balance,
                status=info.status, replayed=bool(placed["replayed"]), hold_id=hold_id,
                open=Money(placed["open"], amount.currency),
            )
        redeemed = await self._inner.redeem(
            merchant, reference_id, card, amount, tip=None, allow_partial=allow_partial
        )
        placed = await self._run("hold_place", hold_keys, [
            hold_id, REDEEM_AT_AUTHORIZE, redeemed.amount.amount_minor, 0, 1, expires_at_ms, _now_ms(),
            amount.currency, reference_id, redeemed.provider_transaction_id, RETAIN_MS,
        ])
        return dataclasses.replace(
            redeemed, hold_id=hold_id, open=Money(placed["open"], amount.currency),
            replayed=redeemed.replayed or bool(placed["replayed"]),
        )

    async def capture_hold(self, merchant, reference_id, card, hold_id, amount, *, release_remainder):
        keys = _Keys(self._key, merchant, card)
        op_keys = [keys.hold(hold_id), keys.expiries, keys.held, keys.op(reference_id)]
        begun = await self._run("op_begin", op_keys, [reference_id, hold_id, "capture", amount.amount_minor, _now_ms()])
        if begun["state"] == "done":
            return self._replayed(card, begun, amount.currency, hold_id)
        vendor: OperationResult | None = None
        if self._mode == SHADOW and begun["amount"] > 0:
            vendor = await self._vendor_step(
                merchant, op_keys, hold_id,
                self._inner.redeem(merchant, reference_id, card, Money(begun["amount"], amount.currency),
                                   tip=None, allow_partial=False),
            )
        remainder_release = release_remainder and self._mode == SHADOW
        finished = await self._run("op_finish", op_keys, [hold_id, "commit", _result_json(vendor), int(remainder_release)])
        open_money = Money(finished["open"], amount.currency)
        if release_remainder and self._mode == REDEEM_AT_AUTHORIZE and finished["open"] > 0:
            await self._release(merchant, f"{reference_id}:rem", card, hold_id, None, amount.currency)
            open_money = Money(0, amount.currency)
        return OperationResult(
            provider_transaction_id=vendor.provider_transaction_id if vendor else reference_id,
            amount=Money(finished["amount"], amount.currency), masked_number=card.masked,
            balance=vendor.balance if vendor else None, hold_id=hold_id, open=open_money,
        )

    async def release_hold(self, merchant, reference_id, card, hold_id, amount):
        currency = amount.currency if amount is not None else None
        return await self._release(merchant, reference_id, card, hold_id,
                                   amount.amount_minor if amount is not None else None, currency)

    async def reverse(self, merchant, reference_id, card, *, provider_transaction_id, original_reference_id,
                      original_operation=""):
        # A shadow hold's "transaction id" is its hold id: reversing it releases the hold.
        hold_id = provider_transaction_id if (provider_transaction_id or "").startswith(HOLD_ID_PREFIX) else None
        if original_reference_id or hold_id:
            hold_id = hold_id or self._hold_id(merchant, original_reference_id)
            try:
                result = await self._release(merchant, reference_id, card, hold_id, None, None)
            except MeshError as error:
                if error.reason == HOLD_NOT_OPEN:
                    # Captured or released already: nothing is held any more, and the captured
                    # money is a payment, not something a reversal of the hold may take back.
                    hold = await self._hold_fields(_Keys(self._key, merchant, card).hold(hold_id))
                    zero = Money(0, hold.get("currency", "USD"))
                    return Reversal(OperationResult("", zero, card.masked), reversed=False)
                if error.reason != HOLD_NOT_FOUND:
                    raise
                if (provider_transaction_id or "").startswith(HOLD_ID_PREFIX):
                    raise MeshError(grpc.StatusCode.NOT_FOUND, TRANSACTION_NOT_FOUND, "transaction not found") from None
                if original_operation == "hold" and self._mode == SHADOW:
                    # A shadow hold is only ever written here (the vendor was at most asked for a
                    # balance): never placed = nothing held, at the vendor neither. A PlaceHold
                    # still running may place it later; its request then finds its intent reversed
                    # and releases it. (No record, no currency: the caller reads `reversed`.)
                    return Reversal(OperationResult("", Money(0, "USD"), card.masked), reversed=False)
                # No record: not a hold, or (redeem_at_authorize) the vendor redeemed and the
                # record was never written; the vendor reverses by reference either way.
            else:
                return Reversal(result=result, reversed=result.amount.amount_minor > 0)
        return await self._inner.reverse(
            merchant, reference_id, card, provider_transaction_id=provider_transaction_id,
            original_reference_id=original_reference_id,
        )

    # -- helpers --------------------------------------------------------------------------------

    async def _release(self, merchant, reference_id, card, hold_id, amount_minor, currency):
        keys = _Keys(self._key, merchant, card)
        op_keys = [keys.hold(hold_id), keys.expiries, keys.held, keys.op(reference_id)]
        begun = await self._run("op_begin", op_keys, [
            reference_id, hold_id, "release", "" if amount_minor is None else amount_minor, _now_ms(),
        ])
        hold = await self._hold_fields(keys.hold(hold_id))
        currency = currency or hold.get("currency", "USD")
        if begun["state"] == "done":
            return self._replayed(card, begun, currency, hold_id)
        vendor: OperationResult | None = None
        if self._mode == REDEEM_AT_AUTHORIZE and begun["amount"] > 0:
            untouched = (int(hold.get("captured", 0)) == 0 and int(hold.get("released", 0)) == 0
                         and begun["amount"] == int(hold.get("amount", 0)))
            if untouched and hold.get("vendor_txn"):
                step = self._reverse_original(merchant, reference_id, card, hold["vendor_txn"])
            else:
                step = self._inner.credit(merchant, reference_id, card, Money(begun["amount"], currency), kind="refund")
            vendor = await self._vendor_step(merchant, op_keys, hold_id, step)
        finished = await self._run("op_finish", op_keys, [hold_id, "commit", _result_json(vendor), 0])
        return OperationResult(
            provider_transaction_id=vendor.provider_transaction_id if vendor else reference_id,
            amount=Money(finished["amount"], currency), masked_number=card.masked,
            balance=vendor.balance if vendor else None, hold_id=hold_id,
            open=Money(finished["open"], currency),
        )

    async def _reverse_original(self, merchant, reference_id, card, vendor_txn) -> OperationResult:
        reversal = await self._inner.reverse(
            merchant, reference_id, card, provider_transaction_id=vendor_txn, original_reference_id=None
        )
        return reversal.result

    async def _vendor_step(self, merchant, op_keys, hold_id, call) -> OperationResult:
        """Run the vendor side of a started operation: a definite refusal aborts it (the amount is
        open again); an unknown outcome leaves it pending, so a retry under the same reference
        resends the same vendor call (or the resolver reverses it by that reference)."""
        try:
            return await call
        except MeshError as error:
            if not error.retryable and error.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                await self._run("op_finish", op_keys, [hold_id, "abort", "", 0])
            raise

    async def _hold_fields(self, key: str) -> dict[str, str]:
        raw = await self._redis.hgetall(key)  # a read to choose the vendor step; no transition
        return {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                for k, v in raw.items()}

    def _replayed(self, card: CardId, begun: dict, currency: str, hold_id: str) -> OperationResult:
        result = json.loads(begun.get("result") or "{}") if begun.get("result") else {}
        balance = result.get("balance_minor")
        return OperationResult(
            provider_transaction_id=result.get("provider_transaction_id", ""),
            amount=Money(begun["amount"], currency), masked_number=card.masked,
            balance=Money(int(balance), currency) if balance is not None else None,
            replayed=True, hold_id=hold_id, open=Money(begun["open"], currency),
        )


def _result_json(vendor: OperationResult | None) -> str:
    if vendor is None:
        return json.dumps({})
    return json.dumps({
        "provider_transaction_id": vendor.provider_transaction_id,
        "balance_minor": vendor.balance.amount_minor if vendor.balance else None,
    })
