"""Fulfillment flows over the gateway: physical activation at ship-confirm, e-gift issuance
(allocate -> activate -> issue value, or a claim link), card exchange.

Every order line has one activation record (activations.py). Each step's result is written to it
before the next step starts, and each gateway call carries a reference_id derived from the record
(activation id, attempt, step), so a request that dies anywhere is resumed by the next request for
the same line: finished steps are skipped, an interrupted step is re-sent with the same reference
and the provider replays it. In particular an allocated e-gift card is never replaced by a second
allocation: its credentials sit in the record (sealed) until the line completes.

A step refused for good (CARD_ALREADY_ACTIVE, INVALID_PIN, ...) marks the record FAILED with the
reason; a transient failure (UNAVAILABLE, timeout, crash) leaves it where it was, to be resumed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import asdict, dataclass, field

import grpc

from common.cards import CardId
from common.errors import CARD_ALREADY_ACTIVE, CARD_HAS_OPEN_HOLDS, MeshError, failed_precondition
from common.idempotency import TRANSIENT_CODES
from common.money import Money
from common.sealing import Sealer
from giftcard.gateway.v1 import gateway_pb2
from giftcard.type.v1 import card_pb2, money_pb2
from services.fulfillment.activations import (
    ACTIVATED,
    ALLOCATED,
    COMPLETED,
    FAILED,
    LIVE_STATES,
    PENDING,
    ActivationRecord,
    ActivationStore,
)

log = logging.getLogger("giftcard.fulfillment")

ACTIVATION_MISMATCH = "ACTIVATION_MISMATCH"
ACTIVATION_FAILED = "ACTIVATION_FAILED"
# A line moves through at most four states; more rounds means records are being fought over.
_MAX_ROUNDS = 8


@dataclass(frozen=True)
class IssuedCredentials:
    """An e-gift's credentials as the caller receives them once. Secrets: not in reprs."""

    card_number: str = field(default="", repr=False)
    pin: str = field(default="", repr=False)
    cvv2: str = field(default="", repr=False)
    claim_url: str = field(default="", repr=False)
    proxy_number: str = ""

    @property
    def is_claim_link(self) -> bool:
        return bool(self.claim_url)


def _money_pb(money: Money) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=money.amount_minor, currency_code=money.currency)


def _is_final(error: MeshError) -> bool:
    return not error.retryable and error.code not in TRANSIENT_CODES


