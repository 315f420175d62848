"""The Paytronix adapter: the provider port over Paytronix's gift service (client.py + translate.py).

Paytronix has no holds (the gateway emulates them, gateway/emulation.py), no partial redeem (emulated
here: a balance read, then a strict redeem of what is there, so it can never overspend), sells
(= activate) and reloads (= credit, both kinds), redeems with a tip, cashes out, exchanges and
reverses by pxTransactionId or by our reference (externalTransactionId = reference_id).

Resends. Paytronix never replays: a request reusing an externalTransactionId is refused with
`transaction.duplicate_external_id`, which means the first one arrived and was applied (its reply
was lost). Exchange carries no caller id at all; a resend finds the old card closed. So every write
is journaled (gateway/adapters/journal.py) under its reference BEFORE it is sent, with the amount it
moves, and a resend answers from the journal: the amount of the first attempt, the card's balance
read now, no pxTransactionId (a later reversal names the operation by externalTransactionId).
A resend the vendor refuses for another reason (the card was closed since, say) does not prove the
first attempt failed: the adapter reverses it by our reference, and answers the first attempt's
amount if it applied and cannot be undone, else the refusal.
Exchange: a resend that finds the old card closed and the new one active answers the new card's
balance (it was inactive, so empty, before). Cash-out moves "the whole balance": the adapter reads
it first and journals that; a spend landing between the read and the write makes the journaled
figure stale (seen once in the long vendor-fault run; open, see tests/chaos/README.md). Activation (sell) is not answered from the journal: the
vendor answers a resent sell with `gift.card_already_active`, which cannot be told apart from a
card activated by someone else.
"""

from __future__ import annotations

import dataclasses

from common.config import ProviderProfile
import grpc

from common.errors import CARD_INACTIVE, INSUFFICIENT_FUNDS, MeshError, invalid_argument
from common.money import Money
from gateway.adapters.http import VendorReply
from gateway.adapters.journal import JournalEntry, MemoryReferenceJournal, ReferenceJournal
from gateway.adapters.paytronix import translate as t
from gateway.adapters.paytronix.client import PaytronixClient
from gateway.adapters.vendor import VendorProvider
from gateway.ports import (
    ACTIVE,
    DEACTIVATED,
    INACTIVE,
    BalanceInfo,
    Capabilities,
    OperationResult,
    Reversal,
)

CAPABILITIES = Capabilities(
    hold_mode="shadow",  # no vendor holds: EmulatedHolds sets the merchant's mode
    partial_hold=True, partial_redeem=True, tip=True, reverse_by_reference=True, cash_out=True,
    exchange=True, allocate=False, claim_links=False, activate=True, credit=True, issue_value=False,
    pin_required=False,
)


