"""The SmartClixx adapter: the provider port over SmartClixx (client.py + translate.py).

Mapping (assumptions in gateway/adapters/README.md):
- balance = cards/balance (`held` = balance - availableBalance).
- place_hold = authorizations (native; SmartClixx approves all or declines). `allow_partial` is
  emulated: a decline for funds is followed by a balance read and an authorization of what is
  available.
- capture_hold = settlements: several per authorization (one per shipment), each reducing what is
  left; `release_remainder` then reverses what stays on the authorization.
- release_hold = authorizations/reversal, full (no amount) or partial (cancel / partial cancel).
- redeem = authorization + settlement of it (SmartClixx has no one-step redeem).
- activate = cards/activate (physical: number + amount; e-card: number + CVV2 + amount).
- allocate = ecards/retrieve (program_id -> number + CVV2, inactive); activate then loads it.
- reverse: an authorization by its id (full reversal). A settlement cannot be undone at
  SmartClixx (no void, no credit): UNIMPLEMENTED, operation "reverse_settlement". By reference
  (a lost reply): the journaled authorization is replayed under its requestId and reversed.
- No credit / reload, cash-out, exchange or issue_value: UNIMPLEMENTED naming smartclixx.
- The card secret is the CVV2, carried in the mesh's `CardRef.pin`.
"""

from __future__ import annotations

import dataclasses

from common.config import ProviderProfile
from common.errors import (
    CARD_INACTIVE,
    HOLD_NOT_OPEN,
    INSUFFICIENT_FUNDS,
    MeshError,
    failed_precondition,
    invalid_argument,
)
from common.money import Money
from gateway.adapters.journal import JournalEntry, MemoryReferenceJournal, ReferenceJournal, begin, tombstone
from gateway.adapters.smartclixx import translate as t
from gateway.adapters.smartclixx.client import SmartClixxClient
from gateway.adapters.vendor import VendorProvider
from gateway.ports import ACTIVE, Capabilities, OperationResult, Reversal, unsupported

CAPABILITIES = Capabilities(
    hold_mode="native", partial_hold=True, partial_redeem=True, tip=False, reverse_by_reference=True,
    cash_out=False, exchange=False, allocate=True, claim_links=False, activate=True, credit=False,
    issue_value=False, pin_required=False,
)
# SmartClixx has no void of a settlement and no credit: UNIMPLEMENTED naming this operation.
REVERSE_SETTLEMENT = "reverse_settlement"
# Settlement ids handed to the mesh carry this prefix: reverse() knows it cannot undo them.
_SETTLEMENT = "S:"


