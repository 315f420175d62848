"""Transaction records (redemptions and their voids/reversals) and the client_transaction_id index.

    mesh:txn:{txn:<merchant>:<transaction_id>}            hash
        transaction_id, client_transaction_id, kind (redemption), state, order_id, card (sealed,
        record key bound), masked, currency, amount (asked, excluding tip), tip (asked),
        redeemed (debited in total, tip included), redeemed_tip, balance_after, provider,
        provider_transaction_id, reference_id (sent to the provider), created_ms,
        reversal_reference, reversed_amount, reversed_ms, decline_reason, checkout_id
    mesh:client:{client:<merchant>:<client_transaction_id>} hash
        target_kind (redemption | hold), target_id, reference_id, card (sealed), created_ms
        | tombstone = 1 (reversed before anything arrived)

States: pending (written before the provider call) -> approved | declined; approved -> reversing
-> reversed; pending -> reversed (the reversal came first). What a later refund needs is here:
`redeemed` per transaction, and `reversed_amount` once voided.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from common.errors import TRANSACTION_NOT_FOUND, TRANSACTION_REFUNDED, failed_precondition, not_found
from common.sealing import Sealer
from giftcard.type.v1 import card_pb2
from services.shared.holds import now_ms
from services.shared.keys import record_key, redemption_refunds_key
from services.shared.orders import OrderIndex
from services.shared.scripts import Scripts, decode_hash, text

PENDING, APPROVED, DECLINED, REVERSING, REVERSED = "pending", "approved", "declined", "reversing", "reversed"
REDEMPTION = "redemption"

_INT_FIELDS = ("amount", "tip", "redeemed", "redeemed_tip", "balance_after", "created_ms",
               "reversed_amount", "reversed_ms", "reversal_found")


@dataclass(frozen=True)
class TransactionRecord:
    transaction_id: str
    client_transaction_id: str
    kind: str
    state: str
    order_id: str
    masked: str
    currency: str
    amount: int
    tip: int
    redeemed: int
    redeemed_tip: int
    balance_after: int
    provider: str
    provider_transaction_id: str
    reference_id: str
    created_ms: int
    reversal_reference: str
    reversed_amount: int
    reversed_ms: int
    decline_reason: str
    checkout_id: str
    # 1 when the reversal found the transaction applied and undid it; 0: it never arrived.
    reversal_found: int


@dataclass(frozen=True)
class ClientBinding:
    tombstone: bool
    target_kind: str = ""
    target_id: str = ""
    reference_id: str = ""


class TransactionStore:
    def __init__(self, redis: Redis, sealer: Sealer) -> None:
        self._redis = redis
        self._scripts = Scripts(redis)
        self._sealer = sealer
        self.orders = OrderIndex(redis)

    @staticmethod
    def key(merchant: str, transaction_id: str) -> str:
        return record_key("txn", merchant, transaction_id)

    @staticmethod
    def client_key(merchant: str, client_transaction_id: str) -> str:
        return record_key("client", merchant, client_transaction_id)

    # -- transactions ---------------------------------------------------------------------------

    async def create_pending(
        self, merchant: str, *, transaction_id: str, card: card_pb2.CardRef, masked: str,
        currency: str, amount: int, tip: int, order_id: str, client_transaction_id: str,
        reference_id: str, kind: str = REDEMPTION, checkout_id: str = "",
    ) -> str:
        """Write the record before the provider call; returns its state (not pending: a retry).
        The order index entry comes first (see orders.py: it may name a payment never approved,
        never miss an approved one)."""
        if order_id:
            await self.orders.add(merchant, order_id, transaction_id)
        key = self.key(merchant, transaction_id)
        fields = {
            "transaction_id": transaction_id, "client_transaction_id": client_transaction_id,
            "kind": kind, "state": PENDING, "order_id": order_id,
            "card": self._sealer.seal(card.SerializeToString(), key.encode()), "masked": masked,
            "currency": currency, "amount": amount, "tip": tip, "redeemed": 0, "redeemed_tip": 0,
            "balance_after": 0, "provider": "", "provider_transaction_id": "",
            "reference_id": reference_id, "created_ms": now_ms(), "reversal_reference": "",
            "reversed_amount": 0, "reversed_ms": 0, "decline_reason": "", "checkout_id": checkout_id,
            "reversal_found": 0,
        }
        return text(await self._scripts("txn_create", [key], _flat(fields)))

    async def transition(
        self, merchant: str, transaction_id: str, expected: tuple[str, ...], new_state: str, *,
        unless_refunded: bool = False, **fields,
    ) -> tuple[bool, str]:
        """(True, new_state) when moved; (False, current_state) when the state was not expected.
        `unless_refunded`: refuse (TRANSACTION_REFUNDED) while any refund of it exists."""
        keys = [self.key(merchant, transaction_id)]
        if unless_refunded:
            keys.append(redemption_refunds_key(merchant, transaction_id))
        reply = await self._scripts("txn_transition", keys, [",".join(expected), new_state, *_flat(fields)])
        if text(reply[0]) == "REFUNDED":
            raise failed_precondition(
                TRANSACTION_REFUNDED, "part of this redemption was refunded; refund the rest instead",
                refunded_minor=text(reply[1]),
            )
        return text(reply[0]) == "OK", text(reply[1])

    async def get(self, merchant: str, transaction_id: str) -> TransactionRecord:
        raw = decode_hash(await self._redis.hgetall(self.key(merchant, transaction_id)))
        if not raw:
            raise not_found("transaction", TRANSACTION_NOT_FOUND)
        s = {k: text(v) for k, v in raw.items() if k != "card"}
        values = {name: (int(s.get(name) or 0) if name in _INT_FIELDS else s.get(name, ""))
                  for name in TransactionRecord.__dataclass_fields__}
        return TransactionRecord(**values)

    async def card(self, merchant: str, transaction_id: str) -> card_pb2.CardRef:
        key = self.key(merchant, transaction_id)
        sealed = await self._redis.hget(key, "card")
        if sealed is None:
            raise not_found("transaction", TRANSACTION_NOT_FOUND)
        return card_pb2.CardRef.FromString(self._sealer.unseal(sealed, key.encode()))

    # -- client_transaction_id index ------------------------------------------------------------

    async def claim_client_id(
        self, merchant: str, client_transaction_id: str, *, target_kind: str, target_id: str,
        reference_id: str, card: card_pb2.CardRef,
    ) -> bool:
        """Bind the caller's id to the operation before it is sent; True when new.
        TRANSACTION_REVERSED if it was reversed before arrival; CLIENT_TRANSACTION_ID_REUSED."""
        key = self.client_key(merchant, client_transaction_id)
        sealed = self._sealer.seal(card.SerializeToString(), key.encode())
        reply = await self._scripts(
            "client_claim", [key], [target_kind, target_id, reference_id, sealed, now_ms()]
        )
        return text(reply) == "NEW"

    async def release_client_id(self, merchant: str, client_transaction_id: str, target_id: str) -> bool:
        """Unbind the caller's id from an operation the provider refused for good."""
        return bool(await self._scripts("client_release", [self.client_key(merchant, client_transaction_id)],
                                        [target_id]))

    async def tombstone_or_binding(self, merchant: str, client_transaction_id: str) -> ClientBinding:
        """Reversal by client id: tombstone it if nothing was bound, else return the binding."""
        key = self.client_key(merchant, client_transaction_id)
        reply = text(await self._scripts("client_tombstone", [key], [now_ms()]))
        if reply == "TOMBSTONED":
            return ClientBinding(tombstone=True)
        raw = {k: text(v) for k, v in decode_hash(await self._redis.hgetall(key)).items() if k != "card"}
        return ClientBinding(False, raw["target_kind"], raw["target_id"], raw["reference_id"])

    async def client_card(self, merchant: str, client_transaction_id: str) -> card_pb2.CardRef:
        key = self.client_key(merchant, client_transaction_id)
        sealed = await self._redis.hget(key, "card")
        if sealed is None:
            raise not_found("transaction", TRANSACTION_NOT_FOUND)
        return card_pb2.CardRef.FromString(self._sealer.unseal(sealed, key.encode()))


def _flat(fields: dict) -> list:
    args: list = []
    for name, value in fields.items():
        args += [name, value]
    return args
