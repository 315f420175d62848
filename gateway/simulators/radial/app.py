"""Radial storedvalue sandbox (JSON model of FundAndActivate, Fund, Redeem, RedeemVoid,
BalanceInquiry, CashOut). The document names the calls and fields but gives no wire format; the JSON
model here and every rule the document does not state are listed in WIRE.md as assumptions.
Radial has no holds.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from starlette.requests import Request

from ..common.app import Reply, Simulator
from ..common.auth import header_ok
from ..common.cards import digits, new_card_number
from ..common.ledger import ACTIVE, INACTIVE, Card, LedgerError, Transaction
from ..common.money import fmt
from ..common.validation import Field, Invalid, Money, Obj, OneOf, Str, validate

OPERATIONS = ("FundAndActivate", "Fund", "Redeem", "RedeemVoid", "BalanceInquiry", "CashOut")

REQUEST_ID = Field("RequestId", Str(max_len=64, pattern=r"[A-Za-z0-9._:-]+",
                                    pattern_hint="letters, digits and . _ : -"), required=True)
PAN = Field("PaymentAccountUniqueId", Str(pattern=r"[0-9]{12,19}", pattern_hint="12 to 19 digits"))
PIN = Field("Pin", Str(pattern=r"[0-9]{4,8}", pattern_hint="4 to 8 digits"))
AMOUNT = Field("Amount", Obj((
    Field("Value", Money(allow_string=True), required=True),
    Field("CurrencyCode", Str(pattern=r"[A-Z]{3}", pattern_hint="an ISO 4217 code"), required=True),
)), required=True)
ORDER = Field("OrderId", Str(max_len=64))
REQUIRED_PAN = dataclasses.replace(PAN, required=True)
REQUIRED_ORDER = dataclasses.replace(ORDER, required=True)

SCHEMAS: dict[str, tuple[Field, ...]] = {
    "FundAndActivate": (REQUEST_ID, Field("CardType", OneOf(("Physical", "Virtual")), required=True),
                        PAN, PIN, AMOUNT, Field("PromoCode", Str(max_len=64)), ORDER),
    "Fund": (REQUEST_ID, REQUIRED_PAN, PIN, AMOUNT, ORDER),
    "Redeem": (REQUEST_ID, REQUIRED_PAN, PIN, AMOUNT, REQUIRED_ORDER),
    "RedeemVoid": (REQUEST_ID, REQUIRED_PAN, PIN, AMOUNT, REQUIRED_ORDER),
    "BalanceInquiry": (REQUEST_ID, REQUIRED_PAN, PIN),
    "CashOut": (REQUEST_ID, REQUIRED_PAN, PIN, ORDER),
}

# LedgerError code -> ErrorCode carried with ResponseCode "Fail" (HTTP 200)
ERRORS: dict[str, tuple[str, str]] = {
    "CARD_NOT_FOUND": ("CardNotFound", "The card number is not known."),
    "CARD_NOT_ACTIVE": ("CardNotActive", "The card is not active."),
    "CARD_CLOSED": ("CardDeactivated", "The card has been deactivated."),
    "CARD_ALREADY_ACTIVE": ("CardAlreadyActive", "The card is already active."),
    "PIN_REQUIRED": ("PinRequired", "A PIN is required for this card."),
    "INVALID_PIN": ("InvalidPin", "The PIN does not match."),
    "INSUFFICIENT_FUNDS": ("InsufficientFunds", "The card balance is too low."),
    "CARD_HAS_HOLDS": ("CardNotActive", "The card cannot be cashed out now."),
    "ALREADY_REVERSED": ("RedemptionAlreadyVoided", "The redemption has already been voided."),
    "CARD_STATE_CHANGED": ("CardDeactivated", "The card changed state since the redemption."),
}


class RadialSimulator(Simulator):
    vendor = "radial"
    wrong_answer_paths = ("BalanceAmount.Value",)
    vendor_actions = ("vendor-timeout",)
    seed_aliases = ("proxy",)

    @dataclasses.dataclass
    class Options:
        api_key: str = "radial-sim-key"
        # store id -> {"claim_link": bool, "promo_codes": [..] or None (no promo code needed)}
        stores: dict[str, dict[str, Any]] = dataclasses.field(
            default_factory=lambda: {"STORE1": {"claim_link": False, "promo_codes": None}})
        virtual_prefix: str = "6006"
        proxy_prefix: str = "9990"
        claim_link_base: str = "https://claim.giftcards.example/c/"
        seed: int = 0

    def routes(self) -> list[tuple[str, Any]]:
        def bind(operation: str) -> Any:
            return lambda body, request: self.dispatch(operation, body, request)
        return [(f"/v1.0/stores/{{store_id}}/storedvalue/{op}", bind(op)) for op in OPERATIONS]

    # ----------------------------------------------------------- wire shapes

    def authenticate(self, request: Request) -> Reply | None:
        if header_ok(request, "apikey", self.options.api_key):
            return None
        return self.fail("Unauthorized", "Missing or invalid apiKey header.", status=401)

    def invalid(self, problem: Invalid) -> Reply:
        reply = self.fail("InvalidRequest", f"{problem.field} {problem.message}.", status=400)
        reply.body["ErrorField"] = problem.field
        return reply

    def refused(self, error: LedgerError) -> Reply:
        code, message = ERRORS.get(error.code, ("Error", "The request could not be processed."))
        return self.fail(code, message)

    @staticmethod
    def fail(code: str, message: str, *, status: int = 200, request_id: str | None = None) -> Reply:
        body: dict[str, Any] = {"ResponseCode": "Fail"}
        if request_id is not None:
            body["RequestId"] = request_id
        body.update(ErrorCode=code, ErrorMessage=message)
        return Reply(status, body)

    def vendor_fault(self, action: str, raw_body: bytes) -> tuple[int, dict[str, Any]]:
        """`vendor-timeout`: Radial's own Timeout reply; nothing applied, the RequestId is spent."""
        body: dict[str, Any] = {"ResponseCode": "Timeout"}
        try:
            request_id = json.loads(raw_body).get("RequestId")
        except (ValueError, AttributeError):
            request_id = None
        if isinstance(request_id, str):
            body["RequestId"] = request_id
            with self.ledger.locked():
                self.ledger.request_ids.setdefault(request_id, "timeout")
        body["ErrorMessage"] = "The stored value provider did not answer in time; retry with a new RequestId."
        return 200, body

    @staticmethod
    def money(amount: Any, currency: str) -> dict[str, str]:
        return {"Value": fmt(amount), "CurrencyCode": currency}

    # ------------------------------------------------------------ operations

    def dispatch(self, operation: str, body: Any, request: Request) -> Reply:
        store_id = request.path_params["store_id"]
        store = self.options.stores.get(store_id)
        if store is None:
            return self.fail("StoreNotFound", "Unknown store.", status=404)
        fields = validate(body, SCHEMAS[operation])
        if operation == "FundAndActivate":
            self._check_card_type(fields)
        request_id = fields["RequestId"]
        if request_id in self.ledger.request_ids:
            reply = self.fail("DuplicateRequestId", "RequestId was already used; send a new one.")
        else:
            self.ledger.request_ids[request_id] = operation
            handler = getattr(self, "op_" + operation)
            try:
                reply = handler(fields, store, store_id)
            except LedgerError as error:
                reply = self.refused(error)
        body = dict(reply.body)
        return Reply(reply.status, {"ResponseCode": body.pop("ResponseCode"), "RequestId": request_id, **body})

    @staticmethod
    def _check_card_type(fields: dict[str, Any]) -> None:
        """Physical: PAN + PIN + Amount (the document's words). Virtual: the card is created here,
        so sending a PAN or PIN is a mistake."""
        physical = fields["CardType"] == "Physical"
        for name in ("PaymentAccountUniqueId", "Pin"):
            if physical and name not in fields:
                raise Invalid(name, "is required for a Physical card")
            if not physical and name in fields:
                raise Invalid(name, "must not be sent for a Virtual card")

    def _card(self, fields: dict[str, Any]) -> Card:
        """Look up by PAN or by a claim-link proxy number; the PIN is required whenever the card has
        one, except when addressed by proxy number (the buyer of a claim-link card never got a PIN)."""
        number = fields["PaymentAccountUniqueId"]
        if ("proxy", number) in self.ledger.aliases:
            card = self.ledger.card_by_alias("proxy", number)
            if "Pin" in fields:
                self.ledger.check_pin(card, fields["Pin"], required=False)
            return card
        card = self.ledger.card(number)
        self.ledger.check_pin(card, fields.get("Pin"), required=True)
        return card

    @staticmethod
    def _amount(fields: dict[str, Any], card: Card | None) -> Any:
        amount = fields["Amount"]
        if card is not None and amount["CurrencyCode"] != card.currency:
            raise _Currency()
        return amount["Value"]

    def _promo(self, fields: dict[str, Any], store: dict[str, Any]) -> None:
        codes = store.get("promo_codes")
        if codes is None:
            return
        if "PromoCode" not in fields:
            raise _Promo("PromoCodeRequired", "This store requires a PromoCode.")
        if fields["PromoCode"] not in codes:
            raise _Promo("InvalidPromoCode", "The PromoCode is not valid for this store.")

    def _ok(self, card: Card, **amounts: Any) -> Reply:
        body: dict[str, Any] = {"ResponseCode": "Success"}
        for name, value in amounts.items():
            body[name] = self.money(value, card.currency)
        body["BalanceAmount"] = self.money(self.ledger.available(card), card.currency)
        return Reply(200, body)

    def _guard(self, run: Any) -> Reply:
        try:
            return run()
        except _Currency:
            return self.fail("CurrencyMismatch", "CurrencyCode does not match the card's currency.")
        except _Promo as exc:
            return self.fail(exc.code, exc.message)

    def op_FundAndActivate(self, f: dict[str, Any], store: dict[str, Any], store_id: str) -> Reply:
        def run() -> Reply:
            if f["CardType"] == "Physical":
                self._promo(f, store)
                card = self._card(f)
                amount = self._amount(f, card)
                txn = self.ledger.activate(card, amount, kind="FundAndActivate", data=self._data(f, store_id))
                return self._ok(card, AmountFunded=txn.amount)
            self._promo(f, store)
            amount = self._amount(f, None)
            number = new_card_number(self.rng, self.options.virtual_prefix, self.ledger.has_card)
            pin = digits(self.rng, 4)
            card = self.ledger.add_card(number, pin=pin, status=INACTIVE,
                                        currency=f["Amount"]["CurrencyCode"])
            txn = self.ledger.activate(card, amount, kind="FundAndActivate", data=self._data(f, store_id))
            reply = self._ok(card, AmountFunded=txn.amount)
            if store.get("claim_link"):
                proxy = new_card_number(self.rng, self.options.proxy_prefix,
                                        lambda n: ("proxy", n) in self.ledger.aliases)
                self.ledger.add_alias(card.number, "proxy", proxy)
                link = self.options.claim_link_base + digits(self.rng, 24)
                card.attributes["claim_link"] = link
                reply.body.update(PaymentAccountUniqueId=proxy, CardClaimLink=link)
            else:
                reply.body.update(PaymentAccountUniqueId=number, Pin=pin)
            return reply
        return self._guard(run)

    def op_Fund(self, f: dict[str, Any], store: dict[str, Any], store_id: str) -> Reply:
        def run() -> Reply:
            card = self._card(f)
            txn = self.ledger.load(card, self._amount(f, card), kind="Fund", data=self._data(f, store_id))
            return self._ok(card, AmountFunded=txn.amount)
        return self._guard(run)

    def op_Redeem(self, f: dict[str, Any], store: dict[str, Any], store_id: str) -> Reply:
        def run() -> Reply:
            card = self._card(f)
            txn = self.ledger.debit(card, self._amount(f, card), partial=False, kind="Redeem",
                                    data=self._data(f, store_id))
            return self._ok(card, AmountRedeemed=txn.amount)
        return self._guard(run)

    def op_RedeemVoid(self, f: dict[str, Any], store: dict[str, Any], store_id: str) -> Reply:
        """Voids the latest redemption on this card for this OrderId and Amount (no transaction id is
        needed, so a redemption whose reply was lost can still be voided)."""
        def run() -> Reply:
            card = self._card(f)
            amount = self._amount(f, card)
            matches = [t for t in self._redemptions(card, f["OrderId"], store_id) if t.amount == amount]
            open_ = [t for t in matches if t.reversed_by is None]
            if not open_:
                if matches:
                    raise LedgerError("ALREADY_REVERSED", "already voided")
                return self.fail("RedemptionNotFound", "No redemption for this card, OrderId and Amount.")
            reversal = self.ledger.reverse(open_[-1], kind="RedeemVoid", data=self._data(f, store_id))
            return self._ok(card, AmountVoided=reversal.amount)
        return self._guard(run)

    def _redemptions(self, card: Card, order_id: str, store_id: str) -> list[Transaction]:
        return [self.ledger.transactions[t] for t in self.ledger.order
                if self.ledger.transactions[t].kind == "Redeem"
                and self.ledger.transactions[t].card_number == card.number
                and self.ledger.transactions[t].data.get("OrderId") == order_id
                and self.ledger.transactions[t].data.get("store") == store_id]

    def op_BalanceInquiry(self, f: dict[str, Any], store: dict[str, Any], store_id: str) -> Reply:
        card = self._card(f)
        if card.status != ACTIVE:
            self.ledger.require_active(card)
        return self._ok(card)

    def op_CashOut(self, f: dict[str, Any], store: dict[str, Any], store_id: str) -> Reply:
        """Devalue and deactivate (the document's words): balance to zero, card closed."""
        card = self._card(f)
        txn = self.ledger.cash_out(card, deactivate=True, kind="CashOut", data=self._data(f, store_id))
        return self._ok(card, AmountCashedOut=txn.amount)

    @staticmethod
    def _data(fields: dict[str, Any], store_id: str) -> dict[str, Any]:
        data: dict[str, Any] = {"store": store_id, "RequestId": fields["RequestId"]}
        if "OrderId" in fields:
            data["OrderId"] = fields["OrderId"]
        return data


class _Currency(Exception):
    pass


class _Promo(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


SIMULATOR = RadialSimulator
