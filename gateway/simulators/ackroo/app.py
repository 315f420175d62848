"""Ackroo gift API sandbox: `/device/card` and `/transaction/...` (see WIRE.md).

Request fields are exactly the document's (`device_id`, `cardnumber`, `amount` as a decimal string,
`clerk_id`, `transaction_number`). The document gives no response bodies, so their shape (and the
HTTP statuses) are this simulator's design, recorded as assumptions in WIRE.md. Ackroo has no holds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request

from ..common.app import Reply, Simulator
from ..common.auth import bearer_ok
from ..common.ledger import ACTIVE, Card, LedgerError, Transaction
from ..common.money import fmt, mask_number
from ..common.validation import Field, Invalid, Money, Str, validate

DEVICE = Field("device_id", Str(max_len=64), required=True)
CARD = Field("cardnumber", Str(max_len=32, pattern=r"[0-9]+", pattern_hint="digits only"), required=True)
AMOUNT = Field("amount", Money(allow_string=True, allow_number=False), required=True)
CLERK = Field("clerk_id", Str(max_len=100), required=True)
TXN = Field("transaction_number", Str(max_len=64), required=True)

SCHEMAS: dict[str, tuple[Field, ...]] = {
    "card": (DEVICE, CARD),
    "amount": (DEVICE, CARD, AMOUNT, CLERK),
    "cash": (DEVICE, CARD, CLERK),
    "reversal": (DEVICE, TXN),
}

# LedgerError code -> (HTTP status, Ackroo error name, message)
ERRORS: dict[str, tuple[int, str, str]] = {
    "CARD_NOT_FOUND": (404, "CardNotFound", "Card not found"),
    "CARD_NOT_ACTIVE": (422, "CardNotActive", "Card is not active"),
    "CARD_CLOSED": (422, "CardNotActive", "Card is not active"),
    "CARD_ALREADY_ACTIVE": (409, "CardAlreadyActive", "Card is already active"),
    "INSUFFICIENT_FUNDS": (422, "InsufficientFunds", "Insufficient funds on the gift card"),
    "TXN_NOT_FOUND": (404, "TransactionNotFound", "Transaction not found"),
    "ALREADY_REVERSED": (409, "TransactionAlreadyReversed", "Transaction already reversed"),
    "NOT_REVERSIBLE": (422, "TransactionNotReversible", "Transaction cannot be reversed"),
    "CARD_STATE_CHANGED": (422, "TransactionNotReversible", "Card changed state since the transaction"),
}


class AckrooSimulator(Simulator):
    vendor = "ackroo"
    wrong_answer_paths = ("gc_balance",)

    @dataclasses.dataclass
    class Options:
        token: str = "ackroo-sim-token"
        seed: int = 0

    def routes(self) -> list[tuple[str, Any]]:
        return [
            ("/device/card", self.card),
            ("/transaction/gift/issue", self.issue),
            ("/transaction/gift/debit", self.debit),
            ("/transaction/gift/debit/partial", self.debit_partial),
            ("/transaction/gift/credit", self.credit),
            ("/transaction/gift/refund", self.refund),
            ("/transaction/gift/debit/cash", self.cash),
            ("/transaction/reversal", self.reversal),
        ]

    # ----------------------------------------------------------- wire shapes

    def authenticate(self, request: Request) -> Reply | None:
        if bearer_ok(request, self.options.token):
            return None
        return self.error(401, "Unauthorized", "Missing or invalid access token")

    def invalid(self, problem: Invalid) -> Reply:
        reply = self.error(400, "InvalidRequest", f"{problem.field} {problem.message}")
        reply.body["field"] = problem.field
        return reply

    def refused(self, error: LedgerError) -> Reply:
        status, name, message = ERRORS.get(error.code, (422, "TransactionFailed", "Transaction failed"))
        return self.error(status, name, message)

    @staticmethod
    def error(status: int, name: str, message: str) -> Reply:
        return Reply(status, {"success": False, "error": name, "message": message})

    @staticmethod
    def done(card: Card, txn: Transaction, **extra: Any) -> Reply:
        body = {"success": True, "transaction_number": txn.txn_id, "cardnumber": mask_number(card.number),
                "amount": fmt(txn.amount), "gc_balance": fmt(card.balance)}
        body.update(extra)
        return Reply(200, body)

    # ------------------------------------------------------------ operations

    def _card(self, fields: dict[str, Any]) -> Card:
        return self.ledger.card(fields["cardnumber"])

    @staticmethod
    def _meta(fields: dict[str, Any]) -> dict[str, Any]:
        return {"data": {k: fields[k] for k in ("device_id", "clerk_id") if k in fields}}

    def card(self, body: Any, request: Request) -> Reply:
        fields = validate(body, SCHEMAS["card"])
        card = self._card(fields)
        return Reply(200, {"success": True, "cardnumber": mask_number(card.number),
                           "active": card.status == ACTIVE, "gc_balance": fmt(card.balance)})

    def issue(self, body: Any, request: Request) -> Reply:
        fields = validate(body, SCHEMAS["amount"])
        card = self._card(fields)
        return self.done(card, self.ledger.activate(card, fields["amount"], kind="issue", **self._meta(fields)))

    def debit(self, body: Any, request: Request) -> Reply:
        """InsufficientFunds mode: refuse when the amount is more than the balance."""
        fields = validate(body, SCHEMAS["amount"])
        card = self._card(fields)
        return self.done(card, self.ledger.debit(card, fields["amount"], partial=False, kind="debit",
                                                 **self._meta(fields)))

    def debit_partial(self, body: Any, request: Request) -> Reply:
        """Partial Payment mode: never denies; takes min(amount, balance), possibly 0.00."""
        fields = validate(body, SCHEMAS["amount"])
        card = self._card(fields)
        txn = self.ledger.debit(card, fields["amount"], partial=True, kind="debit_partial",
                                **self._meta(fields))
        return self.done(card, txn, requested_amount=fmt(fields["amount"]))

    def credit(self, body: Any, request: Request) -> Reply:
        fields = validate(body, SCHEMAS["amount"])
        card = self._card(fields)
        return self.done(card, self.ledger.load(card, fields["amount"], kind="credit", **self._meta(fields)))

    def refund(self, body: Any, request: Request) -> Reply:
        fields = validate(body, SCHEMAS["amount"])
        card = self._card(fields)
        return self.done(card, self.ledger.load(card, fields["amount"], kind="refund", **self._meta(fields)))

    def cash(self, body: Any, request: Request) -> Reply:
        fields = validate(body, SCHEMAS["cash"])
        card = self._card(fields)
        return self.done(card, self.ledger.cash_out(card, deactivate=False, kind="cash", **self._meta(fields)))

    def reversal(self, body: Any, request: Request) -> Reply:
        fields = validate(body, SCHEMAS["reversal"])
        original = self.ledger.transaction(fields["transaction_number"])
        reversal = self.ledger.reverse(original, kind="reversal", data={"device_id": fields["device_id"]})
        card = self.ledger.card(original.card_number)
        return self.done(card, reversal, reversed_transaction_number=original.txn_id)


SIMULATOR = AckrooSimulator