class SmartClixxProvider(VendorProvider):
    name = "smartclixx"
    capabilities = CAPABILITIES

    def __init__(self, client: SmartClixxClient, *, currency: str = "USD", journal: ReferenceJournal | None = None) -> None:
        self._client = client
        self._currency = currency
        self._journal = journal or MemoryReferenceJournal()

    @classmethod
    def from_profile(cls, profile: ProviderProfile, *, breaker=None, tracer_provider=None, transport=None,
                     journal=None) -> "SmartClixxProvider":
        return cls(
            SmartClixxClient.from_profile(profile, breaker=breaker, tracer_provider=tracer_provider, transport=transport),
            currency=str(profile.options.get("currency", "USD")), journal=journal,
        )



    def _settlement(self, result: OperationResult) -> OperationResult:
        return OperationResult(
            provider_transaction_id=_SETTLEMENT + result.provider_transaction_id, amount=result.amount,
            masked_number=result.masked_number, balance=result.balance, hold_id=result.hold_id, open=result.open,
        )

    # -- holds ---------------------------------------------------------------------------------------

    async def balance(self, merchant, card):
        return t.balance_info(await self._client.commit("balance", t.balance(card)), card, self._currency)

    async def _authorize(self, merchant, reference_id, card, amount: Money, *, allow_partial: bool, step: str):
        """Authorize `amount`; with `allow_partial` a decline for funds becomes an authorization
        of what is available (SmartClixx itself approves all or nothing). Journaled before sending."""
        sent = await begin(self._journal, merchant, reference_id, JournalEntry(step, amount.amount_minor, amount.currency))
        # Sent before under this reference: SmartClixx replays its first answer.
        replayed = any(e.order_id in (step, step + "p") for e in sent)
        partial_sent = [e for e in sent if e.order_id == step + "p"]
        if partial_sent:  # the first attempt ended in a partial authorization: replay that one
            reply = await self._client.commit("authorize", t.authorize(
                reference_id, card, Money(partial_sent[-1].amount_minor, partial_sent[-1].currency), step + "p"))
            return dataclasses.replace(t.authorization_result(reply, card, self._currency), replayed=True)
        try:
            reply = await self._client.commit("authorize", t.authorize(reference_id, card, amount, step))
            return dataclasses.replace(t.authorization_result(reply, card, self._currency), replayed=replayed)
        except MeshError as error:
            if not (allow_partial and error.reason == INSUFFICIENT_FUNDS):
                raise
        info = await self.balance(merchant, card)
        available = info.balance.amount_minor - info.held.amount_minor
        if info.status != ACTIVE:
            raise failed_precondition(CARD_INACTIVE, "card is not active")
        if available <= 0:
            raise failed_precondition(INSUFFICIENT_FUNDS, "no funds available on the card", available_minor="0")
        partial = Money(min(available, amount.amount_minor), amount.currency)
        step = step + "p"
        await begin(self._journal, merchant, reference_id, JournalEntry(step, partial.amount_minor, partial.currency))
        reply = await self._client.commit("authorize", t.authorize(reference_id, card, partial, step))
        return t.authorization_result(reply, card, self._currency)

    async def place_hold(self, merchant, reference_id, card, amount, *, allow_partial, expires_at_ms):
        # SmartClixx authorizations do not expire on their own: the mesh schedules the reversal.
        self._check_currency(amount)
        return await self._authorize(merchant, reference_id, card, amount, allow_partial=allow_partial, step="")

    async def capture_hold(self, merchant, reference_id, card, hold_id, amount, *, release_remainder):
        self._check_currency(amount)
        if amount.amount_minor == 0:
            if not release_remainder:
                raise invalid_argument("amount.amount_minor", "a capture of 0 that keeps the hold open does nothing")
            return await self.release_hold(merchant, reference_id, card, hold_id, None)
        settled = t.settlement_result(
            await self._client.commit("capture", t.settle(reference_id, hold_id, amount)), card, self._currency)
        if release_remainder and settled.open and settled.open.amount_minor > 0:
            reply = await self._client.commit("release", t.reverse_authorization(reference_id, hold_id, None, "rel"))
            released = t.reversal_result(reply, card, self._currency)
            settled = OperationResult(
                provider_transaction_id=settled.provider_transaction_id, amount=settled.amount,
                masked_number=settled.masked_number, balance=released.balance, hold_id=hold_id, open=released.open,
            )
        return self._settlement(settled)

    async def release_hold(self, merchant, reference_id, card, hold_id, amount):
        if amount is not None:
            self._check_currency(amount)
        reply = await self._client.commit("release", t.reverse_authorization(reference_id, hold_id, amount))
        return t.reversal_result(reply, card, self._currency)

    # -- money movements -------------------------------------------------------------------------

    async def redeem(self, merchant, reference_id, card, amount, *, tip, allow_partial):
        if tip is not None and tip.amount_minor:
            raise unsupported(self.name, "tip")
        self._check_currency(amount)
        held = await self._authorize(merchant, reference_id, card, amount, allow_partial=allow_partial, step="a")
        reply = await self._client.commit("redeem", t.settle(reference_id, held.hold_id, held.amount, "s"))
        result = self._settlement(t.settlement_result(reply, card, self._currency))
        return OperationResult(
            provider_transaction_id=result.provider_transaction_id, amount=result.amount,
            masked_number=card.masked, balance=result.balance,
        )

    async def activate(self, merchant, reference_id, card, amount, *, promo_code):
        self._check_currency(amount)
        reply = await self._client.commit("activate", t.activate(reference_id, card, amount))
        return t.activation_result(reply, card, self._currency)

    async def allocate(self, merchant, reference_id, program_id, amount):
        """E-card retrieval: number + CVV2 of a new inactive card; the fulfillment flow activates
        it with the amount next (activated=False)."""
        self._check_currency(amount)
        reply = await self._client.commit("allocate", t.retrieve_ecard(reference_id, program_id))
        return t.allocation(reply, self._currency)

    # -- reversal --------------------------------------------------------------------------------

    async def reverse(self, merchant, reference_id, card, *, provider_transaction_id, original_reference_id,
                      original_operation=""):
        zero = Money(0, self._currency)
        if provider_transaction_id:
            if provider_transaction_id.startswith(_SETTLEMENT):
                raise unsupported(self.name, REVERSE_SETTLEMENT)
            return await self._reverse_authorization(card, provider_transaction_id)
        if not original_reference_id:
            raise invalid_argument("target", "set provider_transaction_id or original_reference_id")
        entries = await tombstone(self._journal, merchant, original_reference_id, self._currency)
        if not entries:
            return Reversal(OperationResult("", zero, card.masked), False)  # nothing was ever sent
        entry = entries[-1]
        amount = Money(entry.amount_minor, entry.currency)
        # Replaying the authorization under its requestId answers what SmartClixx did with it (or
        # applies it now if it never arrived; it is reversed right below, a late copy only replays).
        try:
            reply = await self._client.commit("authorize", t.authorize(original_reference_id, card, amount, entry.order_id))
        except MeshError as error:
            if error.reason == INSUFFICIENT_FUNDS:
                return Reversal(OperationResult("", zero, card.masked), False)
            raise
        held = t.authorization_result(reply, card, self._currency)
        reversal = await self._reverse_authorization(card, held.hold_id)
        if not reversal.reversed and entry.order_id.startswith("a"):
            # The redemption's settlement consumed the authorization: SmartClixx cannot undo it.
            raise unsupported(self.name, REVERSE_SETTLEMENT)
        return reversal

    async def _reverse_authorization(self, card, authorization_id: str) -> Reversal:
        try:
            reply = await self._client.commit(
                "reverse", t.reverse_authorization(f"rev:{authorization_id}", authorization_id, None))
        except MeshError as error:
            if error.reason == HOLD_NOT_OPEN:  # nothing left: settled or reversed already
                return Reversal(OperationResult("", Money(0, self._currency), card.masked), False)
            raise
        return Reversal(t.reversal_result(reply, card, self._currency), True)
