"""The Paytronix adapter: the provider port over Paytronix's gift service (client.py + translate.py).

Paytronix has no holds (the gateway emulates them, gateway/emulation.py), no partial redeem (emulated
here: a balance read, then a strict redeem of what is there, so it can never overspend), sells
(= activate) and reloads (= credit, both kinds), redeems with a tip, cashes out, exchanges and
reverses by pxTransactionId or by our reference (externalTransactionId = reference_id).
"""

from __future__ import annotations

import dataclasses

from common.config import ProviderProfile
import grpc

from common.errors import CARD_INACTIVE, INSUFFICIENT_FUNDS, MeshError, invalid_argument
from common.money import Money
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
                 pos: dict[str, str] | None = None) -> None:
        self._client = client
        self._merchant_id = merchant_id
        self._store = store_code
        self._currency = currency
        self._pos = dict(pos or {})

    @classmethod
    def from_profile(cls, profile: ProviderProfile, *, breaker=None, tracer_provider=None, transport=None):
        options = profile.options
        if "merchant_id" not in options or "store_code" not in options:
            raise ValueError("provider paytronix: options.merchant_id and options.store_code are required")
        pos = {k: str(options[o]) for o, k in (("terminal_id", "terminalId"), ("cashier", "cashier")) if o in options}
        return cls(
            PaytronixClient.from_profile(profile, breaker=breaker, tracer_provider=tracer_provider, transport=transport),
            merchant_id=int(options["merchant_id"]), store_code=str(options["store_code"]),
            currency=str(options.get("currency", "USD")), pos=pos,
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
        if allow_partial:
            amount, tip = await self._partial(merchant, card, amount, tip)
        payload = {**self._base(), "cardInfo": t.card_info(card), **t.amount_fields(amount, tip),
                   "externalTransactionId": t.external_id(reference_id)}
        body = t.success_or_raise("redeem", await self._client.redeem(payload))
        return t.to_result("redeem", body, card, self._currency)

    async def _partial(self, merchant, card, amount: Money, tip: Money | None) -> tuple[Money, Money | None]:
        """Paytronix redeems all or nothing: take min(amount + tip, balance), tip first kept whole.
        The redeem after this read is strict, so a concurrent spend makes it fail, never overspend."""
        info = await self.balance(merchant, card)
        if info.status != ACTIVE:
            raise MeshError(grpc.StatusCode.FAILED_PRECONDITION, CARD_INACTIVE, "card is not active")
        available = info.balance.amount_minor
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

    async def credit(self, merchant, reference_id, card, amount, *, kind):
        # Paytronix has one way to add value to an active card (reload); a refund is a reload.
        self._check_currency(amount)
        payload = {**self._base(), "cardInfo": t.card_info(card), **t.amount_fields(amount),
                   "externalTransactionId": t.external_id(reference_id)}
        body = t.success_or_raise("credit", await self._client.reload(payload))
        return t.to_result("credit", body, card, self._currency)

    async def activate(self, merchant, reference_id, card, amount, *, promo_code):
        self._check_currency(amount)
        payload = {**self._base(), "cardInfo": t.card_info(card), **t.amount_fields(amount),
                   "externalTransactionId": t.external_id(reference_id)}
        body = t.success_or_raise("activate", await self._client.sell(payload))
        return t.to_result("activate", body, card, self._currency)

    async def cash_out(self, merchant, reference_id, card):
        payload = {**self._base(), "cardInfo": t.card_info(card), "externalTransactionId": t.external_id(reference_id)}
        body = t.success_or_raise("cash_out", await self._client.cash_out(payload))
        return t.to_result("cash_out", body, card, self._currency)

    async def exchange(self, merchant, reference_id, from_card, to_card):
        payload = {**self._base(), "cardInfo": t.card_info(from_card, "from_card"),
                   "newCardInfo": t.card_info(to_card, "to_card")}
        body = t.success_or_raise("exchange", await self._client.exchange(payload))
        moved = t.to_result("exchange", body, to_card, self._currency)
        # The reply describes the new card; the result speaks of the old one, now empty.
        return dataclasses.replace(moved, masked_number=from_card.masked, balance=Money(0, self._currency))

    async def reverse(self, merchant, reference_id, card, *, provider_transaction_id, original_reference_id):
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


__all__ = ["CAPABILITIES", "PaytronixProvider"]
