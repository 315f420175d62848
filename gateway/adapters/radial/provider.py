"""The Radial adapter: the provider port over Radial storedvalue (client.py + translate.py).

Mapping (every choice the document leaves open is in gateway/adapters/README.md):
- balance = BalanceInquiry; activate = FundAndActivate Physical (PAN + PIN + amount, promo code);
  allocate = FundAndActivate Virtual (number + PIN, or claim link + proxy number: `activated`);
  credit = Fund (reload and refund alike); redeem = Redeem; reverse = RedeemVoid; cash_out = CashOut.
- No holds: `hold_mode` "shadow", the gateway's EmulatedHolds adds them per merchant profile.
- A `Timeout` answer applied nothing and spent its RequestId: the same request goes again with a
  new RequestId while the caller's deadline (and `options.timeout_retries`, default 3) allows.
- Redeem sends `OrderId` = the mesh reference (hashed when long) and journals OrderId + amount
  before sending; the provider transaction id of a redemption carries OrderId + amount, so
  RedeemVoid can name them by provider transaction id or, via the journal, by reference.
- `DuplicateRequestId` on a redeem's first RequestId means an earlier call with this reference
  reached Radial and its answer was lost: every open redemption under the reference is voided
  first, then the redeem is sent again under a new RequestId (exactly one ends up applied).
  Activation and cash-out read the card instead (active / deactivated = it applied, replayed;
  otherwise send again under a new RequestId). Fund and Virtual FundAndActivate raise ABORTED
  PROVIDER_OUTCOME_UNKNOWN (Radial offers no way to learn their outcome).
- Partial redeem: Radial redeems all or nothing; with `allow_partial` an InsufficientFunds answer
  is followed by a BalanceInquiry and a strict Redeem of what is there (never overspends).
"""

from __future__ import annotations

import secrets
import time

import grpc

from common.config import ProviderProfile
from common.context import current_call
from common.errors import (
    CARD_INACTIVE,
    INSUFFICIENT_FUNDS,
    TRANSACTION_NOT_FOUND,
    TRANSACTION_NOT_REVERSIBLE,
    TRANSACTION_REVERSED,
    MeshError,
    failed_precondition,
    invalid_argument,
)
from common.money import Money
from gateway.adapters.radial import translate as t
from gateway.adapters.radial import wire
from gateway.adapters.radial.client import RadialClient
from gateway.adapters.journal import (
    TOMBSTONE,
    JournalEntry,
    MemoryReferenceJournal,
    ReferenceJournal,
    begin,
    tombstone,
)
from gateway.adapters.vendor import VendorProvider
from gateway.ports import (
    ACTIVE,
    DEACTIVATED,
    Capabilities,
    OperationResult,
    Reversal,
    unsupported,
)

CAPABILITIES = Capabilities(
    hold_mode="shadow",  # no vendor holds: EmulatedHolds sets the merchant's mode
    partial_hold=True, partial_redeem=True, tip=False, reverse_by_reference=True, cash_out=True,
    exchange=False, allocate=True, claim_links=True, activate=True, credit=True, issue_value=False,
    pin_required=True,
)
# Voids needed to clear a reference's redemptions after a DuplicateRequestId (bounded loop).
_MAX_VOIDS = 8


def _remaining() -> float | None:
    try:
        return current_call().remaining()
    except MeshError:
        return None


