"""The Clutch adapter: the provider port over Clutch's gift card API (client.py + translate.py).

Mapping (assumptions in gateway/adapters/README.md):
- balance = balance (`held` = balance - availableBalance, Clutch's own holds).
- place_hold = hold (native, partial approval: Clutch approves min(requested, available)); without
  `allow_partial` a short approval is released at once (0.00 settlement) and refused.
- capture_hold = settlement: Clutch redeems and releases the rest of the hold in one call, so
  `release_remainder=True` is exactly Clutch. `release_remainder=False` (keep the rest reserved) is
  not in Clutch: the adapter places an "advanced hold" (a NEW Clutch hold) for the released
  remainder and journals hold id -> current Clutch hold, so the mesh keeps ONE hold id for the
  whole life of its hold (later captures / releases go to the current Clutch hold).
- release_hold = settlement of 0.00 (Clutch's hold reversal); a partial release is a full release
  and an advanced hold for what stays reserved (same mechanism).
- redeem = hold + settlement (Clutch has no one-step redeem); strict refuses a short hold.
- credit (reload and refund) = issue; activate = activate (Clutch: zero balance) + issue of the
  amount (the port's Activate loads); allocate = allocate by CardsetID (= program_id), number +
  optional PIN, inactive; issue_value = issue (callable; not declared, see CAPABILITIES).
- reverse: a hold by its hold transaction id (0.00 settlement); a redemption (settled, no void in
  Clutch) by issuing the amount back; by reference through the write-ahead journal, replaying the
  original requests under their requestRef to learn what happened.
- Every write sends a stable requestRef derived from the mesh reference (+ a step name), so a retry
  replays at Clutch instead of moving money twice.
"""

from __future__ import annotations

import dataclasses

from common.config import ProviderProfile
from common.errors import (
    HOLD_NOT_OPEN,
    INSUFFICIENT_FUNDS,
    TRANSACTION_NOT_REVERSIBLE,
    MeshError,
    failed_precondition,
    invalid_argument,
)
from common.money import Money
from gateway.adapters.clutch import translate as t
from gateway.adapters.clutch.client import ClutchClient
from gateway.adapters.journal import JournalEntry, MemoryReferenceJournal, ReferenceJournal, begin, tombstone
from gateway.adapters.vendor import VendorProvider
from gateway.ports import Capabilities, OperationResult, Reversal, unsupported

CAPABILITIES = Capabilities(
    hold_mode="native", partial_hold=True, partial_redeem=True, tip=False, reverse_by_reference=True,
    cash_out=False, exchange=False, allocate=True, claim_links=False, activate=True, credit=True,
    # issue_value() works (Clutch issue), but activate() already issues the initial value, so the
    # capability stays False: declaring it would make fulfillment load the card a second time.
    issue_value=False, pin_required=False,
)
# Provider transaction ids this adapter hands out, so reverse() knows what it is undoing.
_HOLD, _REDEEM = "H", "S"
_KIND_HOLD, _KIND_REDEEM = "hold", "redeem"


def _txn_id(kind: str, amount: Money, vendor_id: str) -> str:
    return f"{kind}:{amount.amount_minor}:{amount.currency}:{vendor_id}"


def _parse_txn_id(value: str) -> tuple[str, Money, str] | None:
    parts = value.split(":", 3)
    if len(parts) != 4 or parts[0] not in (_HOLD, _REDEEM) or not parts[1].isdigit() or not parts[3]:
        return None
    return parts[0], Money(int(parts[1]), parts[2]), parts[3]


