"""The vendor-side ledger every simulator keeps in memory: cards, balances, holds, transactions.

One instance per simulator (no globals). Every operation runs under one lock and either applies
completely or raises `LedgerError` having changed nothing, so the ledger can be driven from the
server's event loop and inspected from a test thread at the same time.

Invariants kept: balance >= 0; available (balance minus open hold remainders) >= 0; a hold's
captured + released + remaining == approved; a transaction is reversed at most once, and a reversal
is never itself reversed. Reversal undoes the transaction's recorded `Effect`s and is refused (with
nothing changed) if undoing would make a balance negative or the card has changed state since.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .money import ZERO, fmt, mask_number

INACTIVE = "inactive"
ACTIVE = "active"
CLOSED = "closed"
CARD_STATUSES = (INACTIVE, ACTIVE, CLOSED)


class LedgerError(Exception):
    """A business refusal. `code` is vendor-neutral; each simulator maps it to its own wire error.

    Codes: CARD_NOT_FOUND, CARD_EXISTS, CARD_NOT_ACTIVE, CARD_ALREADY_ACTIVE, CARD_CLOSED,
    PIN_REQUIRED, INVALID_PIN, INSUFFICIENT_FUNDS, HOLD_NOT_FOUND, HOLD_CLOSED, AMOUNT_EXCEEDS_HOLD,
    TXN_NOT_FOUND, ALREADY_REVERSED, NOT_REVERSIBLE, CARD_STATE_CHANGED, CARD_HAS_HOLDS,
    SAME_CARD.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class Card:
    number: str
    balance: Decimal = ZERO
    status: str = INACTIVE
    pin: str | None = None
    currency: str = "USD"
    # Vendor extras: aliases (barcode, phone, proxy number...), cvv2, card set, template, ...
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def masked(self) -> str:
        return mask_number(self.number)


@dataclass
class Hold:
    hold_id: str
    card_number: str
    requested: Decimal
    approved: Decimal
    remaining: Decimal
    captured: Decimal = ZERO
    released: Decimal = ZERO
    status: str = "open"  # open | closed


@dataclass(frozen=True)
class Effect:
    """One change a transaction made to one card; reversal applies the inverse."""

    card_number: str
    balance_delta: Decimal
    status_before: str | None = None
    status_after: str | None = None


@dataclass
class Transaction:
    txn_id: str
    kind: str
    card_number: str | None
    amount: Decimal
    balance_before: Decimal | None = None
    balance_after: Decimal | None = None
    effects: tuple[Effect, ...] = ()
    reversible: bool = True
    reversed_by: str | None = None
    reverses: str | None = None
    hold_id: str | None = None
    external_id: str | None = None
    # Vendor-specific correlation data (order id, request id, clerk...), never card data.
    data: dict[str, Any] = field(default_factory=dict)