class RadialProvider(VendorProvider):
    name = "radial"
    capabilities = CAPABILITIES

    def __init__(
        self, client: RadialClient, *, currency: str = "USD", journal: ReferenceJournal | None = None,
        timeout_retries: int = 3, promo_code: str = "",
    ) -> None:
        self._client = client
        self._currency = currency
        self._journal = journal or MemoryReferenceJournal()
        self._timeout_retries = max(0, timeout_retries)
        self._promo_code = promo_code

    @classmethod
    def from_profile(
        cls, profile: ProviderProfile, *, breaker=None, tracer_provider=None, transport=None, journal=None,
    ) -> "RadialProvider":
        options = profile.options
        return cls(
            RadialClient.from_profile(profile, breaker=breaker, tracer_provider=tracer_provider, transport=transport),
            currency=str(options.get("currency", "USD")), journal=journal,
            timeout_retries=int(options.get("timeout_retries", 3)), promo_code=str(options.get("promo_code", "")),
        )


    # -- the Timeout rule ------------------------------------------------------------------------

    async def _send(self, operation: str, build, first_request_id: str | None = None) -> tuple[str, wire.Reply]:
        """Send `build(request_id)`; on Radial's `Timeout` send it again with a new RequestId
        (nothing was applied) while time and `timeout_retries` allow. Returns the RequestId that
        got the final answer and that answer (Success or Fail)."""
        attempts = 0
        while True:
            rid = first_request_id if attempts == 0 and first_request_id else self._fresh_id(first_request_id)
            started = time.monotonic()
            reply = await self._client.commit(operation, build(rid))
            attempts += 1
            if reply.response_code != wire.TIMEOUT:
                return rid, reply
            remaining = _remaining()
            elapsed = time.monotonic() - started
            if attempts > self._timeout_retries or (remaining is not None and remaining < max(elapsed, 0.05)):
                raise t.timeout_error(operation, attempts)

    @staticmethod
    def _fresh_id(base: str | None) -> str:
        # Random: a retry (even after a crash) never collides with an id Radial already saw.
        prefix = t.wire_id(base)[:40] if base else "mesh"
        return f"{prefix}:{secrets.token_hex(6)}"

    async def _ok(self, operation: str, build, first_request_id: str | None = None) -> tuple[str, wire.Reply]:
        rid, reply = await self._send(operation, build, first_request_id)
        if reply.response_code != wire.SUCCESS:
            raise t.error(reply, operation)
        return rid, reply


    # -- the port ----------------------------------------------------------------------------------

    async def balance(self, merchant, card):
        rid, reply = await self._send("balance", lambda rid: t.balance_inquiry(rid, card))
        if reply.response_code == wire.SUCCESS:
            return t.balance_info(reply, card)
        error = t.error(reply, "balance")
        if error.reason == CARD_INACTIVE:
            return t.inactive_balance(card, reply.error_code or "", self._currency)
        raise error

    async def redeem(self, merchant, reference_id, card, amount, *, tip, allow_partial):
        if tip is not None and tip.amount_minor:
            raise unsupported(self.name, "tip")
        self._check_currency(amount)
        order_id = t.wire_id(reference_id)
        try:
            return await self._redeem(merchant, reference_id, card, amount, order_id)
        except MeshError as error:
            if not (allow_partial and error.reason == INSUFFICIENT_FUNDS):
                raise
        info = await self.balance(merchant, card)
        if info.status != ACTIVE:
            raise failed_precondition(CARD_INACTIVE, "card is not active")
        if info.balance.amount_minor <= 0:
            raise failed_precondition(INSUFFICIENT_FUNDS, "the card has no balance", available_minor="0")
        # Strict redeem of what is there: a concurrent spend makes it fail, never overspend.
        return await self._redeem(merchant, reference_id, card, Money(min(info.balance.amount_minor, amount.amount_minor),
                                                                      amount.currency), order_id, fresh=True)

    async def _redeem(self, merchant, reference_id, card, amount: Money, order_id: str, *, fresh: bool = False):
        # Write-ahead: the amount under this reference is known before Radial can apply it.
        earlier = await begin(self._journal, merchant, reference_id,
                              JournalEntry(order_id, amount.amount_minor, amount.currency))
        # The first RequestId is the reference's own, so a second call under it is recognised.
        first = None if fresh else t.request_id(reference_id, 0)
        rid, reply = await self._send("redeem", lambda rid: t.redeem(rid, card, amount, order_id), first)
        if reply.response_code == wire.FAIL and reply.error_code == "DuplicateRequestId" and not fresh:
            # An earlier call under this reference reached Radial; undo whatever it applied, then redo.
            if await self._earlier_stands(merchant, reference_id, card):
                return await self._replayed(merchant, card, earlier[0])
            rid, reply = await self._send("redeem", lambda rid: t.redeem(rid, card, amount, order_id), None)
        elif reply.response_code != wire.SUCCESS and earlier and not fresh:
            # A resend refused (the card was closed since, say): the first attempt may have
            # applied, and then it is the answer, not the refusal.
            if await self._earlier_stands(merchant, reference_id, card):
                return await self._replayed(merchant, card, earlier[0])
        if reply.response_code != wire.SUCCESS:
            raise t.error(reply, "redeem")
        return t.operation_result(reply, card.masked, reply.amount_redeemed, "AmountRedeemed",
                                  t.redemption_handle(order_id, amount))

    async def _earlier_stands(self, merchant, reference_id, card) -> bool:
        """Undo what earlier calls under this reference applied; True when one applied and can no
        longer be undone (Radial refuses the void: the card changed since), so it stands."""
        try:
            await self._void_all(merchant, reference_id, card)
        except MeshError as error:
            if error.code == grpc.StatusCode.FAILED_PRECONDITION:
                return True
            raise
        return False

    async def _replayed(self, merchant, card, entry: JournalEntry) -> OperationResult:
        """The answer of an earlier redemption that stands, from the journal."""
        amount = Money(entry.amount_minor, entry.currency)
        info = await self.balance(merchant, card)
        return OperationResult(t.redemption_handle(entry.order_id, amount), amount, card.masked,
                               balance=info.balance, status=info.status, replayed=True)

    async def _void(self, card, order_id: str, amount: Money) -> tuple[str, wire.Reply]:
        return await self._send("reverse", lambda rid: t.redeem_void(rid, card, amount, order_id), None)

    async def _void_all(self, merchant, reference_id, card, entries=None) -> Money | None:
        """Void every open redemption journaled under the reference; the total voided, or None
        when nothing was open (RedemptionNotFound / already voided for each)."""
        voided: Money | None = None
        seen: set[tuple[str, int, str]] = set()
        if entries is None:
            entries = [e for e in await self._journal.entries(merchant, reference_id) if e.order_id != TOMBSTONE]
        for entry in entries:
            key = (entry.order_id, entry.amount_minor, entry.currency)
            if key in seen:
                continue
            seen.add(key)
            amount = Money(entry.amount_minor, entry.currency)
            for _ in range(_MAX_VOIDS):
                _, reply = await self._void(card, entry.order_id, amount)
                if reply.response_code != wire.SUCCESS:
                    error = t.error(reply, "reverse")
                    if error.reason in (TRANSACTION_NOT_FOUND, TRANSACTION_REVERSED):
                        break
                    raise error
                voided = amount if voided is None else voided + amount
        return voided

    async def reverse(self, merchant, reference_id, card, *, provider_transaction_id, original_reference_id,
                      original_operation=""):
        zero = Money(0, self._currency)
        if provider_transaction_id:
            handle = t.parse_redemption_handle(provider_transaction_id)
            if handle is None:
                raise failed_precondition(
                    TRANSACTION_NOT_REVERSIBLE, "radial voids redemptions only (RedeemVoid)", provider="radial")
            rid, reply = await self._void(card, handle.order_id, handle.amount)
            if reply.response_code == wire.SUCCESS:
                return Reversal(t.operation_result(reply, card.masked, reply.amount_voided, "AmountVoided", rid), True)
            error = t.error(reply, "reverse")
            if error.reason == TRANSACTION_REVERSED:
                # A resent reversal: undone once already.
                return Reversal(OperationResult("", handle.amount, card.masked, replayed=True), True)
            if error.reason == TRANSACTION_NOT_FOUND:
                return Reversal(OperationResult("", Money(0, handle.amount.currency), card.masked), False)
            raise error
        if not original_reference_id:
            raise invalid_argument("target", "set provider_transaction_id or original_reference_id")
        # By reference (the timeout case): block the reference, then void what the journal says
        # was sent under it. Nothing journaled = nothing was ever sent, and now never will be.
        sent = await tombstone(self._journal, merchant, original_reference_id, self._currency)
        voided = await self._void_all(merchant, original_reference_id, card, sent) if sent else None
        if voided is None:
            return Reversal(OperationResult("", zero, card.masked), False)
        return Reversal(OperationResult("", voided, card.masked), True)

    async def credit(self, merchant, reference_id, card, amount, *, kind):
        # Radial has one way to add value to an active card (Fund); a refund is a Fund.
        self._check_currency(amount)
        order_id = t.wire_id(reference_id)
        rid, reply = await self._ok("credit", lambda rid: t.fund(rid, card, amount, order_id), t.request_id(reference_id, 0))
        return t.operation_result(reply, card.masked, reply.amount_funded, "AmountFunded", rid)

    async def activate(self, merchant, reference_id, card, amount, *, promo_code):
        self._check_currency(amount)
        order_id = t.wire_id(reference_id)

        def build(rid):
            return t.activate_physical(rid, card, amount, promo_code or self._promo_code, order_id)

        rid, reply = await self._send("activate", build, t.request_id(reference_id, 0))
        if _duplicate(reply):
            # An earlier call under this reference reached Radial and its reply was lost. The card
            # tells what happened: still inactive = it did not apply (send again); active = it did.
            info = await self.balance(merchant, card)
            if info.status == ACTIVE:
                return OperationResult(rid, amount, card.masked, balance=info.balance, replayed=True)
            rid, reply = await self._send("activate", build, None)
        if reply.response_code != wire.SUCCESS:
            raise t.error(reply, "activate")
        return t.operation_result(reply, card.masked, reply.amount_funded, "AmountFunded", rid)

    async def allocate(self, merchant, reference_id, program_id, amount):
        """FundAndActivate Virtual: Radial creates, activates and loads the card in one call
        (`program_id` is not on Radial's wire: the store decides number+PIN or claim link; a store
        that needs a promo code gets `options.promo_code`)."""
        self._check_currency(amount)
        order_id = t.wire_id(reference_id)
        rid, reply = await self._ok(
            "allocate", lambda rid: t.activate_virtual(rid, amount, self._promo_code, order_id),
            t.request_id(reference_id, 0),
        )
        return t.virtual_allocation(reply, rid)

    async def cash_out(self, merchant, reference_id, card):
        order_id = t.wire_id(reference_id)

        def build(rid):
            return t.cash_out(rid, card, order_id)

        rid, reply = await self._send("cash_out", build, t.request_id(reference_id, 0))
        if _duplicate(reply):
            # A lost reply of an earlier call under this reference: CashOut deactivates, so a
            # deactivated card means it applied (Radial cannot say how much it removed).
            info = await self.balance(merchant, card)
            if info.status == DEACTIVATED:
                return OperationResult(rid, Money(0, info.balance.currency), card.masked,
                                       balance=info.balance, status=DEACTIVATED, replayed=True)
            rid, reply = await self._send("cash_out", build, None)
        if reply.response_code != wire.SUCCESS:
            raise t.error(reply, "cash_out")
        return t.operation_result(reply, card.masked, reply.amount_cashed_out, "AmountCashedOut", rid, status=DEACTIVATED)


def _duplicate(reply: wire.Reply) -> bool:
    return reply.response_code == wire.FAIL and reply.error_code == "DuplicateRequestId"
