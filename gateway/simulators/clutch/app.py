"""Clutch gift card sandbox: balance, hold (partial approval), settlement against a hold (redeem
releases the rest; amount 0 = hold reversal), allocate by card set, activation, issuance.

The document describes operations, not a wire format: the JSON model below is this simulator's
design, with every assumption listed in WIRE.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request

from ..common.app import Reply, Simulator
from ..common.auth import basic_ok
from ..common.cards import digits, new_card_number
from ..common.ledger import ACTIVE, INACTIVE, Card, Hold, LedgerError
from ..common.money import ZERO, fmt, mask_number
from ..common.validation import Field, Invalid, Money, Str, validate

CARD = Field("cardNumber", Str(max_len=32, pattern=r"[0-9]+", pattern_hint="digits only"), required=True)
PIN = Field("pin", Str(max_len=16, pattern=r"[0-9]+", pattern_hint="digits only"))
AMOUNT = Field("amount", Money(allow_string=True), required=True)
REF = Field("requestRef", Str(max_len=64))

SCHEMAS: dict[str, tuple[Field, ...]] = {
    "balance": (CARD, PIN),
    "hold": (CARD, PIN, AMOUNT, REF),
    # amount "0.00" is the hold reversal (the document: "the requested amount is always $0").
    "settlement": (Field("holdId", Str(max_len=64), required=True),
                   Field("amount", Money(allow_string=True, allow_zero=True), required=True), REF),
    "allocate": (Field("cardSetId", Str(max_len=64), required=True), REF),
    "activate": (CARD, PIN, REF),
    "issue": (CARD, PIN, AMOUNT, REF),
}

HEADERS = ("brand", "location", "terminal")

# LedgerError code -> (HTTP status, errorCode, errorMessage)
ERRORS: dict[str, tuple[int, str, str]] = {
    "CARD_NOT_FOUND": (404, "CardNotFound", "Card not found."),
    "CARD_NOT_ACTIVE": (422, "CardNotActive", "Card is not active."),
    "CARD_CLOSED": (422, "CardNotActive", "Card is not active."),
    "CARD_ALREADY_ACTIVE": (409, "CardAlreadyActive", "Card is already active."),
    "PIN_REQUIRED": (422, "PinRequired", "A PIN is required for this card."),
    "INVALID_PIN": (422, "InvalidPin", "PIN does not match."),
    "INSUFFICIENT_FUNDS": (422, "InsufficientFunds", "No funds available on the card."),
    "HOLD_NOT_FOUND": (404, "HoldNotFound", "Hold not found."),
    "HOLD_CLOSED": (409, "HoldClosed", "Hold is already settled or reversed."),
    "AMOUNT_EXCEEDS_HOLD": (422, "AmountExceedsHold", "Amount exceeds the held amount."),
}


class ClutchSimulator(Simulator):
    vendor = "clutch"
    wrong_answer_paths = ("availableBalance", "balance")
    seed_attributes = ("cardSetId",)

    @dataclasses.dataclass
    class Options:
        api_key: str = "clutch-sim-key"
        api_secret: str = "clutch-sim-secret"
        brand: str = "SIMBRAND"
        # card set id -> {"prefix": digits, "pin": whether allocated cards carry a PIN}
        card_sets: dict[str, dict[str, Any]] = dataclasses.field(default_factory=lambda: {
            "EGIFT": {"prefix": "6391", "pin": True},
            "EGIFT-NOPIN": {"prefix": "6392", "pin": False},
        })
        seed: int = 0

    def routes(self) -> list[tuple[str, Any]]:
        ops = {"balance": self.balance, "hold": self.hold, "settlement": self.settlement,
               "allocate": self.allocate, "activate": self.activate, "issue": self.issue}
        return [(f"/merchant/{name}", handler) for name, handler in ops.items()]

    # ----------------------------------------------------------- wire shapes

    def authenticate(self, request: Request) -> Reply | None:
        if not basic_ok(request, self.options.api_key, self.options.api_secret):
            return self.error(401, "Unauthorized", "Invalid API key or secret.")
        for name in HEADERS:
            if not request.headers.get(name):
                return self.error(400, "InvalidRequest", f"{name} header is required.")
        if request.headers["brand"] != self.options.brand:
            return self.error(403, "Forbidden", "The API key is not valid for this brand.")
        return None

    def invalid(self, problem: Invalid) -> Reply:
        reply = self.error(400, "InvalidRequest", f"{problem.field} {problem.message}.")
        reply.body["field"] = problem.field
        return reply

    def refused(self, error: LedgerError) -> Reply:
        status, code, message = ERRORS.get(error.code, (422, "TransactionFailed", "Transaction failed."))
        return self.error(status, code, message)

    @staticmethod
    def error(status: int, code: str, message: str) -> Reply:
        return Reply(status, {"success": False, "errorCode": code, "errorMessage": message})

    def _reused(self) -> Reply:
        return self.error(409, "RequestRefReused", "requestRef was already used for a different request.")

    def _balances(self, card: Card) -> dict[str, str]:
        return {"balance": fmt(card.balance), "availableBalance": fmt(self.ledger.available(card)),
                "currency": card.currency}

    # ------------------------------------------------------------ operations

    def _card(self, fields: dict[str, Any]) -> Card:
        card = self.ledger.card(fields["cardNumber"])
        self.ledger.check_pin(card, fields.get("pin"), required=True)
        return card

    def balance(self, body: Any, request: Request) -> Reply:
        card = self._card(validate(body, SCHEMAS["balance"]))
        return Reply(200, {"success": True, "cardNumber": mask_number(card.number),
                           "active": card.status == ACTIVE, **self._balances(card)})

    def hold(self, body: Any, request: Request) -> Reply:
        """Approves min(requested, available); refuses only when nothing is available."""
        f = validate(body, SCHEMAS["hold"])

        def run() -> Reply:
            card = self._card(f)
            held, txn = self.ledger.hold(card, f["amount"], partial=True, kind="hold",
                                         data={"requestRef": f.get("requestRef")})
            return Reply(200, {"success": True, "transactionId": txn.txn_id, "holdId": held.hold_id,
                               "cardNumber": mask_number(card.number),
                               "requestedAmount": fmt(held.requested), "approvedAmount": fmt(held.approved),
                               **self._balances(card)})
        return self.replayable(f.get("requestRef"), request, body, run, self._reused)

    def settlement(self, body: Any, request: Request) -> Reply:
        """Redeem `amount` of the hold and release the rest; `0.00` releases it all (hold reversal)."""
        f = validate(body, SCHEMAS["settlement"])

        def run() -> Reply:
            held: Hold = self.ledger.get_hold(f["holdId"])
            card = self.ledger.card(held.card_number)
            remaining = held.remaining
            data = {"requestRef": f.get("requestRef")}
            if f["amount"] == ZERO:
                txn = self.ledger.release(held, kind="hold_reversal", data=data)
                redeemed, released = ZERO, txn.amount
            else:
                txn = self.ledger.capture(held, f["amount"], release_rest=True, kind="redeem", data=data)
                redeemed, released = txn.amount, remaining - txn.amount
            return Reply(200, {"success": True, "transactionId": txn.txn_id, "holdId": held.hold_id,
                               "redeemedAmount": fmt(redeemed), "releasedAmount": fmt(released),
                               **self._balances(card)})
        return self.replayable(f.get("requestRef"), request, body, run, self._reused)

    def allocate(self, body: Any, request: Request) -> Reply:
        f = validate(body, SCHEMAS["allocate"])

        def run() -> Reply:
            card_set = self.options.card_sets.get(f["cardSetId"])
            if card_set is None:
                return self.error(404, "CardSetNotFound", "Unknown card set.")
            number = new_card_number(self.rng, card_set["prefix"], self.ledger.has_card)
            pin = digits(self.rng, 4) if card_set.get("pin") else None
            self.ledger.add_card(number, pin=pin, status=INACTIVE, attributes={"cardSetId": f["cardSetId"]})
            reply: dict[str, Any] = {"success": True, "cardSetId": f["cardSetId"], "cardNumber": number}
            if pin is not None:
                reply["pin"] = pin
            return Reply(200, reply)
        return self.replayable(f.get("requestRef"), request, body, run, self._reused)

    def activate(self, body: Any, request: Request) -> Reply:
        f = validate(body, SCHEMAS["activate"])

        def run() -> Reply:
            card = self._card(f)
            txn = self.ledger.activate(card, ZERO, kind="activate", data={"requestRef": f.get("requestRef")})
            return Reply(200, {"success": True, "transactionId": txn.txn_id,
                               "cardNumber": mask_number(card.number), "active": True, **self._balances(card)})
        return self.replayable(f.get("requestRef"), request, body, run, self._reused)

    def issue(self, body: Any, request: Request) -> Reply:
        f = validate(body, SCHEMAS["issue"])

        def run() -> Reply:
            card = self._card(f)
            txn = self.ledger.load(card, f["amount"], kind="issue", data={"requestRef": f.get("requestRef")})
            return Reply(200, {"success": True, "transactionId": txn.txn_id,
                               "cardNumber": mask_number(card.number), "amount": fmt(txn.amount),
                               **self._balances(card)})
        return self.replayable(f.get("requestRef"), request, body, run, self._reused)


SIMULATOR = ClutchSimulator
