"""Paytronix gift service sandbox: `POST /gift/{sell,reload,balance,redeem,reverse,cashOut,exchange}.json`.

Field names, types and limits are the document's; everything the document leaves open is marked as
an assumption in WIRE.md next to this file (auth scheme, error codes, HTTP statuses, reversal rules).
Paytronix has no holds: only balance-moving transactions exist here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request

from ..common.app import Reply, Simulator
from ..common.auth import basic_ok
from ..common.ledger import Card, Ledger, LedgerError, Transaction
from ..common.money import fmt, mask_number
from ..common.validation import Field, Int, Invalid, Money, Obj, Str, exactly_one, validate

CARD_IDENTIFIERS = ("printedCardNumber", "trackInfo", "barcode", "phoneNumber",
                    "appleNfcVasPayload", "googleNfcVasPayload", "accountToken")
_BASE64 = r"[A-Za-z0-9+/]+={0,2}"
_TRACK2 = r"[0-9]{1,19}=[0-9]*"

CARD_INFO = Obj((
    Field("printedCardNumber", Str()),
    Field("trackInfo", Str(pattern=_TRACK2, pattern_hint="track 2 data without sentinels (PAN=...)")),
    Field("barcode", Str()),
    Field("phoneNumber", Str()),
    Field("appleNfcVasPayload", Str(pattern=_BASE64, pattern_hint="Base64")),
    Field("googleNfcVasPayload", Str(pattern=_BASE64, pattern_hint="Base64")),
    Field("accountToken", Str()),
    # "If null, then this param will be ignored."
    Field("cardRegCode", Str(), null_is_absent=True),
))

MERCHANT = Field("merchantId", Int(), required=True)
STORE = Field("storeCode", Str(), required=True)
CHECK = Field("checkNumber", Str(max_len=255))
CASHIER = Field("cashier", Str(max_len=100))
TERMINAL = Field("terminalId", Str(max_len=100))
EXTERNAL_ID = Field("externalTransactionId", Str(max_len=128))
# The document types amounts as Decimal: a JSON number or a decimal string is accepted.
AMOUNT = Field("amount", Money(allow_number=True), required=True)
TIP = Field("tip", Money(allow_number=True, allow_zero=True))
POS = (CHECK, CASHIER, TERMINAL)

SCHEMAS: dict[str, tuple[Field, ...]] = {
    "sell": (MERCHANT, STORE, Field("cardInfo", CARD_INFO, required=True), AMOUNT, *POS, EXTERNAL_ID),
    "reload": (MERCHANT, STORE, Field("cardInfo", CARD_INFO, required=True), AMOUNT, *POS, EXTERNAL_ID),
    "balance": (MERCHANT, STORE, Field("cardInfo", CARD_INFO, required=True), *POS),
    "redeem": (MERCHANT, STORE, Field("cardInfo", CARD_INFO, required=True), AMOUNT, TIP, *POS,
               EXTERNAL_ID),
    "reverse": (MERCHANT, STORE, Field("pxTransactionId", Int(minimum=1, maximum=2**63 - 1)), EXTERNAL_ID),
    "cashOut": (MERCHANT, STORE, Field("cardInfo", CARD_INFO, required=True), *POS, EXTERNAL_ID),
    "exchange": (MERCHANT, STORE, Field("cardInfo", CARD_INFO, required=True),
                 Field("newCardInfo", CARD_INFO, required=True), *POS),
}

# LedgerError code -> (errorCode, errorMessage). Business refusals are HTTP 200 + Failure.
ERRORS: dict[str, tuple[str, str]] = {
    "CARD_NOT_FOUND": ("gift.card_not_found", "The card could not be found."),
    "CARD_NOT_ACTIVE": ("gift.card_not_active", "The card has not been activated."),
    "CARD_CLOSED": ("gift.card_deactivated", "The card has been deactivated."),
    "CARD_ALREADY_ACTIVE": ("gift.card_already_active", "The card is already active."),
    "INVALID_PIN": ("gift.invalid_registration_code", "The registration code does not match the card."),
    "PIN_REQUIRED": ("gift.invalid_registration_code", "The registration code does not match the card."),
    "INSUFFICIENT_FUNDS": ("gift.insufficient_balance", "The card balance is too low for this transaction."),
    "SAME_CARD": ("gift.same_card", "The old and new card are the same card."),
    "TXN_NOT_FOUND": ("transaction.not_found", "No such transaction."),
    "ALREADY_REVERSED": ("transaction.already_reversed", "The transaction has already been reversed."),
    "NOT_REVERSIBLE": ("transaction.not_reversible", "This transaction cannot be reversed."),
    "CARD_STATE_CHANGED": ("transaction.not_reversible", "The card changed state since the transaction."),
    "EXTERNAL_ID_USED": ("transaction.duplicate_external_id",
                         "A transaction with this externalTransactionId already exists."),
    "EXTERNAL_ID_REVERSED": ("transaction.reversed",
                             "A reversal for this externalTransactionId was received before this request."),
}


class PaytronixSimulator(Simulator):
    vendor = "paytronix"
    wrong_answer_paths = ("currentBalance",)
    seed_aliases = ("trackInfo", "barcode", "phoneNumber", "appleNfcVasPayload",
                    "googleNfcVasPayload", "accountToken")
    seed_attributes = ("cardTemplateCode", "cardTemplateName", "tierCode", "tierName", "customerName")

    @dataclasses.dataclass
    class Options:
        merchant_id: int = 1
        username: str = "paytronix-sim"
        password: str = "paytronix-sim-secret"
        card_template_code: int = 1
        card_template_name: str = "Gift Card"
        tier_code: int = 1
        tier_name: str = "Base"
        seed: int = 0  # RNG for pxAuthCode

    # pxTransactionId is a 64-bit Long: start above 2**32 so an adapter that keeps it in 32 bits fails.
    PX_ID_BASE = 5_000_000_000

    def make_ledger(self) -> Ledger:
        self._px_counter = 0

        def next_px_id() -> str:
            self._px_counter += 1
            return str(self.PX_ID_BASE + self._px_counter)
        return Ledger(txn_id_factory=next_px_id)

    def routes(self) -> list[tuple[str, Any]]:
        ops = {"sell": self.sell, "reload": self.reload, "balance": self.balance, "redeem": self.redeem,
               "reverse": self.reverse, "cashOut": self.cash_out, "exchange": self.exchange}
        return [(f"/gift/{name}.json", handler) for name, handler in ops.items()]

    # ----------------------------------------------------------- wire shapes

    def authenticate(self, request: Request) -> Reply | None:
        if basic_ok(request, self.options.username, self.options.password):
            return None
        return self.failure("auth.failed", "Authentication failed.", status=401)

    def invalid(self, problem: Invalid) -> Reply:
        return self.failure("request.invalid", f"{problem.field} {problem.message}.", status=400)

    def refused(self, error: LedgerError) -> Reply:
        code, message = ERRORS.get(error.code, ("system.error", "The transaction could not be processed."))
        return self.failure(code, message)

    @staticmethod
    def failure(code: str, message: str, *, status: int = 200) -> Reply:
        return Reply(status, {"result": "failure", "errorCode": code, "errorMessage": message})

    def success(self, card: Card, txn: Transaction, *, altered: bool) -> Reply:
        attrs = card.attributes
        body: dict[str, Any] = {
            "result": "success",
            "pxTransactionId": int(txn.txn_id),
            "pxAuthCode": f"{self.rng.randrange(1_000_000):06d}",
            "currentBalance": fmt(card.balance),
        }
        if altered:
            body["previousBalance"] = fmt(txn.balance_before)
            body["transactionAmount"] = fmt(txn.amount)
        body["printedCardNumber"] = card.number
        body["maskedCardNumber"] = mask_number(card.number)
        if "customerName" in attrs:
            body["customerName"] = attrs["customerName"]
        body.update(
            cardTemplateCode=int(attrs.get("cardTemplateCode", self.options.card_template_code)),
            cardTemplateName=attrs.get("cardTemplateName", self.options.card_template_name),
            tierCode=int(attrs.get("tierCode", self.options.tier_code)),
            tierName=attrs.get("tierName", self.options.tier_name),
            posMessages=[],
        )
        return Reply(200, body)

    # --------------------------------------------------------------- helpers

    def _request(self, op: str, body: Any) -> dict[str, Any]:
        fields = validate(body, SCHEMAS[op])
        if fields["merchantId"] != self.options.merchant_id:
            raise _MerchantDenied()
        return fields

    def _card(self, info: dict[str, Any], where: str) -> Card:
        kind = exactly_one(info, CARD_IDENTIFIERS, where=where)
        value = info[kind]
        if kind == "printedCardNumber":
            card = self.ledger.card(value)
        elif kind == "trackInfo" and ("trackInfo", value) not in self.ledger.aliases:
            card = self.ledger.card(value.partition("=")[0])
        else:
            card = self.ledger.card_by_alias(kind, value)
        # cardRegCode is checked only when sent ("Send only if you wish to verify").
        self.ledger.check_pin(card, info.get("cardRegCode"), required=False)
        return card

    @staticmethod
    def _meta(fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
        data = {k: fields[k] for k in ("storeCode", "checkNumber", "cashier", "terminalId") if k in fields}
        data.update(extra)
        return {"external_id": fields.get("externalTransactionId"), "data": data}

    # ------------------------------------------------------------ operations

    def _guarded(self, op: str, body: Any, run: Any) -> Reply:
        try:
            fields = self._request(op, body)
        except _MerchantDenied:
            return self.failure("auth.merchant_not_authorized",
                                "The credentials are not valid for this merchant.", status=403)
        return run(fields)

    def sell(self, body: Any, request: Request) -> Reply:
        def run(f: dict[str, Any]) -> Reply:
            card = self._card(f["cardInfo"], "cardInfo")
            txn = self.ledger.activate(card, f["amount"], kind="sell", **self._meta(f))
            return self.success(card, txn, altered=True)
        return self._guarded("sell", body, run)

    def reload(self, body: Any, request: Request) -> Reply:
        def run(f: dict[str, Any]) -> Reply:
            card = self._card(f["cardInfo"], "cardInfo")
            txn = self.ledger.load(card, f["amount"], kind="reload", **self._meta(f))
            return self.success(card, txn, altered=True)
        return self._guarded("reload", body, run)

    def balance(self, body: Any, request: Request) -> Reply:
        def run(f: dict[str, Any]) -> Reply:
            card = self._card(f["cardInfo"], "cardInfo")
            self.ledger.require_active(card)
            txn = self.ledger.inquiry(card, kind="balance", data=self._meta(f)["data"])
            return self.success(card, txn, altered=False)
        return self._guarded("balance", body, run)

    def redeem(self, body: Any, request: Request) -> Reply:
        def run(f: dict[str, Any]) -> Reply:
            card = self._card(f["cardInfo"], "cardInfo")
            tip = f.get("tip")
            total = f["amount"] + (tip or 0)
            meta = self._meta(f, amount=fmt(f["amount"]), tip=fmt(tip) if tip is not None else None)
            txn = self.ledger.debit(card, total, partial=False, kind="redeem", **meta)
            return self.success(card, txn, altered=True)
        return self._guarded("redeem", body, run)

    def cash_out(self, body: Any, request: Request) -> Reply:
        def run(f: dict[str, Any]) -> Reply:
            card = self._card(f["cardInfo"], "cardInfo")
            txn = self.ledger.cash_out(card, deactivate=False, kind="cashOut", **self._meta(f))
            return self.success(card, txn, altered=True)
        return self._guarded("cashOut", body, run)

    def exchange(self, body: Any, request: Request) -> Reply:
        def run(f: dict[str, Any]) -> Reply:
            old = self._card(f["cardInfo"], "cardInfo")
            new = self._card(f["newCardInfo"], "newCardInfo")
            txn = self.ledger.exchange(old, new, kind="exchange", **self._meta(f))
            return self.success(new, txn, altered=True)
        return self._guarded("exchange", body, run)

    def reverse(self, body: Any, request: Request) -> Reply:
        def run(f: dict[str, Any]) -> Reply:
            px_id, ext_id = f.get("pxTransactionId"), f.get("externalTransactionId")
            if px_id is None and ext_id is None:
                raise Invalid("pxTransactionId", "or externalTransactionId must be provided")
            if px_id is not None:
                txn = self.ledger.transaction(str(px_id))
                if ext_id is not None and txn.external_id != ext_id:
                    return self.failure("transaction.not_found",
                                        "pxTransactionId and externalTransactionId do not name the same transaction.")
            else:
                found = self.ledger.transaction_by_external_id(ext_id)
                if found is None:
                    # The request this reversal is for never arrived (or not yet): block its id so
                    # that a late arrival is refused with `transaction.reversed`.
                    self.ledger.block_external_id(ext_id)
                    return self.failure(
                        "transaction.not_found",
                        "No transaction with this externalTransactionId; it is now blocked and a later "
                        "request carrying it will be refused.")
                txn = found
            reversal = self.ledger.reverse(txn, kind="reverse",
                                           data={"storeCode": f["storeCode"], "reverses": txn.txn_id})
            card = self.ledger.card(txn.card_number)
            return self.success(card, reversal, altered=True)
        return self._guarded("reverse", body, run)


class _MerchantDenied(Exception):
    pass


SIMULATOR = PaytronixSimulator