class PaytronixProvider(VendorProvider):
    name = "paytronix"
    capabilities = CAPABILITIES

    def __init__(self, client: PaytronixClient, *, merchant_id: int, store_code: str, currency: str = "USD",
                 pos: dict[str, str] | None = None, journal: ReferenceJournal | None = None) -> None:
        self._client = client
        self._journal = journal or MemoryReferenceJournal()
        self._merchant_id = merchant_id
        self._store = store_code
        self._currency = currency
        self._pos = dict(pos or {})

    @classmethod
    def from_profile(cls, profile: ProviderProfile, *, breaker=None, tracer_provider=None, transport=None, journal=None):
        options = profile.options
        if "merchant_id" not in options or "store_code" not in options:
            raise ValueError("provider paytronix: options.merchant_id and options.store_code are required")
        pos = {k: str(options[o]) for o, k in (("terminal_id", "terminalId"), ("cashier", "cashier")) if o in options}
        return cls(
            PaytronixClient.from_profile(profile, breaker=breaker, tracer_provider=tracer_provider, transport=transport),
            merchant_id=int(options["merchant_id"]), store_code=str(options["store_code"]),
            currency=str(options.get("currency", "USD")), pos=pos, journal=journal,
        )


    def _base(self) -> dict:
        return t.common(self._merchant_id, self._store, self._pos)


    async def balance(self, merchant, card):
        payload = {**self._base(), "cardInfo": t.card_info(card)}
        reply = await self._client.balance(payload)
        try:
            body = t.success_or_raise("balance", reply)
        except MeshError as error:
            # An unsold / closed card is a status, not an error, for a balance inquiry.
            if error.reason == CARD_INACTIVE:
                status = DEACTIVATED if t.failure_code(reply) == "gift.card_deactivated" else INACTIVE
                zero = Money(0, self._currency)
                return BalanceInfo(masked_number=card.masked, status=status, balance=zero, held=zero)
            raise
        result = t.to_result("balance", body, card, self._currency)
        return BalanceInfo(masked_number=card.masked, status=ACTIVE, balance=result.balance,
                           held=Money(0, self._currency))

    async def redeem(self, merchant, reference_id, card, amount, *, tip, allow_partial):
        self._check_currency(amount)
        external_id = t.external_id(reference_id)
        if allow_partial:
            # A resend takes what the first attempt took (it may be the one that applied).
            sent = await self._journaled(merchant, reference_id, "redeem")
            available = sent.amount_minor if sent else await self._available(merchant, card)
            amount, tip = _partial(amount, tip, available)
        total = amount.amount_minor + (tip.amount_minor if tip else 0)
        payload = {**self._base(), "cardInfo": t.card_info(card), **t.amount_fields(amount, tip),
                   "externalTransactionId": external_id}
        return await self._once(merchant, "redeem", reference_id, card, total, self._client.redeem, payload)

    async def _available(self, merchant, card) -> int:
        """The whole balance of an active card (Paytronix has no holds of its own)."""
        info = await self.balance(merchant, card)
        if info.status != ACTIVE:
            raise MeshError(grpc.StatusCode.FAILED_PRECONDITION, CARD_INACTIVE, "card is not active")
        return info.balance.amount_minor

    async def _journaled(self, merchant, reference_id: str, operation: str) -> JournalEntry | None:
        """The first attempt of `operation` sent under this reference, if any."""
        sent = [e for e in await self._journal.entries(merchant, reference_id) if e.order_id == operation]
        return sent[0] if sent else None

    async def _once(self, merchant, operation: str, reference_id: str, card, amount_minor: int, send, payload
                    ) -> OperationResult:
        """Journal, send, and answer a resend from what the first attempt did."""
        earlier = await self._journaled(merchant, reference_id, operation)  # an earlier call's attempt
        await self._journal.record(merchant, reference_id, JournalEntry(operation, amount_minor, self._currency))
        reply: VendorReply = await send(payload)
        code = t.failure_code(reply)
        if code == "transaction.duplicate_external_id":
            # Sent before: by an earlier call, or by this call's own resend after a lost reply.
            return await self._replayed(merchant, card, earlier.amount_minor if earlier else amount_minor)
        if (earlier is not None or reply.resent) and code is not None \
                and not await self._undone(payload["externalTransactionId"]):
            # The resend was refused (e.g. the card was closed since) but the first attempt
            # applied and stays: that is the answer, not the refusal.
            return await self._replayed(merchant, card, earlier.amount_minor if earlier else amount_minor)
        body = t.success_or_raise(operation, reply)
        return t.to_result(operation, body, card, self._currency)

    async def _undone(self, external_id: str) -> bool:
        """After a refused resend: make sure the first attempt has no effect, by reversing it by
        our reference. True when nothing of it stays (undone now or before, or it never arrived:
        Paytronix then blocks the id); False when it applied and cannot be undone."""
        probe = await self._client.reverse({**t.common(self._merchant_id, self._store, {}),
                                            "externalTransactionId": external_id})
        return t.failure_code(probe) in (None, "transaction.not_found", "transaction.already_reversed")

    async def _replayed(self, merchant, card, amount_minor: int) -> OperationResult:
        info = await self.balance(merchant, card)
        return OperationResult("", Money(amount_minor, self._currency), card.masked, balance=info.balance,
                               status=info.status, replayed=True)

    async def credit(self, merchant, reference_id, card, amount, *, kind):
        # Paytronix has one way to add value to an active card (reload); a refund is a reload.
        self._check_currency(amount)
        payload = {**self._base(), "cardInfo": t.card_info(card), **t.amount_fields(amount),
                   "externalTransactionId": t.external_id(reference_id)}
        return await self._once(merchant, "credit", reference_id, card, amount.amount_minor,
                                self._client.reload, payload)

    async def activate(self, merchant, reference_id, card, amount, *, promo_code):
        self._check_currency(amount)
        payload = {**self._base(), "cardInfo": t.card_info(card), **t.amount_fields(amount),
                   "externalTransactionId": t.external_id(reference_id)}
        body = t.success_or_raise("activate", await self._client.sell(payload))
        return t.to_result("activate", body, card, self._currency)

    async def cash_out(self, merchant, reference_id, card):
        payload = {**self._base(), "cardInfo": t.card_info(card), "externalTransactionId": t.external_id(reference_id)}
        sent = await self._journaled(merchant, reference_id, "cash_out")
        whole = sent.amount_minor if sent else await self._available(merchant, card)
        return await self._once(merchant, "cash_out", reference_id, card, whole, self._client.cash_out, payload)

    async def exchange(self, merchant, reference_id, from_card, to_card):
        payload = {**self._base(), "cardInfo": t.card_info(from_card, "from_card"),
                   "newCardInfo": t.card_info(to_card, "to_card")}
        empty = Money(0, self._currency)
        sent = await self._journaled(merchant, reference_id, "exchange")
        if sent is None:
            await self._journal.record(merchant, reference_id, JournalEntry("exchange", 0, self._currency))
        reply = await self._client.exchange(payload)
        if (sent is not None or reply.resent) and t.failure_code(reply) == "gift.card_deactivated":
            target = await self.balance(merchant, to_card)
            if target.status == ACTIVE:
                # A resend: the first attempt moved the balance onto the new card (inactive, so
                # empty, before) and closed the old one.
                return OperationResult("", target.balance, from_card.masked, balance=empty, replayed=True)
        body = t.success_or_raise("exchange", reply)
        moved = t.to_result("exchange", body, to_card, self._currency)
        # The reply describes the new card; the result speaks of the old one, now empty.
        return dataclasses.replace(moved, masked_number=from_card.masked, balance=empty)

    async def reverse(self, merchant, reference_id, card, *, provider_transaction_id, original_reference_id,
                      original_operation=""):
        # reverse.json takes only merchantId, storeCode and the two ids (no POS fields).
        payload = t.common(self._merchant_id, self._store, {})
        if provider_transaction_id:
            try:
                payload["pxTransactionId"] = int(provider_transaction_id)
            except ValueError:
                raise invalid_argument("provider_transaction_id", "paytronix transaction ids are integers") from None
        if original_reference_id:
            payload["externalTransactionId"] = t.external_id(original_reference_id)
        if "pxTransactionId" not in payload and "externalTransactionId" not in payload:
            raise invalid_argument("target", "set provider_transaction_id or original_reference_id")
        reply = await self._client.reverse(payload)
        code = t.failure_code(reply)
        zero = Money(0, self._currency)
        if code == "transaction.not_found" and not provider_transaction_id:
            # Never arrived: Paytronix now blocks that id, so it can never apply later.
            return Reversal(OperationResult("", zero, card.masked), reversed=False)
        if code == "transaction.already_reversed":
            # A resent reversal: undone once already. Paytronix does not say by how much.
            return Reversal(OperationResult("", zero, card.masked, replayed=True), reversed=True)
        body = t.success_or_raise("reverse", reply)
        return Reversal(t.to_result("reverse", body, card, self._currency), reversed=True)


def _partial(amount: Money, tip: Money | None, available: int) -> tuple[Money, Money | None]:
    """Paytronix redeems all or nothing: take min(amount + tip, available), tip first kept whole.
    The redeem after the balance read is strict, so a concurrent spend makes it fail, never overspend."""
    tip_minor = tip.amount_minor if tip else 0
    if amount.amount_minor + tip_minor <= available:
        return amount, tip
    if available <= 0:
        raise MeshError(grpc.StatusCode.FAILED_PRECONDITION, INSUFFICIENT_FUNDS, "balance does not cover the amount",
                        metadata={"available_minor": "0"})
    tip_taken = min(tip_minor, available)
    amount_taken = available - tip_taken
    if amount_taken == 0:  # the amount comes first: a sale is never all tip
        amount_taken, tip_taken = available, 0
    return Money(amount_taken, amount.currency), (Money(tip_taken, amount.currency) if tip else None)


__all__ = ["CAPABILITIES", "PaytronixProvider"]