class FulfillmentLogic:
    def __init__(self, gateway, store: ActivationStore, sealer: Sealer, fingerprint_key: bytes) -> None:
        self._gateway = gateway
        self._store = store
        self._sealer = sealer
        self._key = fingerprint_key

    # -- physical cards ------------------------------------------------------------------------

    async def activate_physical(
        self, merchant: str, order_id: str, line_id: str, card: CardId,
        card_ref: card_pb2.CardRef, amount: Money, promo_code: str,
    ) -> ActivationRecord:
        record = await self._begin(
            merchant, order_id, line_id, "physical", amount,
            ("physical", card.kind, card.value, amount.amount_minor, amount.currency, promo_code),
        )
        for _ in range(_MAX_ROUNDS):
            if record.state == PENDING:
                reply = await self._step(record, self._gateway.Activate(gateway_pb2.ActivateRequest(
                    reference_id=record.reference("activate"), card=card_ref,
                    amount=_money_pb(amount), promo_code=promo_code,
                )))
                _, record = await self._store.transition(
                    record, (PENDING,), ACTIVATED, masked=reply.result.masked_number,
                    provider=reply.result.provider, transaction_id=reply.result.provider_transaction_id,
                )
            elif record.state == ACTIVATED:
                record = await self._finish(merchant, record, card_ref, amount)
            else:
                return self._settled(record)
        raise _contended(record)

    # -- electronic cards ----------------------------------------------------------------------

    async def issue_electronic(
        self, merchant: str, order_id: str, line_id: str, program_id: str, amount: Money,
        promo_code: str,
    ) -> tuple[ActivationRecord, IssuedCredentials]:
        record = await self._begin(
            merchant, order_id, line_id, "egift", amount,
            ("egift", program_id, amount.amount_minor, amount.currency, promo_code),
        )
        if record.state == COMPLETED:  # completed by the resolver: this request takes the credentials
            return record, await self._take_resumed(record)
        return await self._drive_egift(merchant, record, program_id, amount, promo_code)

    async def _drive_egift(
        self, merchant: str, record: ActivationRecord, program_id: str | None, amount: Money,
        promo_code: str, *, resumed: bool = False,
    ) -> tuple[ActivationRecord, IssuedCredentials]:
        """Moves an e-gift line from its recorded state to COMPLETED; the request and the resolver
        (program_id None: it only continues lines that are past allocation) run this same code, so
        they send the same steps under the same reference ids."""
        creds = self._unseal(record) if record.sealed else None
        for _ in range(_MAX_ROUNDS):
            if record.state == PENDING:
                if program_id is None:
                    raise _contended(record)
                reply = await self._step(record, self._gateway.Allocate(gateway_pb2.AllocateRequest(
                    reference_id=record.reference("allocate"), program_id=program_id,
                    amount=_money_pb(amount),
                )))
                creds = IssuedCredentials(
                    card_number=reply.card_number, pin=reply.pin, cvv2=reply.cvv2,
                    claim_url=reply.claim_url, proxy_number=reply.proxy_number,
                )
                # Written down before anything else happens to the card: from here on a retry
                # continues with THIS card (the provider would replay the allocation anyway).
                # The promo code goes along so that the resolver can send the same activation.
                moved, record = await self._store.transition(
                    record, (PENDING,), ACTIVATED if reply.activated else ALLOCATED,
                    sealed=self._seal(record, creds), masked=reply.result.masked_number,
                    provider=reply.result.provider, promo_code=promo_code,
                    transaction_id=reply.result.provider_transaction_id if reply.activated else "",
                )
                if not moved and record.sealed:
                    creds = self._unseal(record)
            elif record.state == ALLOCATED:
                creds = creds or self._unseal(record)
                reply = await self._step(record, self._gateway.Activate(gateway_pb2.ActivateRequest(
                    reference_id=record.reference("activate"), card=_card_ref(creds),
                    amount=_money_pb(amount), promo_code=promo_code,
                )))
                _, record = await self._store.transition(
                    record, (ALLOCATED,), ACTIVATED, provider=reply.result.provider,
                    transaction_id=reply.result.provider_transaction_id,
                )
            elif record.state == ACTIVATED:
                creds = creds or self._unseal(record)
                card_ref = None if creds.is_claim_link else _card_ref(creds)
                record = await self._finish(merchant, record, card_ref, amount, keep_sealed=resumed)
            else:
                record = self._settled(record)
                if creds is None:  # completed by a concurrent request that handed them out
                    raise _already_active(record)
                if not resumed and record.get("resumed") == "1":
                    # The resolver completed it under this request: this request hands the
                    # credentials out, so they need not wait on the record any longer.
                    await self._store.transition(record, (COMPLETED,), COMPLETED, sealed="", resumed="")
                return record, creds
        raise _contended(record)

    # -- the resolver ----------------------------------------------------------------------------

    async def resume(self, merchant: str, older_than_seconds: float) -> int:
        """Finishes e-gift lines a crash left ALLOCATED or ACTIVATED for longer than the grace
        period, exactly as the client's retry would (same steps, same reference ids, so the
        provider replays what it already did: never a second allocation or load). The line is
        COMPLETED and its order event published once (activation_complete.lua); the sealed
        credentials stay on the record for the client's retry of the request to receive.
        Returns the number of lines completed; a line that fails for good is marked FAILED, a
        transient failure leaves it for the next run. Physical lines are not resumed here: their
        card is not stored, so only the client's retry can finish them."""
        completed = 0
        for key in await self._store.unfinished(merchant, int(older_than_seconds * 1000)):
            record = await self._store.get_key(key)
            if record is None:
                await self._store.forget(merchant, key)
                continue
            if record.state not in (ALLOCATED, ACTIVATED) or record.get("kind") != "egift":
                continue  # moved on since the index was read
            amount = Money(int(record.get("amount_minor")), record.get("currency"))
            try:
                await self._drive_egift(merchant, record, None, amount, record.get("promo_code"), resumed=True)
                completed += 1
            except Exception as error:  # noqa: BLE001 - one line's failure must not stop the others
                # Reason (or error type) and ids only: the record's credentials never reach a log.
                log.warning("e-gift line not resumed; the next run retries it", extra={
                    "merchant": merchant, "activation_id": record.activation_id,
                    "reason": getattr(error, "reason", type(error).__name__)})
        return completed

    async def _take_resumed(self, record: ActivationRecord) -> IssuedCredentials:
        """The credentials of a line the resolver completed, handed to the first request for it
        (the idempotency record keeps them sealed for its retries), then dropped from the record."""
        if not record.sealed or record.get("resumed") != "1":
            raise _already_active(record)
        creds = self._unseal(record)
        moved, _ = await self._store.transition(record, (COMPLETED,), COMPLETED, sealed="", resumed="")
        if not moved:
            raise _already_active(record)
        return creds

    # -- exchange ------------------------------------------------------------------------------

    async def exchange(
        self, request_id: str, from_ref: card_pb2.CardRef, to_ref: card_pb2.CardRef
    ) -> gateway_pb2.ExchangeResponse:
        """Whole balance of from_card -> inactive to_card; from_card deactivated.

        Rule for open holds: refused with FAILED_PRECONDITION CARD_HAS_OPEN_HOLDS (metadata
        held_minor). Held money is promised to an order; moving it would make that order's
        capture fail. Capture or release the holds first, then exchange. Checked here for every
        provider (the gateway reports native and shadow holds) and again atomically by the native
        ledger, which refuses the exchange itself while a hold is open."""
        balance = await self._gateway.GetBalance(gateway_pb2.GetBalanceRequest(card=from_ref))
        if balance.held.amount_minor > 0:
            raise failed_precondition(
                CARD_HAS_OPEN_HOLDS, "the card has open holds: capture or release them first",
                held_minor=str(balance.held.amount_minor),
            )
        return await self._gateway.Exchange(gateway_pb2.ExchangeRequest(
            reference_id=f"exchange.{request_id}", from_card=from_ref, to_card=to_ref,
        ))

    # -- queries -------------------------------------------------------------------------------

    async def get_activation(self, merchant: str, order_id: str, line_id: str) -> ActivationRecord | None:
        return await self._store.get(merchant, order_id, line_id)

    # -- steps ---------------------------------------------------------------------------------

    async def _begin(
        self, merchant: str, order_id: str, line_id: str, kind: str, amount: Money, parts: tuple
    ) -> ActivationRecord:
        status, record = await self._store.begin(
            merchant, order_id, line_id, fingerprint=self._fingerprint(merchant, *parts),
            activation_id="act_" + secrets.token_hex(12), kind=kind,
            amount_minor=amount.amount_minor, currency=amount.currency,
        )
        if status == "MISMATCH":
            raise failed_precondition(
                ACTIVATION_MISMATCH,
                "this order line already has an activation for a different card, program or amount",
                activation_id=record.activation_id, state=record.state,
            )
        if status == "COMPLETED" and not (kind == "egift" and record.get("resumed") == "1"):
            raise _already_active(record)
        return record

    async def _finish(
        self, merchant: str, record: ActivationRecord, card_ref: card_pb2.CardRef | None, amount: Money,
        *, keep_sealed: bool = False,
    ) -> ActivationRecord:
        """ACTIVATED -> COMPLETED: issue value where the provider loads separately from activation,
        then complete the record and publish the order event in one script."""
        transaction_id = ""
        if card_ref is not None:
            caps = await self._gateway.GetCapabilities(gateway_pb2.GetCapabilitiesRequest(card=card_ref))
            if caps.capabilities.issue_value:
                reply = await self._step(record, self._gateway.IssueValue(gateway_pb2.IssueValueRequest(
                    reference_id=record.reference("issue"), card=card_ref, amount=_money_pb(amount),
                )))
                transaction_id = reply.result.provider_transaction_id
        _, record = await self._store.complete(record, merchant, transaction_id, keep_sealed=keep_sealed)
        return record

    async def _step(self, record: ActivationRecord, call):
        try:
            return await call
        except MeshError as error:
            if _is_final(error):
                await self._store.transition(record, LIVE_STATES, FAILED, failure_reason=error.reason)
            raise

    def _settled(self, record: ActivationRecord) -> ActivationRecord:
        if record.state == COMPLETED:
            return record
        reason = record.get("failure_reason") or ACTIVATION_FAILED
        raise failed_precondition(reason, "the activation of this order line failed",
                                  activation_id=record.activation_id)

    def _fingerprint(self, merchant: str, *parts: object) -> str:
        material = "\0".join(str(part) for part in (merchant, *parts)).encode()
        return hmac.new(self._key, material, hashlib.sha256).hexdigest()

    def _seal(self, record: ActivationRecord, creds: IssuedCredentials) -> bytes:
        return self._sealer.seal(json.dumps(asdict(creds)).encode(), f"{record.key}|{record.attempt}".encode())

    def _unseal(self, record: ActivationRecord) -> IssuedCredentials:
        sealed = record.sealed
        if sealed is None:
            raise MeshError(grpc.StatusCode.INTERNAL, "INTERNAL", "the activation record lost its credentials")
        return IssuedCredentials(**json.loads(
            self._sealer.unseal(sealed, f"{record.key}|{record.attempt}".encode())
        ))


def _card_ref(creds: IssuedCredentials) -> card_pb2.CardRef:
    return card_pb2.CardRef(card_number=creds.card_number, pin=creds.pin or creds.cvv2)


def _already_active(record: ActivationRecord) -> MeshError:
    return failed_precondition(
        CARD_ALREADY_ACTIVE, "this order line's card is already activated; see GetActivation",
        activation_id=record.activation_id,
    )


def _contended(record: ActivationRecord) -> MeshError:
    return MeshError(grpc.StatusCode.ABORTED, "ACTIVATION_CONTENDED",
                     "the order line is being activated concurrently; retry", retryable=True)
