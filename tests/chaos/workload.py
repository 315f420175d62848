"""A randomized money workload for the chaos tests, and the client-side model it is checked against.

Several clients run random operations (authorize, some with a hold that expires within seconds,
capture, release, redeem, two-card checkout, void, refund, reload, cash-out, exchange) over a few
hot native cards. Each call is retried with the SAME request_id
while its outcome is unknown (deadline, UNAVAILABLE, ABORTED, INTERNAL: a crash, a Redis restart,
a short client deadline), as a well-behaved client does; the first definite answer (a success or a
refusal) is what the client believes. The model applies every success to its expected balances, so
at the end the ledger must show exactly that: an acknowledged operation lost, or one applied twice
(a retry that moved money again), breaks the per-card comparison. Calls that never got a definite
answer (retries exhausted) make their cards "uncertain"; they are counted and excluded.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import redis

from giftcard.authorization.v1 import authorization_pb2 as apb
from giftcard.fulfillment.v1 import fulfillment_pb2 as fpb
from giftcard.refund.v1 import refund_pb2 as rpb
from giftcard.settlement.v1 import settlement_pb2 as spb
from giftcard.type.v1 import card_pb2, money_pb2
from mesh.audit import AuditReport, LedgerAudit
from mesh.services import SPECS
from tests.support.mesh import auth

# A definite refusal: nothing moved. Everything else that is not OK is an unknown outcome.
REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNIMPLEMENTED,
}
# What a client may see while the mesh or its Redis is down: retry with the same request_id.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}
OPERATIONS = ("authorize", "capture", "release", "redeem", "checkout", "void", "refund", "reload", "cash_out",
              "exchange")
WEIGHTS = (6, 5, 3, 6, 2, 2, 3, 3, 1, 1)


def usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code="USD")


def new_card_number(rng: random.Random, serial: int) -> str:
    # Distinct last four digits per card, so a masked number names one card in the model.
    return "6035719" + "".join(rng.choice("0123456789") for _ in range(5)) + f"{serial:04d}"


def masked(number: str) -> str:
    return number[:6] + "*" * (len(number) - 10) + number[-4:]


@dataclass
class Model:
    """What the clients were told: expected balance per card, money in and out."""

    expected: dict[str, int] = field(default_factory=dict)  # card number -> balance
    by_mask: dict[str, str] = field(default_factory=dict)
    uncertain: set[str] = field(default_factory=set)
    flows: Counter = field(default_factory=Counter)  # issued, reloaded, redeemed, captured, ...
    calls: Counter = field(default_factory=Counter)  # "<op>:<ok|refused|unknown>"
    statuses: Counter = field(default_factory=Counter)  # codes seen on attempts (retried or not)
    retries: int = 0
    wrong: list[str] = field(default_factory=list)  # answers that cannot be right
    slowest: tuple[str, float] = ("", 0.0)  # the call that took longest to get a definite answer
    unresolved: list[str] = field(default_factory=list)  # "<op>:<last status>" of calls never answered
    journal: list[tuple[str, str, int]] = field(default_factory=list)  # (card, flow, delta) acknowledged

    def add_card(self, number: str, balance: int) -> None:
        self.expected[number] = balance
        self.by_mask[masked(number)] = number
        self.flows["issued"] += balance

    def move(self, number: str, delta: int, flow: str) -> None:
        self.expected[number] += delta
        self.flows[flow] += abs(delta)
        self.journal.append((number, flow, delta))

    def money_balances(self) -> bool:
        """money in == money out (+ what is still on the cards)."""
        f = self.flows
        money_in = f["issued"] + f["reloaded"] + f["voided"] + f["refunded"] + f["exchanged_in"]
        money_out = f["redeemed"] + f["captured"] + f["cashed_out"] + f["exchanged_out"]
        return money_in - money_out == sum(self.expected.values())


@dataclass
class Pools:
    cards: list[str] = field(default_factory=list)  # active hot cards
    holds: list[tuple[str, str]] = field(default_factory=list)  # (hold_id, card)
    payments: list[str] = field(default_factory=list)  # refundable transaction ids
    redemptions: list[str] = field(default_factory=list)  # voidable transaction ids
    voided: set[str] = field(default_factory=set)


class Workload:
    """`stubs(name)` returns a stub for a service (it may change between calls: a restarted server)."""

    def __init__(self, stubs, ledger, rng: random.Random, *, deadline: float = 30, max_attempts: int = 40,
                 retry_pause: float = 0.2, deadline_range: tuple[float, float] | None = None,
                 initial_balance: int = 200_00, merchant: str = "demo", exclude: tuple[str, ...] = ()) -> None:
        self.stubs = stubs
        self.exclude = exclude  # operations this run leaves out
        self.ledger = ledger
        self.rng = rng
        self.deadline = deadline
        self.deadline_range = deadline_range  # random short client deadlines (idempotency test)
        self.short_attempts = 6
        self.max_attempts = max_attempts
        self.retry_pause = retry_pause
        self.initial_balance = initial_balance
        self.merchant = merchant
        self.model = Model()
        self.pools = Pools()
        self._serial = 0
        self._unanswered: list = []
        self._request = 0
        self.started = time.monotonic()

    # -- cards ----------------------------------------------------------------------------------

    async def new_card(self, *, active: bool = True, balance: int | None = None) -> str:
        self._serial += 1
        number = new_card_number(self.rng, self._serial)
        amount = (self.initial_balance if balance is None else balance) if active else 0
        for attempt in range(150):  # the test's own Redis client: Redis may be restarting right now
            try:
                await self.ledger.create_card(self.merchant, number, "USD", balance_minor=amount, active=active)
                break
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                if attempt == 149:
                    raise
                await asyncio.sleep(0.2)
        self.model.add_card(number, amount)
        return number

    async def setup(self, hot_cards: int) -> None:
        for _ in range(hot_cards):
            self.pools.cards.append(await self.new_card())

    # -- one call, retried with the same request_id while its outcome is unknown ----------------

    def _request_id(self, op: str) -> str:
        self._request += 1
        return f"chaos-{op}-{self._request}-{secrets.token_hex(4)}"

    async def call(self, op: str, service: str, method: str, request, cards: tuple[str, ...]):
        """The reply, or None for a refusal; cards become uncertain if no definite answer came."""
        last = ""
        began = time.monotonic()
        for attempt in range(self.max_attempts):
            # Short random deadlines first (the call may well have been applied when it expires), then
            # the normal one so that every call ends with a definite answer.
            short = self.deadline_range and attempt < self.short_attempts
            timeout = self.rng.uniform(*self.deadline_range) if short else self.deadline
            try:
                reply = await getattr(self.stubs(service), method)(request, metadata=auth(), timeout=timeout)
                self.model.statuses["OK"] += 1
                self.model.calls[f"{op}:ok"] += 1
                self._answered(op, began)
                return reply
            except grpc.aio.AioRpcError as error:
                self.model.statuses[error.code().name] += 1
                last = f"{error.code().name} {error.details()}"
                if error.code() in REFUSALS:
                    self.model.calls[f"{op}:refused"] += 1
                    self._answered(op, began)
                    return None
                if error.code() not in RETRYABLE and error.code() not in (grpc.StatusCode.INTERNAL,
                                                                          grpc.StatusCode.UNKNOWN):
                    self.model.wrong.append(f"{op}: unexpected {error.code().name}: {error.details()}")
            except (ConnectionError, OSError):
                self.model.statuses["connection"] += 1
            self.model.retries += 1
            await asyncio.sleep(self.retry_pause * (1 + self.rng.random()))
        self.model.calls[f"{op}:unknown"] += 1
        self.model.unresolved.append(f"{op}:{last}")
        self.model.uncertain.update(cards)
        self._unanswered.append((op, service, method, request, cards))
        return None

    async def settle_unanswered(self, max_attempts: int = 60) -> list:
        """Once the faults have stopped: send every call that never got a definite answer again,
        same request_id, as its client eventually would. Returns those that still got none."""
        pending, self._unanswered = self._unanswered, []
        saved, self.max_attempts = self.max_attempts, max_attempts
        try:
            for op, service, method, request, cards in pending:
                self.model.calls[f"{op}:unknown"] -= 1
                self.model.unresolved.remove(next(u for u in self.model.unresolved if u.startswith(op + ":")))
                reply = await self.call(op, service, method, request, cards)
                if reply is not None or not any(c in self.model.uncertain for c in cards):
                    self.model.uncertain.difference_update(cards)
                    self._apply_late(op, request, reply)
        finally:
            self.max_attempts = saved
        return self._unanswered

    def _apply_late(self, op: str, request, reply) -> None:
        """The model effect of a late definite answer (the same as in each operation)."""
        if reply is None:
            return
        if op == "reload":
            self.model.move(request.card.card_number, request.amount.amount_minor, "reloaded")
        elif op == "cash_out":
            self.model.move(request.card.card_number, -reply.amount_removed.amount_minor, "cashed_out")
        elif op == "redeem" and reply.redeemed.amount_minor > 0:
            self.model.move(request.card.card_number, -reply.redeemed.amount_minor, "redeemed")
        elif op == "checkout":
            for tender, result in zip(request.tenders, reply.tenders):
                if result.state == apb.TENDER_STATE_APPROVED:
                    self.model.move(tender.card.card_number, -result.amount.amount_minor, "redeemed")
        elif op == "capture" and reply.settlement.state == spb.SETTLEMENT_STATE_SETTLED:
            card = next(c for h, c in self.pools.holds if h == request.hold_id)
            self.model.move(card, -reply.settlement.amount.amount_minor, "captured")
        elif op == "void" and reply.credited.amount_minor > 0 and request.transaction_id not in self.pools.voided:
            self.pools.voided.add(request.transaction_id)
            self._credit(reply.redemption.masked_number, reply.credited.amount_minor, "voided")
        elif op == "refund":
            for part in reply.parts:
                self._credit(part.masked_number, part.amount.amount_minor, "refunded")
        elif op == "exchange":
            self.model.move(request.from_card.card_number, -reply.moved.amount_minor, "exchanged_out")
            self.model.move(request.to_card.card_number, reply.moved.amount_minor, "exchanged_in")

    def _answered(self, op: str, began: float) -> None:
        took = time.monotonic() - began
        if took > self.model.slowest[1]:
            self.model.slowest = (op, round(took, 2))

    # -- the operations ---------------------------------------------------------------------------

    def _card(self) -> str | None:
        return self.rng.choice(self.pools.cards) if self.pools.cards else None

    async def authorize(self) -> None:
        card = self._card()
        if card is None:
            return
        request = apb.AuthorizeRequest(
            request_id=self._request_id("auth"), order_id=f"o-{self._request}",
            card=card_pb2.CardRef(card_number=card), amount=usd(self.rng.randint(1_00, 30_00)),
            allow_partial=self.rng.random() < 0.5)
        if self.rng.random() < 0.2:  # short-lived: captures and releases race its expiry
            request.expires_in.FromSeconds(self.rng.randint(1, 4))
        reply = await self.call("authorize", "authorization", "Authorize", request, (card,))
        if reply is not None:
            self.pools.holds.append((reply.hold.hold_id, card))

    async def capture(self) -> None:
        if not self.pools.holds:
            return
        hold_id, card = self.rng.choice(self.pools.holds)
        final = self.rng.random() < 0.6
        request = spb.CaptureRequest(
            request_id=self._request_id("cap"), hold_id=hold_id, amount=usd(self.rng.randint(50, 15_00)),
            shipment_id=f"s-{self._request}", final_shipment=final)
        reply = await self.call("capture", "settlement", "Capture", request, (card,))
        for _ in range(self.max_attempts):
            # SUBMITTED: another attempt of this capture is at the provider; ask again for the outcome.
            if reply is None or reply.settlement.state != spb.SETTLEMENT_STATE_SUBMITTED:
                break
            await asyncio.sleep(self.retry_pause)
            reply = await self.call("capture", "settlement", "Capture", request, (card,))
        if reply is None:
            return
        if reply.settlement.state == spb.SETTLEMENT_STATE_SUBMITTED:
            self.model.uncertain.add(card)  # never learned the outcome
            return
        settlement = reply.settlement
        if settlement.state == spb.SETTLEMENT_STATE_SETTLED:
            self.model.move(card, -settlement.amount.amount_minor, "captured")
            self.pools.payments.append(settlement.settlement_id)
        elif settlement.state == spb.SETTLEMENT_STATE_QUEUED:
            # The provider failed transiently: settlement queued it for its batch job, which
            # captures later; the amount is not known to the client now.
            self.model.flows["queued_captures"] += 1
            self.model.uncertain.add(card)
        elif settlement.state != spb.SETTLEMENT_STATE_FAILED:
            self.model.wrong.append(f"capture answered state {settlement.state} without defer_to_batch")
        if reply.HasField("open_hold") and reply.open_hold.hold_id and reply.open_hold.hold_id != hold_id:
            self.pools.holds.append((reply.open_hold.hold_id, card))

    async def release(self) -> None:
        if not self.pools.holds:
            return
        hold_id, card = self.rng.choice(self.pools.holds)
        request = apb.ReverseAuthorizationRequest(request_id=self._request_id("rel"), hold_id=hold_id, reason="chaos")
        if self.rng.random() < 0.5:
            request.amount.CopyFrom(usd(self.rng.randint(1, 10_00)))
        await self.call("release", "authorization", "ReverseAuthorization", request, (card,))

    async def redeem(self) -> None:
        card = self._card()
        if card is None:
            return
        mode = apb.REDEMPTION_MODE_PARTIAL if self.rng.random() < 0.5 else apb.REDEMPTION_MODE_STRICT
        reply = await self.call("redeem", "authorization", "Redeem", apb.RedeemRequest(
            request_id=self._request_id("red"), order_id=f"o-{self._request}",
            card=card_pb2.CardRef(card_number=card), amount=usd(self.rng.randint(1_00, 40_00)), mode=mode), (card,))
        if reply is not None and reply.redeemed.amount_minor > 0:
            self.model.move(card, -reply.redeemed.amount_minor, "redeemed")
            # Voids and refunds race on the same redemptions: only one of them may give money back.
            self.pools.redemptions.append(reply.transaction.transaction_id)
            self.pools.payments.append(reply.transaction.transaction_id)

    async def checkout(self) -> None:
        """Two cards redeemed as one order; a declined external tender (or a card short of
        funds) makes the mesh void the approved ones."""
        if len(self.pools.cards) < 2:
            return
        cards = tuple(self.rng.sample(self.pools.cards, 2))
        request = apb.CheckoutRequest(
            request_id=self._request_id("chk"), order_id=f"o-{self._request}", action=apb.CHECKOUT_ACTION_REDEEM,
            tenders=[apb.CheckoutTender(card=card_pb2.CardRef(card_number=c), amount=usd(self.rng.randint(1_00, 25_00)))
                     for c in cards],
            external_tenders=[apb.ExternalTender(kind="credit_card", approved=self.rng.random() < 0.8)])
        reply = await self.call("checkout", "authorization", "Checkout", request, cards)
        self._apply_late("checkout", request, reply)
        for tender in reply.tenders if reply is not None else ():
            if tender.state == apb.TENDER_STATE_APPROVED:
                self.pools.redemptions.append(tender.reference_id)
                self.pools.payments.append(tender.reference_id)

    async def void(self) -> None:
        if not self.pools.redemptions:
            return
        transaction_id = self.rng.choice(self.pools.redemptions)
        reply = await self.call("void", "authorization", "VoidRedemption", apb.VoidRedemptionRequest(
            request_id=self._request_id("void"), transaction_id=transaction_id), tuple(self.pools.cards))
        # A second void of one redemption answers the first one's outcome (credited again in the
        # reply, not on the card): the model counts the credit once.
        if reply is not None and reply.credited.amount_minor > 0 and transaction_id not in self.pools.voided:
            self.pools.voided.add(transaction_id)
            self._credit(reply.redemption.masked_number, reply.credited.amount_minor, "voided")

    async def refund(self) -> None:
        if not self.pools.payments:
            return
        transaction_id = self.rng.choice(self.pools.payments)
        reply = await self.call("refund", "refund", "Refund", rpb.RefundRequest(
            request_id=self._request_id("ref"), transaction_id=transaction_id,
            amount=usd(self.rng.randint(1, 10_00))), tuple(self.pools.cards))
        if reply is not None:
            for part in reply.parts:
                self._credit(part.masked_number, part.amount.amount_minor, "refunded")

    async def reload(self) -> None:
        card = self._card()
        if card is None:
            return
        amount = self.rng.randint(1_00, 20_00)
        reply = await self.call("reload", "refund", "Reload", rpb.ReloadRequest(
            request_id=self._request_id("rld"), card=card_pb2.CardRef(card_number=card), amount=usd(amount)), (card,))
        if reply is not None:
            self.model.move(card, amount, "reloaded")

    async def cash_out(self) -> None:
        if len(self.pools.cards) < 2:
            return
        card = self._card()
        self.pools.cards.remove(card)  # no new operations on it while it is being cashed out
        reply = await self.call("cash_out", "refund", "CashOut", rpb.CashOutRequest(
            request_id=self._request_id("cash"), card=card_pb2.CardRef(card_number=card), reason="chaos"), (card,))
        if reply is not None:
            self.model.move(card, -reply.amount_removed.amount_minor, "cashed_out")
        else:
            self.pools.cards.append(card)
        self.pools.cards.append(await self.new_card())

    async def exchange(self) -> None:
        if len(self.pools.cards) < 2:
            return
        card = self._card()
        self.pools.cards.remove(card)
        target = await self.new_card(active=False)
        reply = await self.call("exchange", "fulfillment", "ExchangeCard", fpb.ExchangeCardRequest(
            request_id=self._request_id("xchg"), from_card=card_pb2.CardRef(card_number=card),
            to_card=card_pb2.CardRef(card_number=target), reason=fpb.EXCHANGE_REASON_LOST), (card, target))
        if reply is not None:
            self.model.move(card, -reply.moved.amount_minor, "exchanged_out")
            self.model.move(target, reply.moved.amount_minor, "exchanged_in")
            self.pools.cards.append(target)
        else:
            self.pools.cards.append(card)

    def _credit(self, mask: str, amount: int, flow: str) -> None:
        number = self.model.by_mask.get(mask)
        if number is None:
            self.model.wrong.append(f"{flow} credited an unknown card {mask}")
        else:
            self.model.move(number, amount, flow)

    # -- driving ----------------------------------------------------------------------------------

    async def client(self, operations: int, stop: asyncio.Event | None = None) -> None:
        for _ in range(operations):
            if stop is not None and stop.is_set():
                return
            op = self.rng.choices(OPERATIONS, [0 if o in self.exclude else w for o, w in zip(OPERATIONS, WEIGHTS)])[0]
            await getattr(self, op)()

    async def run(self, clients: int, operations_per_client: int, stop: asyncio.Event | None = None) -> None:
        await asyncio.gather(*(self.client(operations_per_client, stop) for _ in range(clients)))

    # -- the end --------------------------------------------------------------------------------

    async def mismatches(self) -> list[str]:
        """Cards whose ledger balance differs from what the clients were told."""
        found = []
        for number, expected in self.model.expected.items():
            if number in self.model.uncertain:
                continue
            state = await self.ledger.get_card(self.merchant, number)
            if state.balance_minor != expected:
                history = [(e["kind"], e["amount_minor"]) for e in await self.ledger.history(self.merchant, number)]
                told = [(flow, delta) for card, flow, delta in self.model.journal if card == number]
                found.append(f"{masked(number)}: ledger {state.balance_minor}, acknowledged operations {expected}"
                             f"\n  ledger history {history}\n  acknowledged {told}")
        return found

    async def duplicate_effects(self) -> list[str]:
        """History entries of one kind with the same client reference (the mesh's reference_id)
        more than once on a card: an effect applied twice."""
        found = []
        for number in self.model.expected:
            seen: Counter = Counter()
            for entry in await self.ledger.history(self.merchant, number):
                if entry.get("client_txn_id"):
                    seen[(entry["kind"], entry["client_txn_id"], entry.get("hold_id", ""))] += 1
            found += [f"{masked(number)}: {key} applied {count} times" for key, count in seen.items() if count > 1]
        return found

    def figures(self) -> dict:
        calls = sum(self.model.calls.values())
        return {
            "operations": calls, "ok": sum(v for k, v in self.model.calls.items() if k.endswith(":ok")),
            "refused": sum(v for k, v in self.model.calls.items() if k.endswith(":refused")),
            "unknown": sum(v for k, v in self.model.calls.items() if k.endswith(":unknown")),
            "retries": self.model.retries, "cards": len(self.model.expected),
            "uncertain_cards": len(self.model.uncertain), "unresolved": self.model.unresolved,
            "slowest_answer": list(self.model.slowest),
            "statuses": dict(self.model.statuses), "flows": dict(self.model.flows),
            "seconds": round(time.monotonic() - self.started, 1),
        }


def run_audit(redis_url: str, *, grace_seconds: float = 300, cluster: bool = False) -> AuditReport:
    client = (redis.RedisCluster.from_url(redis_url) if cluster else redis.Redis.from_url(redis_url))
    try:
        return LedgerAudit(client, intent_grace_seconds=grace_seconds).run()
    finally:
        client.close()


def stubs_for(channel_of):
    """`channel_of()` -> the current channel; stubs are rebuilt per call (cheap), so a restarted
    server behind a new channel is picked up."""
    return lambda service: SPECS[service].stub(channel_of())
