"""Holds, redemptions, voids and reversals over the gateway, with the mesh's own records.

The order of every money movement (DESIGN.md section 5):

1. derive the ids from (merchant, rpc, request_id): mesh id (hold_id / transaction_id) and the
   provider reference_id, so a retry after a crash lands on the same records and the provider
   replays instead of applying twice;
2. bind the caller's client_transaction_id (if any) and write the record / intent down;
3. call the gateway with the reference_id;
4. record the outcome. A definite refusal marks the record declined and the intent failed; a
   transient failure (timeout, unavailable) leaves the intent pending for the caller's retry or the
   resolver, which reverses it by reference_id.

Reversal references are derived from the target (hold or transaction), not from the request, so
two voids of one redemption under different request_ids send one reversal: one credit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from common.errors import (
    AMOUNT_EXCEEDS_OPEN,
    CURRENCY_MISMATCH,
    HOLD_EXPIRED,
    HOLD_NOT_OPEN,
    TRANSACTION_NOT_REVERSIBLE,
    TRANSACTION_REVERSED,
    MeshError,
    failed_precondition,
    invalid_argument,
)
from common.idempotency import TRANSIENT_CODES
from common.money import Money
from giftcard.gateway.v1 import gateway_pb2
from giftcard.type.v1 import card_pb2, money_pb2
from services.shared import intents as intent_states
from services.shared import transactions as txn_states
from services.shared.background import fresh_budget
from services.shared.holds import HoldRecord, HoldStore, now_ms
from services.shared.intents import IntentLog, resolve_pending
from services.shared.keys import IdDeriver
from services.shared.transactions import TransactionRecord, TransactionStore

log = logging.getLogger("giftcard.authorization")

# Budget for work that must finish although the caller stopped waiting (compensation, reversal).
COMPENSATION_SECONDS = 30.0
HOLD_PREFIX = "hld_"


def is_final(error: MeshError) -> bool:
    """A definite answer from the provider (nothing moved); otherwise the outcome is unknown."""
    return not error.retryable and error.code not in TRANSIENT_CODES


def money_pb(amount_minor: int, currency: str) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount_minor, currency_code=currency)


def reversed_error() -> MeshError:
    return failed_precondition(TRANSACTION_REVERSED, "this operation was reversed; use a new request_id")


@dataclass(frozen=True)
class Authorization:
    hold: HoldRecord
    requested: Money


@dataclass(frozen=True)
class Redemption:
    transaction: TransactionRecord
    requested: Money
    partial: bool


@dataclass(frozen=True)
class Reversal:
    reversed: bool  # False: nothing had arrived, now blocked
    amount: Money | None
    transaction: TransactionRecord | None = None
    hold: HoldRecord | None = None


class AuthorizationLogic:
    def __init__(self, gateway, holds: HoldStore, transactions: TransactionStore, intents: IntentLog,
                 ids: IdDeriver) -> None:
        self._gateway = gateway
        self.holds = holds
        self.transactions = transactions
        self.intents = intents
        self.ids = ids

    # -- Authorize ------------------------------------------------------------------------------

    async def authorize(
        self, merchant: str, request_id: str, *, order_id: str, card: card_pb2.CardRef, masked: str,
        amount: Money, allow_partial: bool, ttl_ms: int, client_transaction_id: str,
    ) -> Authorization:
        hold_id = self.ids.derive("hld", merchant, "Authorize", request_id)
        reference = self.ids.derive("ref", merchant, "Authorize", request_id)
        if client_transaction_id:
            await self.transactions.claim_client_id(
                merchant, client_transaction_id, target_kind="hold", target_id=hold_id,
                reference_id=reference, card=card,
            )
        # A retry after a crash keeps the expiry first sent (the provider replays that hold):
        # `open` answers the params as first written, in the same round trip.
        state, params = await self.intents.open(
            merchant, reference, "hold", card, owner_kind="hold", owner_id=hold_id,
            params={"amount": amount.amount_minor, "currency": amount.currency, "expires_at_ms": now_ms() + ttl_ms},
        )
        if state in (intent_states.RESOLVING, intent_states.REVERSED):
            raise reversed_error()
        expires_at_ms = int(params["expires_at_ms"]) if "expires_at_ms" in params else now_ms() + ttl_ms
        expire_time = timestamp_of(expires_at_ms)
        try:
            reply = await self._gateway.PlaceHold(gateway_pb2.PlaceHoldRequest(
                reference_id=reference, card=card, amount=money_pb(amount.amount_minor, amount.currency),
                allow_partial=allow_partial, expire_time=expire_time,
            ))
        except MeshError as error:
            if is_final(error):
                await self.intents.finish(merchant, reference, intent_states.FAILED)
                if client_transaction_id:  # nothing was held: the refusal leaves no binding
                    await self.transactions.release_client_id(merchant, client_transaction_id, hold_id)
            raise
        result = reply.result
        # The record as stored (this attempt's, or an earlier attempt's on a retry): the response
        # is built from it without reading it back.
        _, hold = await self.holds.create_record(
            merchant, hold_id=hold_id, order_id=order_id, card=card,
            masked=result.masked_number or masked, provider=result.provider,
            provider_hold_id=reply.provider_hold_id, hold_mode=reply.hold_mode,
            currency=result.amount.currency_code or amount.currency, authorized=result.amount.amount_minor,
            expires_at_ms=expires_at_ms, client_transaction_id=client_transaction_id, reference_id=reference,
        )
        done, _ = await self.intents.finish(
            merchant, reference, intent_states.DONE, (intent_states.PENDING, intent_states.DONE)
        )
        if not done:
            # The resolver took this intent while the provider call ran: it reverses the hold.
            await self._close_hold_record(merchant, hold_id, reference)
            raise reversed_error()
        return Authorization(hold, amount)

    # -- ReverseAuthorization -------------------------------------------------------------------

    async def release(
        self, merchant: str, hold_id: str, amount: Money | None, operation: str
    ) -> tuple[HoldRecord, Money]:
        """Release `amount` (None: all that is open) of a hold under operation reference
        `operation`. Returns the hold after it and the amount released."""
        hold = await self.holds.get(merchant, hold_id)
        if amount is not None and amount.currency != hold.currency:
            raise invalid_argument("amount.currency_code", f"the hold is in {hold.currency}", CURRENCY_MISMATCH)
        try:
            op = await self.holds.begin(merchant, hold_id, operation, "release",
                                        None if amount is None else amount.amount_minor)
        except MeshError as error:
            if error.reason == AMOUNT_EXCEEDS_OPEN:
                open_minor = error.metadata.get("open_minor", "?")
                error.message = f"release exceeds the hold's open amount ({open_minor} minor units)"
            raise
        if op.state == "done":
            return await self.holds.get(merchant, hold_id), Money(op.moved, hold.currency)
        card = await self.holds.card(merchant, hold_id)
        await self.intents.begin(merchant, operation, "release", card, owner_kind="hold", owner_id=hold_id,
                                 params={"amount": op.amount, "provider_hold_id": hold.provider_hold_id})
        with fresh_budget(COMPENSATION_SECONDS):
            try:
                reply = await self._gateway.ReleaseHold(gateway_pb2.ReleaseHoldRequest(
                    reference_id=operation, card=card, provider_hold_id=hold.provider_hold_id,
                    amount=money_pb(op.amount, hold.currency),
                ))
            except MeshError as error:
                if is_final(error):
                    await self.holds.abort(merchant, hold_id, operation)
                    await self.intents.finish(merchant, operation, intent_states.FAILED)
                raise
        committed = await self.holds.commit(merchant, hold_id, operation, reply.result.amount.amount_minor)
        await self.intents.finish(merchant, operation, intent_states.DONE)
        return await self.holds.get(merchant, hold_id), Money(committed.moved, hold.currency)

    async def _close_hold_record(self, merchant: str, hold_id: str, reference: str) -> None:
        """The provider hold was reversed by reference: show the mesh record released too."""
        operation = self.ids.derive("rsv", merchant, reference)
        try:
            op = await self.holds.begin(merchant, hold_id, operation, "release", None)
        except MeshError:
            return  # nothing open (or no record): nothing to mirror
        await self.holds.commit(merchant, hold_id, operation, op.amount)

    # -- Redeem ---------------------------------------------------------------------------------

    async def redeem(
        self, merchant: str, request_id: str, *, order_id: str, card: card_pb2.CardRef, masked: str,
        amount: Money, tip: Money | None, partial: bool, client_transaction_id: str,
        rpc: str = "Redeem", checkout_id: str = "",
    ) -> Redemption:
        transaction_id = self.ids.derive("txn", merchant, rpc, request_id)
        reference = self.ids.derive("ref", merchant, rpc, request_id)
        tip_minor = tip.amount_minor if tip else 0
        requested = Money(amount.amount_minor + tip_minor, amount.currency)
        if client_transaction_id:
            await self.transactions.claim_client_id(
                merchant, client_transaction_id, target_kind="redemption", target_id=transaction_id,
                reference_id=reference, card=card,
            )
        state = await self.transactions.create_pending(
            merchant, transaction_id=transaction_id, card=card, masked=masked, currency=amount.currency,
            amount=amount.amount_minor, tip=tip_minor, order_id=order_id,
            client_transaction_id=client_transaction_id, reference_id=reference, checkout_id=checkout_id,
        )
        if state == txn_states.APPROVED:
            return Redemption(await self.transactions.get(merchant, transaction_id), requested, partial)
        if state in (txn_states.REVERSING, txn_states.REVERSED):
            raise reversed_error()
        intent_state = await self.intents.begin(
            merchant, reference, "redeem", card, owner_kind="txn", owner_id=transaction_id,
            params={"amount": requested.amount_minor, "currency": amount.currency},
        )
        if intent_state in (intent_states.RESOLVING, intent_states.REVERSED):
            raise reversed_error()
        try:
            reply = await self._gateway.Redeem(gateway_pb2.RedeemRequest(
                reference_id=reference, card=card, amount=money_pb(amount.amount_minor, amount.currency),
                tip=money_pb(tip_minor, amount.currency) if tip else None, allow_partial=partial,
            ))
        except MeshError as error:
            if is_final(error):
                await self.transactions.transition(merchant, transaction_id, (txn_states.PENDING,),
                                                   txn_states.DECLINED, decline_reason=error.reason)
                await self.intents.finish(merchant, reference, intent_states.FAILED)
            raise
        result = reply.result
        debited = result.amount.amount_minor
        moved, current = await self.transactions.transition(
            merchant, transaction_id, (txn_states.PENDING,), txn_states.APPROVED,
            redeemed=debited, redeemed_tip=max(debited - amount.amount_minor, 0),
            balance_after=result.balance.amount_minor, provider=result.provider,
            provider_transaction_id=result.provider_transaction_id,
            masked=result.masked_number or masked,
        )
        if not moved and current != txn_states.APPROVED:
            raise reversed_error()  # reversed by client id while the provider call ran
        done, _ = await self.intents.finish(
            merchant, reference, intent_states.DONE, (intent_states.PENDING, intent_states.DONE)
        )
        if not done:
            raise reversed_error()  # the resolver is reversing it
        return Redemption(await self.transactions.get(merchant, transaction_id), requested, partial)

    # -- VoidRedemption / ReverseTransaction ----------------------------------------------------

    async def void_redemption(self, merchant: str, transaction_id: str) -> Reversal:
        record = await self.transactions.get(merchant, transaction_id)
        if record.kind != txn_states.REDEMPTION:
            raise failed_precondition(TRANSACTION_NOT_REVERSIBLE, "only a redemption can be voided")
        if record.state == txn_states.DECLINED:
            raise failed_precondition(TRANSACTION_NOT_REVERSIBLE, "a declined redemption moved no money")
        return await self._reverse_transaction(merchant, record)

    async def _reverse_transaction(self, merchant: str, record: TransactionRecord) -> Reversal:
        """Undo a redemption exactly once, whatever its state (approved, or pending: the timeout
        path, reversed by its reference). Repeats answer the first reversal's outcome."""
        if record.state == txn_states.REVERSED:
            return _reversal_of(record)
        if record.state == txn_states.DECLINED:
            return Reversal(False, Money(0, record.currency), record)
        reversal = self.ids.derive("rev", merchant, record.transaction_id)
        previous = record.state
        moved, current = await self.transactions.transition(
            merchant, record.transaction_id, (txn_states.APPROVED, txn_states.PENDING, txn_states.REVERSING),
            txn_states.REVERSING, unless_refunded=True, reversal_reference=reversal, reversed_from=previous,
        )
        if not moved:
            return _reversal_of(await self.transactions.get(merchant, record.transaction_id))
        card = await self.transactions.card(merchant, record.transaction_id)
        await self.intents.begin(merchant, reversal, "reverse", card, owner_kind="txn",
                                 owner_id=record.transaction_id)
        request = gateway_pb2.ReverseRequest(reference_id=reversal, card=card)
        if record.provider_transaction_id:
            request.provider_transaction_id = record.provider_transaction_id
        else:
            request.original_reference_id = record.reference_id
        with fresh_budget(COMPENSATION_SECONDS):
            try:
                reply = await self._gateway.Reverse(request)
            except MeshError as error:
                if is_final(error):
                    back = previous if previous != txn_states.REVERSING else txn_states.APPROVED
                    await self.transactions.transition(merchant, record.transaction_id,
                                                       (txn_states.REVERSING,), back)
                    await self.intents.finish(merchant, reversal, intent_states.FAILED)
                raise
        await self.transactions.transition(
            merchant, record.transaction_id, (txn_states.REVERSING,), txn_states.REVERSED,
            reversed_amount=reversed_amount(reply, record.redeemed),
            reversed_ms=now_ms(), reversal_found=int(reply.reversed),
        )
        await self.intents.finish(merchant, reversal, intent_states.DONE)
        return _reversal_of(await self.transactions.get(merchant, record.transaction_id))

    async def reverse_transaction(
        self, merchant: str, *, transaction_id: str = "", client_transaction_id: str = ""
    ) -> Reversal:
        if transaction_id:
            if transaction_id.startswith(HOLD_PREFIX):
                return await self._reverse_hold(merchant, transaction_id)
            return await self._reverse_transaction(merchant, await self.transactions.get(merchant, transaction_id))
        binding = await self.transactions.tombstone_or_binding(merchant, client_transaction_id)
        if binding.tombstone:
            return Reversal(False, None)
        if binding.target_kind == "hold":
            try:
                await self.holds.get(merchant, binding.target_id)
            except MeshError:
                return await self._reverse_by_reference(merchant, client_transaction_id, binding.reference_id)
            return await self._reverse_hold(merchant, binding.target_id)
        try:
            record = await self.transactions.get(merchant, binding.target_id)
        except MeshError:
            return await self._reverse_by_reference(merchant, client_transaction_id, binding.reference_id)
        return await self._reverse_transaction(merchant, record)

    async def _reverse_hold(self, merchant: str, hold_id: str) -> Reversal:
        """Release everything open; the operation reference is derived from the hold, so a
        repeat answers what the first reversal released."""
        operation = self.ids.derive("rev", merchant, hold_id)
        try:
            hold, released = await self.release(merchant, hold_id, None, operation)
        except MeshError as error:
            if error.reason in (HOLD_NOT_OPEN, HOLD_EXPIRED):
                hold = await self.holds.get(merchant, hold_id)
                return Reversal(False, Money(0, hold.currency), hold=hold)
            raise
        return Reversal(True, released, hold=hold)

    async def _reverse_by_reference(self, merchant: str, client_transaction_id: str, reference: str) -> Reversal:
        """The operation was bound but its record never written (a crash before the provider
        call, or during it): reverse it at the provider by its reference."""
        card = await self.transactions.client_card(merchant, client_transaction_id)
        with fresh_budget(COMPENSATION_SECONDS):
            reply = await self._gateway.Reverse(gateway_pb2.ReverseRequest(
                reference_id=self.ids.derive("rev", merchant, reference), card=card,
                original_reference_id=reference,
            ))
        amount = reply.result.amount
        moved = Money(amount.amount_minor, amount.currency_code) if amount.currency_code else None
        return Reversal(reply.reversed, moved)

    # -- resolver -------------------------------------------------------------------------------

    async def resolve_pending(self, merchant: str, older_than_seconds: float) -> dict[str, int]:
        """Settle intents of `merchant` whose outcome was never recorded (call inside a call
        context for the merchant; see services.shared.background.merchant_call)."""

        async def reverse(intent, card) -> None:
            reply = await self._gateway.Reverse(gateway_pb2.ReverseRequest(
                reference_id=self.ids.derive("rev", merchant, intent.reference_id), card=card,
                original_reference_id=intent.reference_id,
                original_operation=(gateway_pb2.ORIGINAL_OPERATION_HOLD if intent.operation == "hold"
                                    else gateway_pb2.ORIGINAL_OPERATION_UNSPECIFIED),
            ))
            if intent.owner_kind == "txn":
                record = await self.transactions.get(merchant, intent.owner_id)
                amount = reversed_amount(reply, record.redeemed)
                await self.transactions.transition(
                    merchant, intent.owner_id, (txn_states.PENDING, txn_states.APPROVED), txn_states.REVERSED,
                    reversed_amount=amount, reversed_ms=now_ms(), reversal_found=int(reply.reversed),
                )
            elif intent.owner_kind == "hold":
                await self._close_hold_record(merchant, intent.owner_id, intent.reference_id)

        async def confirm_release(intent, card) -> None:
            hold = await self.holds.get(merchant, intent.owner_id)
            reply = await self._gateway.ReleaseHold(gateway_pb2.ReleaseHoldRequest(
                reference_id=intent.reference_id, card=card, provider_hold_id=hold.provider_hold_id,
                amount=money_pb(int(intent.params["amount"]), hold.currency),
            ))
            await self.holds.commit(merchant, intent.owner_id, intent.reference_id, reply.result.amount.amount_minor)

        async def confirm_reverse(intent, card) -> None:
            record = await self.transactions.get(merchant, intent.owner_id)
            request = gateway_pb2.ReverseRequest(reference_id=intent.reference_id, card=card)
            if record.provider_transaction_id:
                request.provider_transaction_id = record.provider_transaction_id
            else:
                request.original_reference_id = record.reference_id
            reply = await self._gateway.Reverse(request)
            await self.transactions.transition(
                merchant, record.transaction_id, (txn_states.REVERSING,), txn_states.REVERSED,
                reversed_amount=reversed_amount(reply, record.redeemed),
                reversed_ms=now_ms(), reversal_found=int(reply.reversed),
            )

        return await resolve_pending(
            self.intents, merchant, older_than_seconds, reverse=reverse,
            confirm={"release": confirm_release, "reverse": confirm_reverse},
        )


def reversed_amount(reply: gateway_pb2.ReverseResponse, redeemed: int) -> int:
    """What a reversal gave back. A resent reversal the vendor answers with "already reversed"
    (Paytronix) carries no amount: a reversal is always whole, so it gave back what was redeemed."""
    if not reply.reversed:
        return 0
    return reply.result.amount.amount_minor or redeemed


def _reversal_of(record: TransactionRecord) -> Reversal:
    return Reversal(bool(record.reversal_found), Money(record.reversed_amount, record.currency), record)


def timestamp_of(epoch_ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(epoch_ms)
    return stamp