class Ledger:
    def __init__(self, txn_id_factory: Callable[[], str] | None = None,
                 hold_id_factory: Callable[[], str] | None = None) -> None:
        self._lock = threading.RLock()
        self._counter = 0
        self._txn_id_factory = txn_id_factory or self._default_id("T")
        self._hold_id_factory = hold_id_factory or self._default_id("H")
        self.reset()

    def _default_id(self, prefix: str) -> Callable[[], str]:
        def make() -> str:
            self._counter += 1
            return f"{prefix}{self._counter:010d}"
        return make

    def reset(self) -> None:
        with self._lock:
            self.cards: dict[str, Card] = {}
            self.aliases: dict[tuple[str, str], str] = {}
            self.holds: dict[str, Hold] = {}
            self.transactions: dict[str, Transaction] = {}
            self.order: list[str] = []
            # Caller ids that a reversal arrived for before (or instead of) the request itself.
            self.blocked_external_ids: set[str] = set()
            self.external_ids: dict[str, str] = {}
            # Per-vendor request-id memory (duplicate detection / idempotent replay).
            self.request_ids: dict[str, Any] = {}

    @contextmanager
    def locked(self) -> Iterator["Ledger"]:
        with self._lock:
            yield self

    # ----------------------------------------------------------------- cards

    def add_card(self, number: str, *, balance: Decimal = ZERO, status: str = INACTIVE,
                 pin: str | None = None, currency: str = "USD",
                 attributes: dict[str, Any] | None = None,
                 aliases: dict[str, str] | None = None) -> Card:
        with self._lock:
            if status not in CARD_STATUSES:
                raise ValueError(f"status must be one of {CARD_STATUSES}")
            if number in self.cards:
                raise LedgerError("CARD_EXISTS", "card already exists")
            if balance < 0:
                raise ValueError("balance must not be negative")
            card = Card(number=number, balance=balance, status=status, pin=pin, currency=currency,
                        attributes=dict(attributes or {}))
            for kind, value in (aliases or {}).items():
                if (kind, value) in self.aliases:
                    raise LedgerError("CARD_EXISTS", f"{kind} alias already in use")
            self.cards[number] = card
            for kind, value in (aliases or {}).items():
                self.aliases[(kind, value)] = number
            return card

    def add_alias(self, number: str, kind: str, value: str) -> None:
        with self._lock:
            self.card(number)
            self.aliases[(kind, value)] = number

    def card(self, number: str) -> Card:
        with self._lock:
            card = self.cards.get(number)
            if card is None:
                raise LedgerError("CARD_NOT_FOUND", "card not found")
            return card

    def card_by_alias(self, kind: str, value: str) -> Card:
        with self._lock:
            number = self.aliases.get((kind, value))
            if number is None:
                raise LedgerError("CARD_NOT_FOUND", "card not found")
            return self.cards[number]

    def has_card(self, number: str) -> bool:
        return number in self.cards

    @staticmethod
    def check_pin(card: Card, pin: str | None, *, required: bool) -> None:
        """`required`: the vendor insists on the PIN whenever the card has one."""
        if pin is None:
            if required and card.pin is not None:
                raise LedgerError("PIN_REQUIRED", "PIN required for this card")
            return
        if card.pin is None or pin != card.pin:
            raise LedgerError("INVALID_PIN", "PIN does not match")

    def available(self, card: Card) -> Decimal:
        held = sum((h.remaining for h in self.holds.values()
                    if h.card_number == card.number and h.status == "open"), ZERO)
        return card.balance - held

    @staticmethod
    def require_active(card: Card) -> None:
        if card.status == INACTIVE:
            raise LedgerError("CARD_NOT_ACTIVE", "card is not active")
        if card.status == CLOSED:
            raise LedgerError("CARD_CLOSED", "card is closed")

    # ---------------------------------------------------------- transactions

    def _record(self, kind: str, card: Card | None, amount: Decimal, *, before: Decimal | None,
                effects: tuple[Effect, ...] = (), reversible: bool = True,
                external_id: str | None = None, hold_id: str | None = None,
                data: dict[str, Any] | None = None, txn_id: str | None = None) -> Transaction:
        txn = Transaction(
            txn_id=txn_id or self._txn_id_factory(), kind=kind,
            card_number=card.number if card else None, amount=amount,
            balance_before=before, balance_after=card.balance if card else None,
            effects=effects, reversible=reversible, hold_id=hold_id,
            external_id=external_id, data=dict(data or {}),
        )
        self.transactions[txn.txn_id] = txn
        self.order.append(txn.txn_id)
        if external_id is not None:
            self.external_ids[external_id] = txn.txn_id
        return txn

    def check_external_id(self, external_id: str | None) -> None:
        """Refuse a caller id that was already used, or that a reversal blocked before it arrived."""
        if external_id is None:
            return
        if external_id in self.blocked_external_ids:
            raise LedgerError("EXTERNAL_ID_REVERSED", "transaction id was reversed before it arrived")
        if external_id in self.external_ids:
            raise LedgerError("EXTERNAL_ID_USED", "transaction id already used")

    def inquiry(self, card: Card, *, kind: str = "balance", **meta: Any) -> Transaction:
        """A non-monetary, non-reversible record (some vendors number balance inquiries too)."""
        with self._lock:
            return self._record(kind, card, ZERO, before=card.balance, reversible=False, **meta)

    def activate(self, card: Card, amount: Decimal, *, kind: str = "activate", **meta: Any) -> Transaction:
        with self._lock:
            if card.status == ACTIVE:
                raise LedgerError("CARD_ALREADY_ACTIVE", "card is already active")
            if card.status == CLOSED:
                raise LedgerError("CARD_CLOSED", "card is closed")
            self.check_external_id(meta.get("external_id"))
            before = card.balance
            card.status = ACTIVE
            card.balance += amount
            effect = Effect(card.number, amount, INACTIVE, ACTIVE)
            return self._record(kind, card, amount, before=before, effects=(effect,), **meta)

    def load(self, card: Card, amount: Decimal, *, kind: str = "load", **meta: Any) -> Transaction:
        with self._lock:
            self.require_active(card)
            self.check_external_id(meta.get("external_id"))
            before = card.balance
            card.balance += amount
            return self._record(kind, card, amount, before=before,
                                effects=(Effect(card.number, amount),), **meta)

    def debit(self, card: Card, amount: Decimal, *, partial: bool = False, kind: str = "redeem",
              **meta: Any) -> Transaction:
        """Take `amount` (or, if `partial`, as much of it as is available; possibly zero)."""
        with self._lock:
            self.require_active(card)
            self.check_external_id(meta.get("external_id"))
            available = self.available(card)
            if amount > available:
                if not partial:
                    raise LedgerError("INSUFFICIENT_FUNDS", "insufficient funds")
                amount = available
            before = card.balance
            card.balance -= amount
            return self._record(kind, card, amount, before=before,
                                effects=(Effect(card.number, -amount),), **meta)

    def cash_out(self, card: Card, *, deactivate: bool, kind: str = "cash_out", **meta: Any) -> Transaction:
        """Remove everything available (open holds stay covered); optionally close the card."""
        with self._lock:
            self.require_active(card)
            self.check_external_id(meta.get("external_id"))
            if deactivate and self._open_holds(card):
                raise LedgerError("CARD_HAS_HOLDS", "card has open holds")
            amount = self.available(card)
            before = card.balance
            card.balance -= amount
            effect = Effect(card.number, -amount, ACTIVE, CLOSED) if deactivate else Effect(card.number, -amount)
            if deactivate:
                card.status = CLOSED
            return self._record(kind, card, amount, before=before, effects=(effect,), **meta)

    def exchange(self, old: Card, new: Card, *, kind: str = "exchange", **meta: Any) -> Transaction:
        """Move the whole balance of an active card to an inactive one; the old card is closed."""
        with self._lock:
            if old.number == new.number:
                raise LedgerError("SAME_CARD", "old and new card are the same")
            self.require_active(old)
            if new.status == ACTIVE:
                raise LedgerError("CARD_ALREADY_ACTIVE", "new card is already active")
            if new.status == CLOSED:
                raise LedgerError("CARD_CLOSED", "new card is closed")
            if self._open_holds(old):
                raise LedgerError("CARD_HAS_HOLDS", "card has open holds")
            self.check_external_id(meta.get("external_id"))
            amount = old.balance
            new_before = new.balance
            old.balance = ZERO
            old.status = CLOSED
            new.balance += amount
            new.status = ACTIVE
            effects = (Effect(old.number, -amount, ACTIVE, CLOSED),
                       Effect(new.number, amount, INACTIVE, ACTIVE))
            data = dict(meta.pop("data", None) or {}, from_card=old.masked)
            return self._record(kind, new, amount, before=new_before, effects=effects, data=data, **meta)

    # ----------------------------------------------------------------- holds

    def _open_holds(self, card: Card) -> list[Hold]:
        return [h for h in self.holds.values() if h.card_number == card.number and h.status == "open"]

    def hold(self, card: Card, amount: Decimal, *, partial: bool, kind: str = "hold",
             **meta: Any) -> tuple[Hold, Transaction]:
        """Reserve funds. With `partial`, approve what is available (refusing only when nothing is)."""
        with self._lock:
            self.require_active(card)
            available = self.available(card)
            approved = amount
            if amount > available:
                if not partial or available <= 0:
                    raise LedgerError("INSUFFICIENT_FUNDS", "insufficient funds")
                approved = available
            hold = Hold(hold_id=self._hold_id_factory(), card_number=card.number,
                        requested=amount, approved=approved, remaining=approved)
            self.holds[hold.hold_id] = hold
            txn = self._record(kind, card, approved, before=card.balance, reversible=False,
                               hold_id=hold.hold_id, **meta)
            return hold, txn

    def get_hold(self, hold_id: str) -> Hold:
        hold = self.holds.get(hold_id)
        if hold is None:
            raise LedgerError("HOLD_NOT_FOUND", "hold not found")
        return hold

    def capture(self, hold: Hold, amount: Decimal, *, release_rest: bool, kind: str = "capture",
                **meta: Any) -> Transaction:
        """Take `amount` from the hold's remainder; `release_rest` closes the hold afterwards."""
        with self._lock:
            if hold.status != "open":
                raise LedgerError("HOLD_CLOSED", "hold is closed")
            if amount > hold.remaining:
                raise LedgerError("AMOUNT_EXCEEDS_HOLD", "amount exceeds the remaining hold")
            card = self.cards[hold.card_number]
            before = card.balance
            card.balance -= amount
            hold.remaining -= amount
            hold.captured += amount
            released = ZERO
            if release_rest:
                released = hold.remaining
                hold.released += released
                hold.remaining = ZERO
            if hold.remaining == 0:
                hold.status = "closed"
            data = dict(meta.pop("data", None) or {}, released=fmt(released))
            # A capture is final at these vendors (none documents undoing one).
            return self._record(kind, card, amount, before=before, reversible=False,
                                effects=(Effect(card.number, -amount),), hold_id=hold.hold_id,
                                data=data, **meta)

    def release(self, hold: Hold, amount: Decimal | None = None, *, kind: str = "release",
                **meta: Any) -> Transaction:
        """Release `amount` of the remainder (all of it if None); the hold closes at zero."""
        with self._lock:
            if hold.status != "open":
                raise LedgerError("HOLD_CLOSED", "hold is closed")
            amount = hold.remaining if amount is None else amount
            if amount > hold.remaining:
                raise LedgerError("AMOUNT_EXCEEDS_HOLD", "amount exceeds the remaining hold")
            hold.remaining -= amount
            hold.released += amount
            if hold.remaining == 0:
                hold.status = "closed"
            card = self.cards[hold.card_number]
            return self._record(kind, card, amount, before=card.balance, reversible=False,
                                hold_id=hold.hold_id, **meta)

    # -------------------------------------------------------------- reversal

    def transaction(self, txn_id: str) -> Transaction:
        txn = self.transactions.get(txn_id)
        if txn is None:
            raise LedgerError("TXN_NOT_FOUND", "transaction not found")
        return txn

    def transaction_by_external_id(self, external_id: str) -> Transaction | None:
        txn_id = self.external_ids.get(external_id)
        return self.transactions[txn_id] if txn_id else None

    def block_external_id(self, external_id: str) -> None:
        """Remember a reversal that found nothing, so the original arriving late is refused."""
        with self._lock:
            self.blocked_external_ids.add(external_id)

    def reverse(self, txn: Transaction, *, kind: str = "reversal", **meta: Any) -> Transaction:
        """Undo `txn` exactly once, or refuse with nothing changed."""
        with self._lock:
            if txn.reverses is not None or not txn.reversible:
                raise LedgerError("NOT_REVERSIBLE", "transaction cannot be reversed")
            if txn.reversed_by is not None:
                raise LedgerError("ALREADY_REVERSED", "transaction already reversed")
            for effect in txn.effects:
                card = self.cards[effect.card_number]
                expected = effect.status_after if effect.status_after is not None else ACTIVE
                if card.status != expected:
                    raise LedgerError("CARD_STATE_CHANGED", "card changed state since the transaction")
                if self.available(card) - effect.balance_delta < 0:
                    raise LedgerError("INSUFFICIENT_FUNDS", "balance no longer covers the reversal")
            primary = self.cards.get(txn.card_number) if txn.card_number else None
            before = primary.balance if primary else None
            inverse = []
            for effect in txn.effects:
                card = self.cards[effect.card_number]
                card.balance -= effect.balance_delta
                if effect.status_before is not None:
                    card.status = effect.status_before
                inverse.append(Effect(card.number, -effect.balance_delta,
                                      effect.status_after, effect.status_before))
            reversal = self._record(kind, primary, txn.amount, before=before,
                                    effects=tuple(inverse), reversible=False, **meta)
            reversal.reverses = txn.txn_id
            txn.reversed_by = reversal.txn_id
            return reversal

    # ------------------------------------------------------------- snapshot

    def snapshot(self) -> dict[str, Any]:
        """The vendor-side state for `/_sim/ledger`: masked numbers only, never PINs or CVV2s."""
        with self._lock:
            return {
                "cards": [self.card_view(c) for c in self.cards.values()],
                "holds": [self.hold_view(h) for h in self.holds.values()],
                "transactions": [self.txn_view(self.transactions[t]) for t in self.order],
                "blocked_external_ids": sorted(self.blocked_external_ids),
            }

    def card_view(self, card: Card) -> dict[str, Any]:
        return {
            "masked_number": card.masked,
            "status": card.status,
            "balance": fmt(card.balance),
            "available": fmt(self.available(card)),
            "currency": card.currency,
            "has_pin": card.pin is not None,
            "open_holds": [h.hold_id for h in self._open_holds(card)],
        }

    def hold_view(self, hold: Hold) -> dict[str, Any]:
        return {
            "hold_id": hold.hold_id,
            "masked_number": self.cards[hold.card_number].masked,
            "requested": fmt(hold.requested),
            "approved": fmt(hold.approved),
            "remaining": fmt(hold.remaining),
            "captured": fmt(hold.captured),
            "released": fmt(hold.released),
            "status": hold.status,
        }

    def txn_view(self, txn: Transaction) -> dict[str, Any]:
        card = self.cards.get(txn.card_number) if txn.card_number else None
        return {
            "txn_id": txn.txn_id,
            "kind": txn.kind,
            "masked_number": card.masked if card else None,
            "amount": fmt(txn.amount),
            "balance_before": fmt(txn.balance_before) if txn.balance_before is not None else None,
            "balance_after": fmt(txn.balance_after) if txn.balance_after is not None else None,
            "reversible": txn.reversible,
            "reversed_by": txn.reversed_by,
            "reverses": txn.reverses,
            "hold_id": txn.hold_id,
            "external_id": txn.external_id,
            "data": txn.data,
        }
