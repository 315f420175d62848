"""The native provider: the gateway port over the in-house Redis ledger (NativeLedger).

Everything is native here: real holds, partial redeem, tip, reversal by reference id, cash-out,
exchange, activation, and allocation of e-gift numbers from a card program (see `allocate`).

The merchant's maximum card balance (`merchants.<m>.max_card_balance_minor`) is enforced by the
ledger itself on credit and activate: the cap goes into the script's ARGV header, so the check and
the credit are one atomic step and concurrent reloads cannot together exceed it (a check by the
caller before the call can be passed by two reloads at once). Vendor providers enforce their own
caps; the refund service's check before the call is the only one the mesh makes for them.
"""

from __future__ import annotations

from collections.abc import Mapping

from common.errors import invalid_argument
from common.money import Money
from gateway.adapters.native.allocation import AllocationStore, CardPrograms
from gateway.adapters.native.ledger import LedgerResult, NativeLedger
from gateway.ports import (
    Allocation,
    BalanceInfo,
    Capabilities,
    CardId,
    OperationResult,
    Reversal,
    UnsupportedOperations,
)

CAPABILITIES = Capabilities(
    hold_mode="native", partial_hold=True, partial_redeem=True, tip=True, reverse_by_reference=True,
    cash_out=True, exchange=True, allocate=True, claim_links=True, activate=True, credit=True,
    issue_value=False, pin_required=False,
)


def _number(card: CardId, field: str = "card") -> str:
    if card.kind != "card_number":
        raise invalid_argument(f"{field}.{card.kind}", "the native provider identifies cards by card_number")
    return card.value


def _result(card: CardId, result: LedgerResult, open_minor: int | None = None) -> OperationResult:
    return OperationResult(
        provider_transaction_id=result.transaction_id,
        amount=Money(result.amount_minor, result.currency),
        balance=Money(result.balance_minor, result.currency),
        masked_number=card.masked,
        replayed=bool(result.extra.get("replayed")),
        hold_id=result.hold_id,
        open=Money(open_minor, result.currency) if open_minor is not None else None,
    )


