"""SmartClixx gift card sandbox: physical activation, e-card retrieval (number + CVV2) and
activation/load, balance, authorization (hold), settlements (several per authorization, each
reducing what is left) and authorization reversal (full or partial, for cancel / partial cancel).

The document describes the flows only; the JSON model is this simulator's design, with every
assumption listed in WIRE.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request

from ..common.app import Reply, Simulator
from ..common.auth import header_ok
from ..common.cards import digits, new_card_number
from ..common.ledger import ACTIVE, INACTIVE, Card, LedgerError
from ..common.money import fmt, mask_number
from ..common.validation import Field, Invalid, Money, Str, validate

REQUEST_ID = Field("requestId", Str(max_len=64), required=True)
CARD = Field("cardNumber", Str(pattern=r"[0-9]{12,19}", pattern_hint="12 to 19 digits"), required=True)
CVV2 = Field("cvv2", Str(pattern=r"[0-9]{3,4}", pattern_hint="3 or 4 digits"))
AMOUNT = Field("amount", Money(allow_string=True), required=True)
ORDER = Field("orderId", Str(max_len=64))
AUTH_ID = Field("authorizationId", Str(max_len=64), required=True)

SCHEMAS: dict[str, tuple[Field, ...]] = {
    "retrieve": (REQUEST_ID, Field("programId", Str(max_len=64)), ORDER),
    "activate": (REQUEST_ID, CARD, CVV2, AMOUNT, ORDER),
    "balance": (CARD, CVV2),
    "authorize": (REQUEST_ID, CARD, CVV2, AMOUNT, ORDER),
    "settle": (REQUEST_ID, AUTH_ID, AMOUNT, ORDER),
    # No amount: release everything left; with amount: release that much (partial cancel).
    "reverse": (REQUEST_ID, AUTH_ID, Field("amount", Money(allow_string=True)), ORDER),
}

# LedgerError code -> (HTTP status, errorCode, errorMessage); business refusals are DECLINED.
ERRORS: dict[str, tuple[int, str, str]] = {
    "CARD_NOT_FOUND": (404, "CARD_NOT_FOUND", "Card not found."),
    "CARD_NOT_ACTIVE": (422, "CARD_NOT_ACTIVE", "Card is not active."),
    "CARD_CLOSED": (422, "CARD_NOT_ACTIVE", "Card is not active."),
    "CARD_ALREADY_ACTIVE": (409, "CARD_ALREADY_ACTIVE", "Card is already active."),
    "PIN_REQUIRED": (422, "CVV2_REQUIRED", "CVV2 is required for this card."),
    "INVALID_PIN": (422, "INVALID_CVV2", "CVV2 does not match."),
    "INSUFFICIENT_FUNDS": (422, "INSUFFICIENT_FUNDS", "Insufficient funds."),
    "HOLD_NOT_FOUND": (404, "AUTHORIZATION_NOT_FOUND", "Authorization not found."),
    "HOLD_CLOSED": (409, "AUTHORIZATION_CLOSED", "Authorization is fully settled or reversed."),
    "AMOUNT_EXCEEDS_HOLD": (422, "AMOUNT_EXCEEDS_AUTHORIZATION", "Amount exceeds what is left on the authorization."),
}


class SmartClixxSimulator(Simulator):
    vendor = "smartclixx"
    wrong_answer_paths = ("availableBalance", "balance")
    seed_attributes = ("cvv2", "programId")

    @dataclasses.dataclass
    class Options:
        api_key: str = "smartclixx-sim-key"
        ecard_prefix: str = "7777"
        default_program_id: str = "EGIFT"
        seed: int = 0

    def routes(self) -> list[tuple[str, Any]]:
        return [
            ("/api/v1/ecards/retrieve", self.retrieve),
            ("/api/v1/cards/activate", self.activate),
            ("/api/v1/cards/balance", self.balance),
            ("/api/v1/authorizations", self.authorize),
            ("/api/v1/settlements", self.settle),
            ("/api/v1/authorizations/reversal", self.reverse),
        ]

    # ----------------------------------------------------------- wire shapes

    def authenticate(self, request: Request) -> Reply | None:
        if header_ok(request, "x-api-key", self.options.api_key):
            return None
        return self.error(401, "ERROR", "UNAUTHORIZED", "Missing or invalid X-Api-Key.")

    def invalid(self, problem: Invalid) -> Reply:
        reply = self.error(400, "ERROR", "INVALID_REQUEST", f"{problem.field} {problem.message}.")
        reply.body["field"] = problem.field
        return reply

    def refused(self, error: LedgerError) -> Reply:
        status, code, message = ERRORS.get(error.code, (422, "DECLINED", "Transaction declined."))
        return self.error(status, "DECLINED", code, message)

    @staticmethod
    def error(status: int, outcome: str, code: str, message: str) -> Reply:
        return Reply(status, {"status": outcome, "errorCode": code, "errorMessage": message})

    def _reused(self) -> Reply:
        return self.error(409, "ERROR", "REQUEST_ID_REUSED", "requestId was already used for a different request.")

    def _approved(self, card: Card, **fields: Any) -> Reply:
        return Reply(200, {"status": "APPROVED", **fields, "cardNumber": mask_number(card.number),
                           "balance": fmt(card.balance), "availableBalance": fmt(self.ledger.available(card))})

    # ------------------------------------------------------------ operations

    def _card(self, f: dict[str, Any]) -> Card:
        """CVV2 is required for cards that have one (e-cards), and checked when sent."""
        card = self.ledger.card(f["cardNumber"])
        cvv2 = card.attributes.get("cvv2")
        if cvv2 is None:
            if "cvv2" in f:
                raise LedgerError("INVALID_PIN", "card has no CVV2")
        elif f.get("cvv2") is None:
            raise LedgerError("PIN_REQUIRED", "CVV2 required")
        elif f["cvv2"] != cvv2:
            raise LedgerError("INVALID_PIN", "CVV2 mismatch")
        return card

    def retrieve(self, body: Any, request: Request) -> Reply:
        """E-card retrieval: a new inactive card with its number and CVV2 (activate loads it)."""
        f = validate(body, SCHEMAS["retrieve"])

        def run() -> Reply:
            program = f.get("programId", self.options.default_program_id)
            number = new_card_number(self.rng, self.options.ecard_prefix, self.ledger.has_card)
            cvv2 = digits(self.rng, 3)
            self.ledger.add_card(number, status=INACTIVE, attributes={"cvv2": cvv2, "programId": program})
            return Reply(200, {"status": "APPROVED", "cardNumber": number, "cvv2": cvv2, "programId": program})
        return self.replayable(f["requestId"], request, body, run, self._reused)

    def activate(self, body: Any, request: Request) -> Reply:
        f = validate(body, SCHEMAS["activate"])

        def run() -> Reply:
            card = self._card(f)
            txn = self.ledger.activate(card, f["amount"], kind="activate", data=self._data(f))
            return self._approved(card, transactionId=txn.txn_id, activatedAmount=fmt(txn.amount))
        return self.replayable(f["requestId"], request, body, run, self._reused)

    def balance(self, body: Any, request: Request) -> Reply:
        f = validate(body, SCHEMAS["balance"])
        card = self._card(f)
        reply = self._approved(card)
        reply.body["active"] = card.status == ACTIVE
        return reply

    def authorize(self, body: Any, request: Request) -> Reply:
        """A hold for the full amount or a decline (the document mentions no partial approval)."""
        f = validate(body, SCHEMAS["authorize"])

        def run() -> Reply:
            card = self._card(f)
            held, _ = self.ledger.hold(card, f["amount"], partial=False, kind="authorization", data=self._data(f))
            return self._approved(card, authorizationId=held.hold_id, approvedAmount=fmt(held.approved),
                                  authorizationRemaining=fmt(held.remaining))
        return self.replayable(f["requestId"], request, body, run, self._reused)

    def settle(self, body: Any, request: Request) -> Reply:
        """One capture per shipment; the authorization stays open for the rest until it reaches zero."""
        f = validate(body, SCHEMAS["settle"])

        def run() -> Reply:
            held = self.ledger.get_hold(f["authorizationId"])
            txn = self.ledger.capture(held, f["amount"], release_rest=False, kind="settlement", data=self._data(f))
            card = self.ledger.card(held.card_number)
            return self._approved(card, settlementId=txn.txn_id, authorizationId=held.hold_id,
                                  settledAmount=fmt(txn.amount), authorizationRemaining=fmt(held.remaining))
        return self.replayable(f["requestId"], request, body, run, self._reused)

    def reverse(self, body: Any, request: Request) -> Reply:
        f = validate(body, SCHEMAS["reverse"])

        def run() -> Reply:
            held = self.ledger.get_hold(f["authorizationId"])
            txn = self.ledger.release(held, f.get("amount"), kind="authorization_reversal", data=self._data(f))
            card = self.ledger.card(held.card_number)
            return self._approved(card, reversalId=txn.txn_id, authorizationId=held.hold_id,
                                  reversedAmount=fmt(txn.amount), authorizationRemaining=fmt(held.remaining))
        return self.replayable(f["requestId"], request, body, run, self._reused)

    @staticmethod
    def _data(f: dict[str, Any]) -> dict[str, Any]:
        return {k: f[k] for k in ("requestId", "orderId") if k in f}


SIMULATOR = SmartClixxSimulator