class ClutchProvider(VendorProvider):
    name = "clutch"
    capabilities = CAPABILITIES

    def __init__(self, client: ClutchClient, *, currency: str = "USD", journal: ReferenceJournal | None = None) -> None:
        self._client = client
        self._currency = currency
        self._journal = journal or MemoryReferenceJournal()

    @classmethod
    def from_profile(cls, profile: ProviderProfile, *, breaker=None, tracer_provider=None, transport=None,
                     journal=None) -> "ClutchProvider":
        return cls(
            ClutchClient.from_profile(profile, breaker=breaker, tracer_provider=tracer_provider, transport=transport),
            currency=str(profile.options.get("currency", "USD")), journal=journal,
        )



    # -- holds ---------------------------------------------------------------------------------------

    async def balance(self, merchant, card):
        return t.balance_info(await self._client.commit("balance", t.balance(card)), card)

    async def _hold(self, merchant, reference_id, card, amount: Money, *, allow_partial: bool, step: str, kind: str):
        """Place a hold under `reference_id` (+ step), journaled first. A reference journaled
        before for the same hold was sent already: Clutch replays its first answer (`replayed`)."""
        sent = await begin(self._journal, merchant, reference_id, JournalEntry(kind, amount.amount_minor, amount.currency))
        replayed = any(e.order_id == kind and e.amount_minor == amount.amount_minor for e in sent)
        reply = await self._client.commit("hold", t.hold(reference_id, card, amount, step))
        result = dataclasses.replace(t.hold_result(reply, card), replayed=replayed)
        if result.amount.amount_minor < amount.amount_minor and not allow_partial:
            await self._client.commit("release", t.hold_reversal(reference_id, result.hold_id, "undo"))
            raise failed_precondition(INSUFFICIENT_FUNDS, "the card does not cover the amount",
                                      available_minor=str(result.amount.amount_minor))
        return result

    async def place_hold(self, merchant, reference_id, card, amount, *, allow_partial, expires_at_ms):
        # Clutch holds do not expire on their own (WIRE.md): the mesh releases them at expiry.
        self._check_currency(amount)
        result = await self._hold(merchant, reference_id, card, amount, allow_partial=allow_partial, step="", kind=_KIND_HOLD)
        return dataclasses.replace(result, provider_transaction_id=_txn_id(_HOLD, result.amount, result.hold_id))

    # Clutch closes a hold at its one settlement. When the mesh keeps part of a hold reserved (a
    # partial capture or release), the adapter places an "advanced hold" for that part and keeps
    # the mesh's hold id stable: the journal maps it to the Clutch hold that currently carries it.

    @staticmethod
    def _chain(hold_id: str) -> str:
        return f"hold:{hold_id}"

    async def _current(self, merchant, hold_id: str) -> str:
        entries = await self._journal.entries(merchant, self._chain(hold_id))
        return entries[-1].order_id if entries else hold_id

    async def _target(self, merchant, reference_id: str, hold_id: str) -> str:
        """The Clutch hold an operation settles, fixed at its first attempt: a retry goes to the
        same hold (and replays) even after the operation moved the chain on to an advanced hold."""
        key = f"target:{reference_id}"
        fixed = await self._journal.entries(merchant, key)
        if fixed:
            return fixed[0].order_id
        current = await self._current(merchant, hold_id)
        await self._journal.record(merchant, key, JournalEntry(current, 0, self._currency))
        return current

    async def _advanced_hold(self, merchant, reference_id, card, hold_id: str, remainder: Money,
                             closed: OperationResult) -> OperationResult:
        if remainder.amount_minor <= 0:
            return dataclasses.replace(closed, hold_id=hold_id)
        reply = await self._client.commit("hold", t.hold(reference_id, card, remainder, "adv"))
        held = t.hold_result(reply, card)
        await self._journal.record(merchant, self._chain(hold_id),
                                   JournalEntry(held.hold_id, held.amount.amount_minor, held.amount.currency))
        return dataclasses.replace(closed, balance=held.balance, hold_id=hold_id, open=held.amount)

    async def capture_hold(self, merchant, reference_id, card, hold_id, amount, *, release_remainder):
        self._check_currency(amount)
        if amount.amount_minor == 0:
            if not release_remainder:
                raise invalid_argument("amount.amount_minor", "a capture of 0 that keeps the hold open does nothing")
            return await self.release_hold(merchant, reference_id, card, hold_id, None)
        vendor_hold = await self._target(merchant, reference_id, hold_id)
        reply = await self._client.commit("capture", t.settlement(reference_id, vendor_hold, amount))
        captured = t.settlement_result(reply, card)
        captured = dataclasses.replace(
            captured, provider_transaction_id=_txn_id(_REDEEM, captured.amount, captured.provider_transaction_id),
            hold_id=hold_id,
        )
        if release_remainder:
            return captured
        return await self._advanced_hold(merchant, reference_id, card, hold_id, t.released(reply), captured)

    async def release_hold(self, merchant, reference_id, card, hold_id, amount):
        vendor_hold = await self._target(merchant, reference_id, hold_id)
        reply = await self._client.commit("release", t.hold_reversal(reference_id, vendor_hold))
        released = dataclasses.replace(t.settlement_result(reply, card, released=True), hold_id=hold_id)
        if amount is None or amount.amount_minor >= released.amount.amount_minor:
            return released
        # Partial release: Clutch released everything; reserve again what was not to be released.
        self._check_currency(amount)
        result = await self._advanced_hold(merchant, reference_id, card, hold_id, released.amount - amount, released)
        return dataclasses.replace(result, amount=amount)

    # -- money movements -------------------------------------------------------------------------

    async def redeem(self, merchant, reference_id, card, amount, *, tip, allow_partial):
        if tip is not None and tip.amount_minor:
            raise unsupported(self.name, "tip")
        self._check_currency(amount)
        held = await self._hold(merchant, reference_id, card, amount, allow_partial=allow_partial, step="h", kind=_KIND_REDEEM)
        reply = await self._client.commit("redeem", t.settlement(reference_id, held.hold_id, held.amount, "s"))
        result = t.settlement_result(reply, card)
        return OperationResult(
            provider_transaction_id=_txn_id(_REDEEM, result.amount, result.provider_transaction_id),
            amount=result.amount, masked_number=card.masked, balance=result.balance,
        )

    async def credit(self, merchant, reference_id, card, amount, *, kind):
        # Clutch has one way to add value (issue); a reload and a refund are both an issue.
        self._check_currency(amount)
        reply = await self._client.commit("credit", t.issue(reference_id, card, amount))
        return t.card_result(reply, card, "credit", reply.amount)

    async def activate(self, merchant, reference_id, card, amount, *, promo_code):
        """Clutch activates with a zero balance and loads with a separate issuance; the port's
        Activate loads the initial value (refund-to-new-card relies on it), so both happen here,
        each under its own requestRef: a retry after a crash between them replays the activation
        and sends the issuance once. A card already active is CARD_ALREADY_ACTIVE, never a load."""
        self._check_currency(amount)
        await self._client.commit("activate", t.activate(reference_id, card))
        reply = await self._client.commit("activate", t.issue(reference_id, card, amount, "load"))
        return t.card_result(reply, card, "activate", reply.amount)

    async def allocate(self, merchant, reference_id, program_id, amount):
        self._check_currency(amount)
        return t.allocation(await self._client.commit("allocate", t.allocate(reference_id, program_id)), self._currency)

    async def issue_value(self, merchant, reference_id, card, amount):
        self._check_currency(amount)
        reply = await self._client.commit("issue_value", t.issue(reference_id, card, amount))
        return t.card_result(reply, card, "issue_value", reply.amount)

    # -- reversal --------------------------------------------------------------------------------

    async def reverse(self, merchant, reference_id, card, *, provider_transaction_id, original_reference_id,
                      original_operation=""):
        if provider_transaction_id:
            parsed = _parse_txn_id(provider_transaction_id)
            if parsed is None:
                raise failed_precondition(TRANSACTION_NOT_REVERSIBLE, "not a clutch hold or redemption of this adapter",
                                          provider="clutch")
            kind, amount, vendor_id = parsed
            if kind == _HOLD:
                return await self._release_for_reversal(card, await self._current(merchant, vendor_id))
            return await self._give_back(f"rev:{vendor_id}", card, amount)
        if not original_reference_id:
            raise invalid_argument("target", "set provider_transaction_id or original_reference_id")
        entries = await tombstone(self._journal, merchant, original_reference_id, self._currency)
        if not entries:
            # Nothing journaled = nothing was sent under that reference (and now never will be).
            return Reversal(OperationResult("", Money(0, self._currency), card.masked), False)
        entry = entries[-1]
        amount = Money(entry.amount_minor, entry.currency)
        step = "h" if entry.order_id == _KIND_REDEEM else ""
        # Replaying the hold under its requestRef answers what Clutch did with it (or applies it
        # now, if it never arrived: then it is released below, and a late copy can only replay).
        held = t.hold_result(await self._client.commit("hold", t.hold(original_reference_id, card, amount, step)), card)
        try:
            current = await self._current(merchant, held.hold_id)
            reply = await self._client.commit("reverse", t.hold_reversal(original_reference_id, current, "undo"))
            return Reversal(t.settlement_result(reply, card, released=True), True)
        except MeshError as error:
            if error.reason != HOLD_NOT_OPEN or entry.order_id != _KIND_REDEEM:
                if error.reason == HOLD_NOT_OPEN:
                    return Reversal(OperationResult("", Money(0, amount.currency), card.masked), False)
                raise
        # The hold was settled: replay the settlement to learn what was redeemed, then give it back.
        try:
            settled = t.settlement_result(await self._client.commit(
                "redeem", t.settlement(original_reference_id, held.hold_id, held.amount, "s")), card)
        except MeshError as error:
            if error.reason == HOLD_NOT_OPEN:  # closed by a reversal, not by the redemption
                return Reversal(OperationResult("", Money(0, amount.currency), card.masked), False)
            raise
        return await self._give_back(f"rev:{original_reference_id}", card, settled.amount)

    async def _release_for_reversal(self, card, hold_id) -> Reversal:
        try:
            reply = await self._client.commit("reverse", t.hold_reversal(f"rev:{hold_id}", hold_id))
        except MeshError as error:
            if error.reason == HOLD_NOT_OPEN:
                return Reversal(OperationResult("", Money(0, self._currency), card.masked), False)
            raise
        return Reversal(t.settlement_result(reply, card, released=True), True)

    async def _give_back(self, key: str, card, amount: Money) -> Reversal:
        """Clutch cannot void a settlement: the redeemed amount is issued back to the card. The
        requestRef is derived from what is undone (not from the reversal's own reference), so any
        repeat of the reversal replays at Clutch and never gives back twice."""
        reply = await self._client.commit("reverse", t.issue(key, card, amount))
        return Reversal(t.card_result(reply, card, "reverse", reply.amount), True)