class NativeProvider(UnsupportedOperations):
    name = "native"
    capabilities = CAPABILITIES

    def __init__(
        self, ledger: NativeLedger, *, programs: CardPrograms | None = None,
        allocations: AllocationStore | None = None, max_balances: Mapping[str, int] | None = None,
    ) -> None:
        self._ledger = ledger
        self._programs = programs or CardPrograms({})
        self._allocations = allocations
        # merchant -> maximum card balance (minor units); a merchant not listed gets the ledger's cap.
        self._max_balances = max_balances or {}

    @classmethod
    def from_settings(cls, ledger: NativeLedger, redis, settings) -> "NativeProvider":
        """The provider with the card programs of every merchant's native profile
        (`providers[].options.programs`), an allocation store sealed with the card hash key, and
        every merchant's maximum card balance."""
        return cls(
            ledger, programs=CardPrograms.from_settings(settings),
            allocations=AllocationStore(redis, settings.card_hash_key),
            max_balances={m: s.max_card_balance_minor for m, s in settings.merchants.items()},
        )

    async def balance(self, merchant, card):
        state = await self._ledger.get_card(merchant, _number(card), pin=card.pin)
        return BalanceInfo(
            masked_number=state.masked_number, status=state.status,
            balance=Money(state.balance_minor, state.currency), held=Money(state.held_minor, state.currency),
        )

    async def place_hold(self, merchant, reference_id, card, amount, *, allow_partial, expires_at_ms):
        result = await self._ledger.hold(
            merchant, _number(card), amount.amount_minor, amount.currency,
            allow_partial=allow_partial, expires_at_ms=expires_at_ms, client_txn_id=reference_id, pin=card.pin,
        )
        return _result(card, result, open_minor=result.amount_minor)

    async def capture_hold(self, merchant, reference_id, card, hold_id, amount, *, release_remainder):
        result = await self._ledger.capture(
            merchant, _number(card), hold_id, amount.amount_minor,
            client_txn_id=reference_id, release_remainder=release_remainder,
        )
        return _result(card, result, open_minor=int(result.extra.get("open_minor", 0)))

    async def release_hold(self, merchant, reference_id, card, hold_id, amount):
        result = await self._ledger.release(
            merchant, _number(card), hold_id, amount.amount_minor if amount else None,
            client_txn_id=reference_id,
        )
        return _result(card, result, open_minor=int(result.extra.get("open_minor", 0)))

    async def redeem(self, merchant, reference_id, card, amount, *, tip, allow_partial):
        result = await self._ledger.redeem(
            merchant, _number(card), amount.amount_minor, amount.currency, partial=allow_partial,
            tip_minor=tip.amount_minor if tip else 0, client_txn_id=reference_id, pin=card.pin,
        )
        return _result(card, result)

    async def credit(self, merchant, reference_id, card, amount, *, kind):
        result = await self._ledger.credit(
            merchant, _number(card), amount.amount_minor, amount.currency, client_txn_id=reference_id, kind=kind,
            max_balance_minor=self._max_balances.get(merchant),
        )
        return _result(card, result)

    async def reverse(self, merchant, reference_id, card, *, provider_transaction_id, original_reference_id,
                      original_operation=""):
        result = await self._ledger.reverse(
            merchant, _number(card), transaction_id=provider_transaction_id, client_txn_id=original_reference_id
        )
        return Reversal(result=_result(card, result), reversed=result.amount_minor > 0 or bool(result.extra.get("reversed")))

    async def activate(self, merchant, reference_id, card, amount, *, promo_code):
        result = await self._ledger.activate(
            merchant, _number(card), amount.amount_minor, amount.currency, pin=card.pin, client_txn_id=reference_id,
            max_balance_minor=self._max_balances.get(merchant),
        )
        return _result(card, result)

    async def allocate(self, merchant, reference_id, program_id, amount):
        """A new inactive card of the program: a Luhn-valid number under the program's prefix and a
        random PIN / CVV2 (secrets module), provisioned in the ledger. Claim-link programs also
        activate and load it here (like Radial FundAndActivate) and hand out a claim URL and a
        proxy number instead of the number and PIN.

        Idempotent by reference_id: the credentials are written (sealed) BEFORE the card is
        provisioned, so a retry after a crash anywhere in here returns the same card, never a
        second one (AllocationStore)."""
        if self._allocations is None:
            return await super().allocate(merchant, reference_id, program_id, amount)
        program = self._programs.get(merchant, program_id)
        creds, replayed = await self._allocations.reserve(self._ledger, merchant, reference_id, program)
        await self._allocations.provision(self._ledger, merchant, creds, amount.currency)
        masked = CardId("card_number", creds.card_number).masked
        if not program.claim_links:
            return Allocation(
                result=OperationResult(
                    provider_transaction_id="", amount=Money(0, amount.currency),
                    masked_number=masked, balance=Money(0, amount.currency), status="inactive",
                    replayed=replayed,
                ),
                card_number=creds.card_number, pin=creds.pin, cvv2=creds.cvv2,
            )
        card = CardId("card_number", creds.card_number)
        loaded = await self._ledger.activate(
            merchant, creds.card_number, amount.amount_minor, amount.currency,
            client_txn_id=reference_id, max_balance_minor=self._max_balances.get(merchant),
        )
        return Allocation(
            result=_result(card, loaded), claim_url=creds.claim_url,
            proxy_number=creds.proxy_number, activated=True,
        )

    async def cash_out(self, merchant, reference_id, card):
        result = await self._ledger.cash_out(merchant, _number(card), client_txn_id=reference_id)
        return _result(card, result)

    async def exchange(self, merchant, reference_id, from_card, to_card):
        result = await self._ledger.exchange(
            merchant, _number(from_card, "from_card"), _number(to_card, "to_card"), client_txn_id=reference_id
        )
        return _result(from_card, result)
