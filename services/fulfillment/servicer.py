"""FulfillmentService over gRPC: proto <-> FulfillmentLogic, every mutating RPC idempotent by
request_id. IssueElectronicCard's stored response carries the one-time credentials, so it is
sealed (AES-GCM) in the idempotency record: a retry gets them again, Redis never sees them."""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf import timestamp_pb2

from common.config import MerchantSettings
from common.context import current_call
from common.errors import invalid_argument, not_found
from common.idempotency import IdempotencyStore
from common.sealing import Sealer
from common.validation import card_from_proto, money_from_proto, require_id
from giftcard.fulfillment.v1 import fulfillment_pb2 as pb
from giftcard.fulfillment.v1 import fulfillment_pb2_grpc
from giftcard.type.v1 import money_pb2
from services.fulfillment.activations import ActivationRecord
from services.fulfillment.logic import FulfillmentLogic

_SERVICE = pb.DESCRIPTOR.services_by_name["FulfillmentService"].full_name
_STATE = {
    "PENDING": pb.ACTIVATION_STATE_PENDING,
    "ALLOCATED": pb.ACTIVATION_STATE_ALLOCATED,
    "ACTIVATED": pb.ACTIVATION_STATE_ACTIVATED,
    "COMPLETED": pb.ACTIVATION_STATE_COMPLETED,
    "FAILED": pb.ACTIVATION_STATE_FAILED,
}


def _timestamp(ms: str) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    if ms:
        stamp.FromMilliseconds(int(ms))
    return stamp


def activation_pb(record: ActivationRecord) -> pb.Activation:
    return pb.Activation(
        activation_id=record.activation_id,
        order_id=record.get("order_id"),
        line_id=record.get("line_id"),
        masked_number=record.get("masked"),
        amount=money_pb2.Money(
            amount_minor=int(record.get("amount_minor", "0")), currency_code=record.get("currency")
        ),
        state=_STATE.get(record.state, pb.ACTIVATION_STATE_UNSPECIFIED),
        provider=record.get("provider"),
        transaction_id=record.get("transaction_id"),
        failure_reason=record.get("failure_reason"),
        create_time=_timestamp(record.get("create_ms")),
        update_time=_timestamp(record.get("update_ms")),
    )


def _line_id(value: str, field: str) -> str:
    # `/` separates order and line in the record key; require_id already refuses it.
    return require_id(value, field)


class FulfillmentServicer(fulfillment_pb2_grpc.FulfillmentServiceServicer):
    def __init__(
        self, logic: FulfillmentLogic, idempotency: IdempotencyStore, sealer: Sealer,
        merchants: Mapping[str, MerchantSettings],
    ) -> None:
        self._logic = logic
        self._idempotency = idempotency
        self._sealer = sealer
        self._merchants = merchants

    def _currencies(self, merchant: str) -> list[str] | None:
        settings = self._merchants.get(merchant)
        return settings.currencies if settings else None

    async def ActivatePhysicalCard(self, request: pb.ActivatePhysicalCardRequest, context=None):
        merchant = current_call().merchant_id
        order_id = require_id(request.order_id, "order_id")
        line_id = _line_id(request.line_id, "line_id")
        card = card_from_proto(request.card)
        amount = money_from_proto(request.amount, "amount", allowed_currencies=self._currencies(merchant))
        promo_code = require_id(request.promo_code, "promo_code", required=False)

        async def handler():
            record = await self._logic.activate_physical(
                merchant, order_id, line_id, card, request.card, amount, promo_code
            )
            return pb.ActivatePhysicalCardResponse(activation=activation_pb(record))

        return await self._idempotency.run(
            merchant, f"{_SERVICE}/ActivatePhysicalCard", request.request_id, request, handler,
            pb.ActivatePhysicalCardResponse,
        )

    async def IssueElectronicCard(self, request: pb.IssueElectronicCardRequest, context=None):
        merchant = current_call().merchant_id
        order_id = require_id(request.order_id, "order_id")
        line_id = _line_id(request.line_id, "line_id")
        program_id = require_id(request.program_id, "program_id")
        amount = money_from_proto(request.amount, "amount", allowed_currencies=self._currencies(merchant))
        promo_code = require_id(request.promo_code, "promo_code", required=False)
        rpc = f"{_SERVICE}/IssueElectronicCard"

        async def handler():
            record, creds = await self._logic.issue_electronic(
                merchant, order_id, line_id, program_id, amount, promo_code
            )
            response = pb.IssueElectronicCardResponse(activation=activation_pb(record))
            if creds.is_claim_link:
                response.claim_link.CopyFrom(pb.ClaimLink(url=creds.claim_url, proxy_number=creds.proxy_number))
            else:
                response.card.CopyFrom(pb.IssuedCard(card_number=creds.card_number, pin=creds.pin, cvv2=creds.cvv2))
            return response

        context_bytes = f"{merchant}|{rpc}|{request.request_id}".encode()
        return await self._idempotency.run(
            merchant, rpc, request.request_id, request, handler, pb.IssueElectronicCardResponse,
            seal=lambda payload: self._sealer.seal(payload, context_bytes),
            unseal=lambda payload: self._sealer.unseal(payload, context_bytes),
        )

    async def ExchangeCard(self, request: pb.ExchangeCardRequest, context=None):
        merchant = current_call().merchant_id
        from_card = card_from_proto(request.from_card, "from_card")
        to_card = card_from_proto(request.to_card, "to_card")
        if from_card.kind == to_card.kind and from_card.value == to_card.value:
            raise invalid_argument("to_card", "to_card must differ from from_card")

        async def handler():
            reply = await self._logic.exchange(request.request_id, request.from_card, request.to_card)
            return pb.ExchangeCardResponse(
                moved=reply.result.amount, from_masked_number=from_card.masked,
                to_masked_number=reply.to_masked_number or to_card.masked,
                transaction_id=reply.result.provider_transaction_id,
            )

        return await self._idempotency.run(
            merchant, f"{_SERVICE}/ExchangeCard", request.request_id, request, handler, pb.ExchangeCardResponse,
        )

    async def GetActivation(self, request: pb.GetActivationRequest, context=None):
        merchant = current_call().merchant_id
        order_id = require_id(request.order_id, "order_id")
        line_id = _line_id(request.line_id, "line_id")
        record = await self._logic.get_activation(merchant, order_id, line_id)
        if record is None:
            raise not_found("activation", "ACTIVATION_NOT_FOUND")
        return pb.GetActivationResponse(activation=activation_pb(record))
