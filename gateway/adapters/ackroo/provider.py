"""The Ackroo adapter: the provider port over Ackroo's gift API (client.py + translate.py).

issue = activate (CardAlreadyActive on an active card), debit (strict) / debit/partial (Partial
Payment mode) by allow_partial, credit = reload / refund by kind, debit/cash = cash_out, reversal
by transaction_number. No holds (emulated by gateway/emulation.py), no tip, no exchange, no
allocation, no reversal by our reference: Ackroo takes no caller id, so after a timeout the outcome
is unknown and stays with the intent resolver (see README "Ackroo timeouts").

Nothing deduplicates a resent Ackroo write, so each write is sent at most once per reference: the
adapter journals it before sending, and a later call under the same reference whose earlier send
may have arrived is not sent again but answered "outcome unknown" (left to the resolver and an
operator). Only an earlier send that certainly did not arrive (refused before the application:
connection refused, 502/503) lets a retry send it.
"""

from __future__ import annotations

import grpc

from common.config import ProviderProfile
from common.errors import INSUFFICIENT_FUNDS, MeshError
from common.money import Money
from gateway.adapters.ackroo import translate as t
from gateway.adapters.ackroo import wire
from gateway.adapters.ackroo.client import AckrooClient
from gateway.adapters.http import provider_timeout, wire_amount
from gateway.adapters.journal import JournalEntry, MemoryReferenceJournal, ReferenceJournal
from gateway.adapters.vendor import VendorProvider
from gateway.ports import (
    ACTIVE,
    INACTIVE,
    BalanceInfo,
    Capabilities,
    OperationResult,
    Reversal,
    unsupported,
)

CAPABILITIES = Capabilities(
    hold_mode="shadow",  # no vendor holds: EmulatedHolds sets the merchant's mode
    partial_hold=True, partial_redeem=True, tip=False, reverse_by_reference=False, cash_out=True,
    exchange=False, allocate=False, claim_links=False, activate=True, credit=True, issue_value=False,
    pin_required=False,
)


# Journal marker: the send under this reference certainly did not reach Ackroo's application.
_NOT_APPLIED = ":not_applied"


class AckrooProvider(VendorProvider):
    name = "ackroo"
    capabilities = CAPABILITIES

    def __init__(self, client: AckrooClient, *, device_id: str, clerk_id: str, currency: str = "USD",
                 journal: ReferenceJournal | None = None) -> None:
        if not device_id or len(device_id) > wire.MAX_DEVICE_ID or len(clerk_id) > wire.MAX_CLERK_ID:
            raise ValueError("provider ackroo: device_id is 1-64 and clerk_id up to 100 characters")
        self._client = client
        self._device = device_id
        self._clerk = clerk_id
        self._currency = currency
        self._journal = journal or MemoryReferenceJournal()

    @classmethod
    def from_profile(cls, profile: ProviderProfile, *, breaker=None, tracer_provider=None, transport=None, journal=None):
        options = profile.options
        if "device_id" not in options:
            raise ValueError("provider ackroo: options.device_id is required")
        return cls(
            AckrooClient.from_profile(profile, breaker=breaker, tracer_provider=tracer_provider, transport=transport),
            device_id=str(options["device_id"]), clerk_id=str(options.get("clerk_id", "giftcard-mesh")),
            currency=str(options.get("currency", "USD")), journal=journal,
        )

    def _amount_request(self, card, amount: Money) -> dict:
        self._check_currency(amount)
        return {"device_id": self._device, "cardnumber": t.cardnumber(card), "amount": wire_amount(amount),
                "clerk_id": self._clerk}

    async def _write(self, merchant, reference_id: str, operation: str, path: str, payload: dict, card
                     ) -> OperationResult:
        earlier = await self._journal.entries(merchant, reference_id)
        sent = sum(1 for e in earlier if e.order_id == operation)
        if sent > sum(1 for e in earlier if e.order_id == operation + _NOT_APPLIED):
            # An earlier send may have been applied and a second one could apply again.
            raise provider_timeout(self.name, operation, code=grpc.StatusCode.UNAVAILABLE)
        await self._journal.record(merchant, reference_id, JournalEntry(operation, 0, self._currency))
        try:
            reply = await self._client.write(operation, path, payload)
        except MeshError as error:
            if error.metadata.get("outcome") == "not_applied":
                await self._journal.record(merchant, reference_id,
                                           JournalEntry(operation + _NOT_APPLIED, 0, self._currency))
            raise
        body = t.success_or_raise(operation, reply)
        return t.to_result(operation, body, card, self._currency)

    async def balance(self, merchant, card):
        payload = {"device_id": self._device, "cardnumber": t.cardnumber(card)}
        body = t.success_or_raise("balance", await self._client.card(payload))
        return BalanceInfo(
            masked_number=card.masked, status=ACTIVE if body.get("active") is True else INACTIVE,
            balance=t.balance_of(body, self._currency), held=Money(0, self._currency),
        )

    async def redeem(self, merchant, reference_id, card, amount, *, tip, allow_partial):
        if tip is not None and tip.amount_minor > 0:
            raise unsupported(self.name, "tip")
        path = wire.DEBIT_PARTIAL if allow_partial else wire.DEBIT
        result = await self._write(merchant, reference_id, "redeem", path, self._amount_request(card, amount), card)
        if result.amount.amount_minor == 0:
            # Partial Payment mode never denies; a $0.00 debit is a decline for the mesh.
            raise MeshError(grpc.StatusCode.FAILED_PRECONDITION, INSUFFICIENT_FUNDS, "card has no balance",
                            metadata={"available_minor": "0", "provider": self.name})
        return result

    async def credit(self, merchant, reference_id, card, amount, *, kind):
        path = wire.REFUND if kind == "refund" else wire.CREDIT
        return await self._write(merchant, reference_id, "credit", path, self._amount_request(card, amount), card)

    async def activate(self, merchant, reference_id, card, amount, *, promo_code):
        return await self._write(merchant, reference_id, "activate", wire.ISSUE, self._amount_request(card, amount),
                                 card)

    async def cash_out(self, merchant, reference_id, card):
        payload = {"device_id": self._device, "cardnumber": t.cardnumber(card), "clerk_id": self._clerk}
        return await self._write(merchant, reference_id, "cash_out", wire.DEBIT_CASH, payload, card)

    async def reverse(self, merchant, reference_id, card, *, provider_transaction_id, original_reference_id,
                      original_operation=""):
        if not provider_transaction_id:
            # Ackroo has no caller reference: what a timed-out call did cannot be looked up. The
            # intent stays unresolved (the resolver retries, an operator reconciles from Ackroo's
            # report), rather than a guessed compensation racing other spending on the card.
            error = unsupported(self.name, "reverse by original_reference_id")
            error.metadata["outcome"] = "unknown"
            raise error
        payload = {"device_id": self._device, "transaction_number": provider_transaction_id}
        reply = await self._client.reversal(payload)
        if t.failure_name(reply) == "TransactionAlreadyReversed":
            zero = Money(0, self._currency)
            return Reversal(OperationResult("", zero, card.masked, replayed=True), reversed=True)
        body = t.success_or_raise("reverse", reply)
        return Reversal(t.to_result("reverse", body, card, self._currency), reversed=True)


__all__ = ["CAPABILITIES", "AckrooProvider"]
