"""The money audit: every invariant of the native ledger and of the mesh's own records, read from
Redis (one implementation, used by `giftcard audit` and by every chaos test).

Per native card (`{gc:<merchant>:<card_id>}`, gateway/adapters/native/ledger.py):
    balance == sum of the history's deltas; balance >= 0; 0 <= held <= balance;
    held == the open amount of its open holds; per hold 0 <= captured + released <= amount.
Per mesh hold (`mesh:hold:{hold:...}`, services/shared/holds.py):
    every amount >= 0; captured + released + reserved + transferred <= authorized.
Per refunded payment (`refund:{txn:...}` / `refund:{stl:...}:<id>`, services/refund/refunds.py):
    0 <= refunded <= total (reserved + done) <= what the payment moved (redeemed - voided, or
    captured).
Per redemption (`mesh:txn:{txn:...}`): 0 <= reversed_amount <= redeemed.
Per write-ahead intent (`mesh:intent:{intent:...}:<ref>`, services/shared/intents.py): older than
    the grace, it has a final outcome (done | failed | reversed); a pending one is money in limbo.

Reads are not one snapshot: run it on a quiet system (after the workload, or at night) or expect
transient findings on records being written right then. It only reads, with SCAN + pipelines, so
it works on a standalone Redis and on Redis Cluster (redis-py scans every primary).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from services.shared.keys import merchant_part

FINAL_INTENT_STATES = ("done", "failed", "reversed")


@dataclass(frozen=True)
class Violation:
    merchant: str
    subject: str  # masked card number or record id: never a card number
    problem: str

    def __str__(self) -> str:
        return f"VIOLATION {self.merchant} {self.subject}: {self.problem}"


@dataclass
class AuditReport:
    counts: Counter = field(default_factory=Counter)  # cards, holds, native_holds, refunds, ...
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        counts = ", ".join(f"{name} {self.counts[name]}" for name in sorted(self.counts))
        return f"audit: {counts}; {len(self.violations)} violation(s)"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value, default: int = 0) -> int:
    return default if value in (None, b"", "") else int(value)


def _glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _scan(client, pattern: str) -> Iterator[str]:
    seen = set()  # SCAN may return a key twice
    for raw in client.scan_iter(match=pattern, count=500):
        key = _text(raw)
        if key not in seen:
            seen.add(key)
            yield key


def _chunks(keys: Iterator[str], size: int = 200) -> Iterator[list[str]]:
    chunk: list[str] = []
    for key in keys:
        chunk.append(key)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _merchant_of(tagged: str, kind: str) -> str:
    """`...{<kind>:<merchant>:<id>}...` -> merchant (percent-encoded for mesh records)."""
    inner = tagged[tagged.index("{") + 1: tagged.index("}")]
    return inner[len(kind) + 1:].rpartition(":")[0]


class LedgerAudit:
    """Runs every check; `run()` returns an AuditReport. `client` is a synchronous redis-py client
    (Redis or RedisCluster)."""

    def __init__(self, client, *, merchant: str | None = None, intent_grace_seconds: float = 300,
                 now_ms: int | None = None, on_card=None) -> None:
        self._client = client
        self._merchant = merchant
        self._grace_ms = int(intent_grace_seconds * 1000)
        self._now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        self._on_card = on_card  # progress callback (cards so far, violations so far)

    def run(self) -> AuditReport:
        report = AuditReport()
        self.cards(report)
        self.holds(report)
        self.redemptions(report)
        self.refunds(report)
        self.intents(report)
        return report

    # -- native ledger -----------------------------------------------------------------------

    def cards(self, report: AuditReport) -> None:
        pattern = "{gc:*}:card" if self._merchant is None else "{gc:" + _glob(self._merchant) + ":*}:card"
        for chunk in _chunks(_scan(self._client, pattern)):
            pipe = self._client.pipeline(transaction=False)
            for key in chunk:
                prefix = key[: -len(":card")]
                pipe.hmget(prefix + ":card", "balance", "held", "masked")
                pipe.lrange(prefix + ":history", 0, -1)
                pipe.hvals(prefix + ":holds")
            replies = pipe.execute()
            for index, key in enumerate(chunk):
                (balance, held, masked), history, holds = replies[3 * index: 3 * index + 3]
                merchant = key[len("{gc:"): key.rindex("}")].rpartition(":")[0]
                report.counts["cards"] += 1
                report.counts["history_entries"] += len(history)
                report.counts["native_holds"] += len(holds)
                for problem in card_problems(balance, held, history, holds):
                    report.violations.append(Violation(merchant, _text(masked or b"?"), problem))
                if self._on_card:
                    self._on_card(report.counts["cards"], len(report.violations))

    # -- mesh records ------------------------------------------------------------------------

    def _mesh_pattern(self, prefix: str, kind: str, suffix: str = "") -> str:
        owner = "*" if self._merchant is None else _glob(merchant_part(self._merchant)) + ":*"
        return f"{prefix}{{{kind}:{owner}}}{suffix}"

    def _records(self, pattern: str, fields: tuple[str, ...]) -> Iterator[tuple[str, list]]:
        for chunk in _chunks(_scan(self._client, pattern)):
            pipe = self._client.pipeline(transaction=False)
            for key in chunk:
                pipe.hmget(key, *fields)
            yield from zip(chunk, pipe.execute())

    def holds(self, report: AuditReport) -> None:
        fields = ("hold_id", "authorized", "captured", "released", "reserved", "transferred", "state")
        for key, values in self._records(self._mesh_pattern("mesh:hold:", "hold"), fields):
            hold_id, *amounts, state = values
            report.counts["holds"] += 1
            authorized, captured, released, reserved, transferred = (_int(v) for v in amounts)
            subject = "hold " + _text(hold_id or key)
            merchant = _merchant_of(key, "hold")
            if min(authorized, captured, released, reserved, transferred) < 0:
                report.violations.append(Violation(merchant, subject, f"negative amount in {values}"))
            used = captured + released + reserved + transferred
            if used > authorized:
                report.violations.append(Violation(
                    merchant, subject, f"captured {captured} + released {released} + reserved {reserved}"
                    f" + transferred {transferred} = {used} exceeds authorized {authorized}"))

    def redemptions(self, report: AuditReport) -> None:
        fields = ("transaction_id", "redeemed", "reversed_amount", "reversed_from")
        for key, (transaction_id, redeemed, reversed_amount, reversed_from) in self._records(
                self._mesh_pattern("mesh:txn:", "txn"), fields):
            report.counts["redemptions"] += 1
            redeemed, reversed_amount = _int(redeemed), _int(reversed_amount)
            # Reversed while still pending (its outcome was unknown: a timeout): the mesh never
            # learned `redeemed`, and the reversal gave back whatever the provider had taken.
            # (The resolver moves pending -> reversed without `reversed_from`.)
            origin = _text(reversed_from or b"")
            unknown = origin == "pending" or (not origin and redeemed == 0)
            if reversed_amount < 0 or (not unknown and reversed_amount > max(redeemed, 0)):
                report.violations.append(Violation(
                    _merchant_of(key, "txn"), "transaction " + _text(transaction_id or key),
                    f"voided {reversed_amount} outside 0..redeemed ({redeemed})"))

    def refunds(self, report: AuditReport) -> None:
        for pattern in (self._mesh_pattern("refund:", "txn"), self._mesh_pattern("refund:", "stl", ":*")):
            for key, (total, refunded) in self._records(pattern, ("total", "refunded")):
                report.counts["refunded_payments"] += 1
                kind = "stl" if key.startswith("refund:{stl:") else "txn"
                merchant = _merchant_of(key, kind)
                payment = key.rsplit(":", 1)[1] if kind == "stl" else _payment_id(key)
                total, refunded = _int(total), _int(refunded)
                paid = self._paid(key, kind, payment)
                subject = "payment " + payment
                if not 0 <= refunded <= total:
                    report.violations.append(Violation(merchant, subject, f"refunded {refunded} outside 0..{total}"))
                if paid is None:
                    report.violations.append(Violation(merchant, subject, "refunds of a payment with no record"))
                elif total > paid:
                    report.violations.append(Violation(
                        merchant, subject, f"refunds {total} (reserved + done) exceed what was paid ({paid})"))

    def _paid(self, refund_key: str, kind: str, payment: str) -> int | None:
        tag = refund_key[refund_key.index("{"): refund_key.index("}") + 1]
        if kind == "stl":
            raw = self._client.hget(f"mesh:stl:{tag}:items", payment)
            return None if raw is None else _int(json.loads(raw).get("captured"))
        redeemed, reversed_amount = self._client.hmget(f"mesh:txn:{tag}", "redeemed", "reversed_amount")
        return None if redeemed is None else _int(redeemed) - _int(reversed_amount)

    def intents(self, report: AuditReport) -> None:
        fields = ("operation", "state", "created_ms", "reference_id")
        cutoff = self._now_ms - self._grace_ms
        for key, (operation, state, created_ms, reference) in self._records(
                self._mesh_pattern("mesh:intent:", "intent", ":*"), fields):
            report.counts["intents"] += 1
            state = _text(state or b"")
            if state in FINAL_INTENT_STATES:
                continue
            report.counts["intents_open"] += 1
            if _int(created_ms) < cutoff:
                report.violations.append(Violation(
                    _merchant_of(key, "intent"), "intent " + _text(reference or key.rsplit(":", 1)[1]),
                    f"{_text(operation or b'?')} still {state or 'without state'} after the grace period"))


def _payment_id(refund_key: str) -> str:
    """`refund:{txn:<merchant>:<transaction_id>}` -> transaction_id."""
    return refund_key[refund_key.index("{") + 1: refund_key.index("}")].rpartition(":")[2]


def card_problems(balance_raw, held_raw, history, holds) -> list[str]:
    """The native card invariants, from its raw `balance`, `held`, history entries and holds."""
    try:
        balance, held = int(balance_raw), int(held_raw or 0)
    except (TypeError, ValueError):
        return ["card record has no numeric balance/held"]
    problems = []
    total = sum(int(json.loads(entry).get("amount_minor", 0)) for entry in history)
    if total != balance:
        problems.append(f"history sums to {total}, balance is {balance}")
    if balance < 0:
        problems.append(f"negative balance {balance}")
    if not 0 <= held <= max(balance, 0):
        problems.append(f"held {held} outside 0..balance ({balance})")
    open_total = 0
    for raw in holds:
        hold = json.loads(raw)
        amount = int(hold.get("amount_minor", 0))
        used = int(hold.get("captured_minor", 0)) + int(hold.get("released_minor", 0))
        if not 0 <= used <= amount:
            problems.append(f"hold {hold.get('hold_id', '?')}: captured + released {used} outside 0..{amount}")
        if hold.get("state") == "open":
            open_total += amount - used
    if open_total != held:
        problems.append(f"open holds total {open_total}, held is {held}")
    return problems


def audit_redis(client, *, merchant: str | None = None, intent_grace_seconds: float = 300) -> AuditReport:
    return LedgerAudit(client, merchant=merchant, intent_grace_seconds=intent_grace_seconds).run()
