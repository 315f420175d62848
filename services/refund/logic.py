"""Reload, cash-out and refund onto a new or existing card, over the gateway.

Every gateway call carries a reference_id derived from the caller's request_id and the step
(``reload.<request_id>``, ``r2c.<request_id>.cashout`` ...). A multi-step flow that dies half-way
is therefore finished by retrying the same request: each step the provider already did is
replayed by it (same result, no second movement), and the rest runs. The idempotency record in
front (servicer.py) only stores the final answer.

Merchant limits (common/config.py MerchantSettings): ``max_reload_minor`` caps one reload;
``max_card_balance_minor`` caps the balance a reload or refund credit may leave on a card. The
balance cap is checked against the balance read just before the credit: two concurrent credits to
the same card can both pass it (the native ledger's own atomic cap is global, not per merchant).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import grpc
from google.protobuf import timestamp_pb2

from common.config import MerchantSettings
from common.context import current_call
from common.errors import (
    BALANCE_LIMIT_EXCEEDED,
    CARD_INACTIVE,
    CURRENCY_MISMATCH,
    MeshError,
    failed_precondition,
    invalid_argument,
)
from common.idempotency import TRANSIENT_CODES
from common.money import Money
from giftcard.gateway.v1 import gateway_pb2
from giftcard.type.v1 import card_pb2, money_pb2, transaction_pb2
from services.refund.split import Payment, RefundTooLarge, split_refund

RELOAD_LIMIT_EXCEEDED = "RELOAD_LIMIT_EXCEEDED"
NOTHING_TO_FUND = "NOTHING_TO_FUND"
NEW_CARD, FUND_EXISTING = "NEW_CARD", "FUND_EXISTING"


def _transient(error: MeshError) -> bool:
    return error.retryable or error.code in TRANSIENT_CODES


def money_pb(money: Money) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=money.amount_minor, currency_code=money.currency)


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def transaction_pb(
    reference_id: str, kind: int, result: gateway_pb2.OperationResult, client_transaction_id: str = "",
    order_id: str = "",
) -> transaction_pb2.Transaction:
    """The mesh's record of one gateway movement; its id is the gateway reference_id, which is
    also what `Reverse(original_reference_id=...)` takes."""
    return transaction_pb2.Transaction(
        transaction_id=reference_id, client_transaction_id=client_transaction_id, kind=kind,
        state=transaction_pb2.TRANSACTION_STATE_APPROVED, masked_number=result.masked_number,
        amount=result.amount, balance_after=result.balance if result.HasField("balance") else None,
        provider=result.provider, provider_transaction_id=result.provider_transaction_id,
        create_time=_now(), order_id=order_id,
    )


@dataclass(frozen=True)
class CardToCardResult:
    policy: str
    cashed_out: Money
    funded: Money
    masked_number: str
    # Credentials of a newly issued card (NEW_CARD with a program), returned once. Secrets.
    card_number: str = field(default="", repr=False)
    pin: str = field(default="", repr=False)
    cvv2: str = field(default="", repr=False)
    claim_url: str = field(default="", repr=False)
    proxy_number: str = ""


def order_part_id(request_id: str, payment_id: str) -> str:
    """The refund id of one part of a refund by order: fixed by the request and the payment."""
    return "ord." + hashlib.sha256(f"{request_id}\0{payment_id}".encode()).hexdigest()[:32]


class RefundLogic:
    def __init__(self, gateway, transactions=None, refunds=None, holds=None, captures=None, sent=None) -> None:
        self._gateway = gateway
        self._sent = sent  # services.shared.sent.SentMarks (None: every attempt is checked)
        # Refund only: services.shared TransactionStore and HoldStore, the settlement service's
        # capture queue (services.shared.work_queue.WorkQueue "stl"), and refunds.RefundLedger.
        self._transactions = transactions
        self._refunds = refunds
        self._holds = holds
        self._captures = captures

    # -- refund of a payment (redemption or capture) -------------------------------------------

    async def refund_transaction(
        self, merchant: str, request_id: str, transaction_id: str, amount: Money
    ) -> tuple[str, transaction_pb2.Transaction]:
        """Credit `amount` of a payment (a redemption `txn_...` or a settled capture `stl_...`)
        back to the card that paid it: (masked number, the refund's transaction). The amount is
        reserved against the payment first (one script: refunded + reserved <= what it moved),
        then the card is credited with a reference derived from the payment and request_id; a
        refusal returns the reservation, a transient failure keeps it for the retry of the same
        request, which re-sends the same credit (replayed by the provider if it landed)."""
        if self._transactions is None or self._refunds is None:
            raise MeshError(grpc.StatusCode.UNIMPLEMENTED, "OPERATION_NOT_SUPPORTED", "refunds are not configured")
        card, masked, order_id = await self._payment(merchant, transaction_id)
        _, state = await self._refunds.reserve(merchant, transaction_id, request_id, amount.amount_minor, amount.currency)
        if state == "aborted":  # settled as refused earlier; the stored refusal is the answer
            raise failed_precondition("REFUND_REFUSED", "this refund was refused by the provider")
        # Bound to the transaction too: a request_id reused (after its idempotency record expired)
        # for a refund of another payment on the same card must not replay this credit.
        reference_id = "refund." + hashlib.sha256(f"{transaction_id}\0{request_id}".encode()).hexdigest()[:40]
        try:
            reply = await self._gateway.Credit(gateway_pb2.CreditRequest(
                reference_id=reference_id, card=card, amount=money_pb(amount), kind=gateway_pb2.CREDIT_KIND_REFUND,
            ))
        except MeshError as error:
            if not error.retryable and error.code not in TRANSIENT_CODES:
                await self._refunds.settle(merchant, transaction_id, request_id, "aborted")
            raise
        await self._refunds.settle(merchant, transaction_id, request_id, "done", reply.result.provider_transaction_id)
        txn = transaction_pb(reference_id, transaction_pb2.TRANSACTION_KIND_REFUND, reply.result, order_id=order_id)
        return masked, txn

    # -- refund of an order (its payments split by strategy) --------------------------------------

    async def refund_order(
        self, merchant: str, request_id: str, order_id: str, amount: Money, strategy: str
    ) -> list[tuple[str, str, Money, transaction_pb2.Transaction]]:
        """Refund `amount` of an order over its payments: [(masked, payment id, part, refund txn)].

        The split is computed once and stored under the request (a retry runs the same parts),
        then every part is reserved against its payment before any card is credited: when one
        reservation fails (a concurrent refund took the money), the ones this call made are
        returned and nothing moves. Each part then runs the per-payment path with a refund id
        derived from (request_id, payment id), so a retried request never refunds twice."""
        if self._transactions is None or self._refunds is None:
            raise MeshError(grpc.StatusCode.UNIMPLEMENTED, "OPERATION_NOT_SUPPORTED", "refunds are not configured")
        orders = self._transactions.orders
        plan = await orders.plan(merchant, order_id, request_id)
        if plan is None:
            payments = await self._refundable(merchant, order_id, amount.currency)
            try:
                parts = split_refund(amount.amount_minor, payments, strategy)
            except RefundTooLarge as exc:
                raise failed_precondition(
                    "AMOUNT_EXCEEDS_REFUNDABLE", "the refund exceeds what is left to refund of this order",
                    refundable_minor=str(exc.refundable_minor),
                ) from None
            plan = await orders.save_plan(merchant, order_id, request_id, {
                "amount": amount.amount_minor, "currency": amount.currency, "parts": parts,
            })
        if plan["amount"] != amount.amount_minor or plan["currency"] != amount.currency:
            raise failed_precondition("IDEMPOTENCY_KEY_REUSED", "request_id was already used for another refund")
        parts = [(payment_id, part, order_part_id(request_id, payment_id)) for payment_id, part in plan["parts"]]
        await self._reserve_all(merchant, order_id, request_id, amount.currency, parts)
        done = []
        for index, (payment_id, part, part_id) in enumerate(parts):
            try:
                masked, txn = await self.refund_transaction(merchant, part_id, payment_id, Money(part, amount.currency))
            except MeshError as error:
                if not _transient(error):
                    # A final refusal of this part (the card was closed...): the parts after it were
                    # never sent (parts run in order, and an earlier attempt could not pass this
                    # one), so their reservations return; the parts before it stay refunded.
                    for later_id, _, later_part_id in parts[index + 1:]:
                        await self._refunds.settle(merchant, later_id, later_part_id, "aborted")
                    error.metadata["refunded_minor"] = str(sum(m.amount_minor for _, _, m, _ in done))
                raise
            done.append((masked, payment_id, Money(part, amount.currency), txn))
        return done

    async def _reserve_all(self, merchant, order_id, request_id, currency, parts) -> None:
        reserved = []
        try:
            for payment_id, part, part_id in parts:
                new, state = await self._refunds.reserve(merchant, payment_id, part_id, part, currency)
                if state == "aborted":
                    raise failed_precondition("REFUND_REFUSED", "this refund was refused by the provider")
                if new:
                    reserved.append((payment_id, part_id))
        except MeshError as error:
            # Only reservations made by this call are returned: an older one may belong to a credit
            # that already reached the provider (a retry after a crash), and must stay.
            for payment_id, part_id in reserved:
                await self._refunds.settle(merchant, payment_id, part_id, "aborted")
            await self._transactions.orders.drop_plan(merchant, order_id, request_id)
            if error.reason in ("AMOUNT_EXCEEDS_REFUNDABLE", "TRANSACTION_NOT_REFUNDABLE"):
                raise failed_precondition(
                    "AMOUNT_EXCEEDS_REFUNDABLE", "the refund exceeds what is left to refund of this order",
                ) from None
            raise

    async def _refundable(self, merchant: str, order_id: str, currency: str) -> list[Payment]:
        """The order's payments in `currency` with what is left to refund of each (approved,
        not voided redemptions; settled captures), in payment order."""
        found = []
        for payment_id, seq in await self._transactions.orders.payments(merchant, order_id):
            if self._refunds.is_capture(payment_id):
                item = await self._captures.get(merchant, payment_id)
                if item is None or item.get("state") != "settled" or item.get("currency") != currency:
                    continue
                paid = int(item.get("captured") or 0)
            else:
                try:
                    record = await self._transactions.get(merchant, payment_id)
                except MeshError:
                    continue  # indexed before its record was written, and never written
                if record.kind != "redemption" or record.state != "approved" or record.currency != currency:
                    continue
                paid = record.redeemed - record.reversed_amount
            total, _ = await self._refunds.totals(merchant, payment_id)
            if paid - total > 0:
                found.append(Payment(payment_id, seq, paid - total))
        return found

    async def _payment(self, merchant: str, transaction_id: str) -> tuple[card_pb2.CardRef, str, str]:
        """(card that paid, masked number, order id) of a redemption or a settled capture; another
        merchant's id is simply not found (every record key carries the merchant)."""
        if self._refunds.is_capture(transaction_id):
            item = await self._captures.get(merchant, transaction_id)
            if item is None:
                raise MeshError(grpc.StatusCode.NOT_FOUND, "TRANSACTION_NOT_FOUND", "transaction not found")
            hold = await self._holds.get(merchant, item["hold_id"])
            return await self._holds.card(merchant, item["hold_id"]), hold.masked_number, hold.order_id
        record = await self._transactions.get(merchant, transaction_id)
        if record.kind != "redemption":
            raise failed_precondition("TRANSACTION_NOT_REFUNDABLE", "only redemptions and captures can be refunded",
                                      kind=record.kind)
        return await self._transactions.card(merchant, transaction_id), record.masked, record.order_id

    # -- reload ------------------------------------------------------------------------------------

    async def reload(
        self, settings: MerchantSettings, request_id: str, card_ref: card_pb2.CardRef, amount: Money,
        client_transaction_id: str,
    ) -> tuple[transaction_pb2.Transaction, money_pb2.Money]:
        if amount.amount_minor > settings.max_reload_minor:
            raise failed_precondition(
                RELOAD_LIMIT_EXCEEDED, "the amount exceeds the merchant's maximum reload",
                max_reload_minor=str(settings.max_reload_minor),
            )
        reference_id = f"reload.{request_id}"
        result = await self._credit(settings, reference_id, card_ref, amount, gateway_pb2.CREDIT_KIND_RELOAD)
        txn = transaction_pb(reference_id, transaction_pb2.TRANSACTION_KIND_RELOAD, result, client_transaction_id)
        return txn, result.balance

    # -- cash-out ----------------------------------------------------------------------------------

    async def cash_out(self, request_id: str, card_ref: card_pb2.CardRef) -> transaction_pb2.Transaction:
        reference_id = f"cashout.{request_id}"
        reply = await self._gateway.CashOut(gateway_pb2.CashOutRequest(reference_id=reference_id, card=card_ref))
        return transaction_pb(reference_id, transaction_pb2.TRANSACTION_KIND_CASH_OUT, reply.result)

    # -- refund onto a card ------------------------------------------------------------------------

    async def refund_to_card(
        self, settings: MerchantSettings, request_id: str, policy: str, *, amount: Money | None,
        old_card: card_pb2.CardRef | None, existing_card: card_pb2.CardRef | None, program_id: str,
    ) -> CardToCardResult:
        if policy == FUND_EXISTING:
            if existing_card is None:
                raise invalid_argument("existing_card", "existing_card is required for FUND_EXISTING")
            if amount is None:
                raise invalid_argument("amount", "amount is required for FUND_EXISTING")
            result = await self._credit(
                settings, f"r2c.{request_id}.fund", existing_card, amount, gateway_pb2.CREDIT_KIND_REFUND
            )
            return CardToCardResult(FUND_EXISTING, Money(0, amount.currency), amount, result.masked_number)
        return await self._new_card(settings, request_id, amount, old_card, program_id)

    async def _new_card(
        self, settings: MerchantSettings, request_id: str, amount: Money | None,
        old_card: card_pb2.CardRef | None, program_id: str,
    ) -> CardToCardResult:
        """NEW_CARD: cash out the old card (if given), then allocate + activate a new card loaded
        with what came off the old card plus `amount`, so the customer never loses the old
        balance. Without a program_id it is the cancellation of a gift card purchase: the old card
        is cashed out and nothing is issued."""
        if old_card is None and not program_id:
            raise invalid_argument("program_id", "program_id is required to issue a new card")
        if old_card is None and amount is None:
            raise invalid_argument("amount", "amount is required when no old card is cashed out")
        if not program_id and amount is not None:
            raise invalid_argument("program_id", "program_id is required to put an amount on a new card")
        cash_out = None
        if old_card is not None:
            await self._check_old_card(old_card, amount, fund_new=bool(program_id))
            cash_out = (await self._gateway.CashOut(
                gateway_pb2.CashOutRequest(reference_id=f"r2c.{request_id}.cashout", card=old_card)
            )).result
            cashed_out = Money(cash_out.amount.amount_minor, cash_out.amount.currency_code)
            masked = cash_out.masked_number
        else:
            cashed_out = Money(0, amount.currency)
            masked = ""
        if not program_id:  # cancellation of a gift card purchase
            return CardToCardResult(NEW_CARD, cashed_out, Money(0, cashed_out.currency), masked)
        try:
            return await self._issue_new_card(settings, request_id, amount, cashed_out, program_id)
        except MeshError as error:
            if cash_out is not None and not _transient(error):
                # A final refusal (unknown program, balance limit...) must not strand the old
                # card's value: undo the cash-out, then report the refusal. Transient failures
                # leave it cashed out: the client's retry resumes and issues the new card.
                await self._gateway.Reverse(gateway_pb2.ReverseRequest(
                    reference_id=f"r2c.{request_id}.undo-cashout", card=old_card,
                    provider_transaction_id=cash_out.provider_transaction_id,
                ))
            raise

    async def _issue_new_card(
        self, settings: MerchantSettings, request_id: str, amount: Money | None, cashed_out: Money,
        program_id: str,
    ) -> CardToCardResult:
        currency = amount.currency if amount is not None else cashed_out.currency
        funded = Money(cashed_out.amount_minor + (amount.amount_minor if amount else 0), currency)
        if funded.amount_minor <= 0:
            raise failed_precondition(NOTHING_TO_FUND, "the old card was empty and no amount was given")
        if funded.amount_minor > settings.max_card_balance_minor:
            raise failed_precondition(
                BALANCE_LIMIT_EXCEEDED, "the new card would exceed the merchant's maximum card balance",
                max_card_balance_minor=str(settings.max_card_balance_minor),
            )
        allocation = await self._gateway.Allocate(gateway_pb2.AllocateRequest(
            reference_id=f"r2c.{request_id}.allocate", program_id=program_id, amount=money_pb(funded),
        ))
        if not allocation.activated:
            await self._gateway.Activate(gateway_pb2.ActivateRequest(
                reference_id=f"r2c.{request_id}.activate",
                card=card_pb2.CardRef(card_number=allocation.card_number, pin=allocation.pin or allocation.cvv2),
                amount=money_pb(funded),
            ))
        return CardToCardResult(
            NEW_CARD, cashed_out, funded, allocation.result.masked_number,
            card_number=allocation.card_number, pin=allocation.pin, cvv2=allocation.cvv2,
            claim_url=allocation.claim_url, proxy_number=allocation.proxy_number,
        )

    async def _check_old_card(self, old_card: card_pb2.CardRef, amount: Money | None, *, fund_new: bool) -> None:
        """Refuse before anything moves when the old card's balance could not go onto the new
        card. A card already cashed out (a retry of this request) is left to the CashOut replay."""
        balance = await self._gateway.GetBalance(gateway_pb2.GetBalanceRequest(card=old_card))
        if balance.status != card_pb2.CARD_STATUS_ACTIVE:
            return
        if fund_new and amount is not None and balance.balance.currency_code != amount.currency:
            raise MeshError(
                grpc.StatusCode.FAILED_PRECONDITION, CURRENCY_MISMATCH,
                "the old card's currency differs from the amount's currency",
            )
        if fund_new and amount is None and balance.balance.amount_minor == 0:
            raise failed_precondition(NOTHING_TO_FUND, "the old card is empty and no amount was given")

    # -- shared ------------------------------------------------------------------------------------

    async def _credit(
        self, settings: MerchantSettings, reference_id: str, card_ref: card_pb2.CardRef, amount: Money,
        kind: int,
    ) -> gateway_pb2.OperationResult:
        # A retry of a credit already sent skips the checks of the card's current state: the
        # first attempt may be what changed it (services/shared/sent.py).
        if self._sent is None:
            await self._check_creditable(settings, card_ref, amount)
        else:
            merchant = current_call().merchant_id
            if not await self._sent.was_sent(merchant, reference_id):
                await self._check_creditable(settings, card_ref, amount)
                await self._sent.mark(merchant, reference_id)
        reply = await self._gateway.Credit(gateway_pb2.CreditRequest(
            reference_id=reference_id, card=card_ref, amount=money_pb(amount), kind=kind,
        ))
        return reply.result

    async def _check_creditable(self, settings: MerchantSettings, card_ref: card_pb2.CardRef, amount: Money) -> None:
        balance = await self._gateway.GetBalance(gateway_pb2.GetBalanceRequest(card=card_ref))
        if balance.status == card_pb2.CARD_STATUS_ACTIVE:
            if balance.balance.amount_minor + amount.amount_minor > settings.max_card_balance_minor:
                raise failed_precondition(
                    BALANCE_LIMIT_EXCEEDED, "the card would exceed the merchant's maximum card balance",
                    max_card_balance_minor=str(settings.max_card_balance_minor),
                )
        elif balance.status in (card_pb2.CARD_STATUS_INACTIVE, card_pb2.CARD_STATUS_DEACTIVATED):
            raise failed_precondition(CARD_INACTIVE, "the card is not active")
