"""RefundService over gRPC: proto <-> RefundLogic, every mutating RPC idempotent by request_id.

RefundToNewCard's stored response can carry a new card's one-time credentials, so it is sealed
(AES-GCM) in the idempotency record. `Refund` by transaction_id refunds one redemption (recorded by
the authorization service in services/shared); by order_id it splits the amount over the order's
payments (services/shared/orders.py index, services/refund/split.py) and refunds each part.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from common.config import MerchantSettings
from common.context import current_call
from common.errors import MeshError, invalid_argument
from common.idempotency import IdempotencyStore
from common.sealing import Sealer
from common.validation import card_from_proto, money_from_proto, require_id
from giftcard.refund.v1 import refund_pb2 as pb
from giftcard.refund.v1 import refund_pb2_grpc
from services.refund.logic import FUND_EXISTING, NEW_CARD, RefundLogic, money_pb
from services.refund.split import FIRST_PAID_FIRST, LAST_PAID_FIRST, PRO_RATA

_SERVICE = pb.DESCRIPTOR.services_by_name["RefundService"].full_name
_POLICY_PB = {NEW_CARD: pb.REFUND_TO_CARD_POLICY_NEW_CARD, FUND_EXISTING: pb.REFUND_TO_CARD_POLICY_FUND_EXISTING}
_POLICY = {v: k for k, v in _POLICY_PB.items()}
_SPLIT = {
    pb.REFUND_SPLIT_STRATEGY_LAST_PAID_FIRST: LAST_PAID_FIRST, pb.REFUND_SPLIT_STRATEGY_FIRST_PAID_FIRST: FIRST_PAID_FIRST,
    pb.REFUND_SPLIT_STRATEGY_PRO_RATA: PRO_RATA,
}


class RefundServicer(refund_pb2_grpc.RefundServiceServicer):
    def __init__(
        self, logic: RefundLogic, idempotency: IdempotencyStore, sealer: Sealer,
        merchants: Mapping[str, MerchantSettings],
    ) -> None:
        self._logic = logic
        self._idempotency = idempotency
        self._sealer = sealer
        self._merchants = merchants

    def _settings(self, merchant: str) -> MerchantSettings:
        settings = self._merchants.get(merchant)
        if settings is None:  # authenticated but not configured: nothing to act for
            raise MeshError(grpc.StatusCode.PERMISSION_DENIED, "MERCHANT_NOT_CONFIGURED", "merchant is not configured")
        return settings

    async def Refund(self, request: pb.RefundRequest, context=None):
        merchant = current_call().merchant_id
        settings = self._settings(merchant)
        reference = request.WhichOneof("reference")
        if reference is None:
            raise invalid_argument("transaction_id", "set transaction_id (or order_id)")
        if reference == "order_id":
            return await self._refund_order(merchant, settings, request)
        transaction_id = require_id(request.transaction_id, "transaction_id")
        amount = money_from_proto(request.amount, "amount", allowed_currencies=settings.currencies)

        async def handler():
            masked, txn = await self._logic.refund_transaction(merchant, request.request_id, transaction_id, amount)
            part = pb.RefundPart(
                masked_number=masked, original_transaction_id=transaction_id, amount=money_pb(amount), transaction=txn,
            )
            return pb.RefundResponse(parts=[part], total_refunded=money_pb(amount))

        return await self._idempotency.run(
            merchant, f"{_SERVICE}/Refund", request.request_id, request, handler, pb.RefundResponse
        )

    async def _refund_order(self, merchant: str, settings: MerchantSettings, request: pb.RefundRequest):
        order_id = require_id(request.order_id, "order_id")
        amount = money_from_proto(request.amount, "amount", allowed_currencies=settings.currencies)
        strategy = _SPLIT.get(request.strategy, settings.refund_split)

        async def handler():
            done = await self._logic.refund_order(merchant, request.request_id, order_id, amount, strategy)
            parts = [
                pb.RefundPart(masked_number=masked, original_transaction_id=payment_id, amount=money_pb(part),
                              transaction=txn)
                for masked, payment_id, part, txn in done
            ]
            return pb.RefundResponse(parts=parts, total_refunded=money_pb(amount))

        return await self._idempotency.run(
            merchant, f"{_SERVICE}/Refund", request.request_id, request, handler, pb.RefundResponse
        )

    async def Reload(self, request: pb.ReloadRequest, context=None):
        merchant = current_call().merchant_id
        settings = self._settings(merchant)
        card_from_proto(request.card)
        amount = money_from_proto(request.amount, "amount", allowed_currencies=settings.currencies)
        client_transaction_id = require_id(request.client_transaction_id, "client_transaction_id", required=False)

        async def handler():
            txn, balance = await self._logic.reload(settings, request.request_id, request.card, amount, client_transaction_id)
            return pb.ReloadResponse(transaction=txn, balance=balance)

        return await self._idempotency.run(
            merchant, f"{_SERVICE}/Reload", request.request_id, request, handler, pb.ReloadResponse
        )

    async def CashOut(self, request: pb.CashOutRequest, context=None):
        merchant = current_call().merchant_id
        card_from_proto(request.card)

        async def handler():
            txn = await self._logic.cash_out(request.request_id, request.card)
            return pb.CashOutResponse(amount_removed=txn.amount, transaction=txn)

        return await self._idempotency.run(
            merchant, f"{_SERVICE}/CashOut", request.request_id, request, handler, pb.CashOutResponse
        )

    async def RefundToNewCard(self, request: pb.RefundToNewCardRequest, context=None):
        merchant = current_call().merchant_id
        settings = self._settings(merchant)
        require_id(request.order_id, "order_id", required=False)
        amount = (
            money_from_proto(request.amount, "amount", allowed_currencies=settings.currencies)
            if request.HasField("amount") else None
        )
        policy = _POLICY.get(request.policy, settings.refund_to_card_policy)
        old_card = request.old_card if request.HasField("old_card") else None
        existing_card = request.existing_card if request.HasField("existing_card") else None
        if old_card is not None:
            card_from_proto(old_card, "old_card")
        if existing_card is not None:
            card_from_proto(existing_card, "existing_card")
        program_id = require_id(request.program_id, "program_id", required=False)
        rpc = f"{_SERVICE}/RefundToNewCard"

        async def handler():
            done = await self._logic.refund_to_card(
                settings, request.request_id, policy, amount=amount, old_card=old_card,
                existing_card=existing_card, program_id=program_id,
            )
            response = pb.RefundToNewCardResponse(
                policy=_POLICY_PB[done.policy], cashed_out=money_pb(done.cashed_out),
                funded=money_pb(done.funded), masked_number=done.masked_number,
            )
            if done.card_number or done.claim_url:
                response.new_card.CopyFrom(pb.NewCard(
                    card_number=done.card_number, pin=done.pin, cvv2=done.cvv2,
                    claim_url=done.claim_url, proxy_number=done.proxy_number,
                ))
            return response

        context_bytes = f"{merchant}|{rpc}|{request.request_id}".encode()
        return await self._idempotency.run(
            merchant, rpc, request.request_id, request, handler, pb.RefundToNewCardResponse,
            seal=lambda payload: self._sealer.seal(payload, context_bytes),
            unseal=lambda payload: self._sealer.unseal(payload, context_bytes),
        )
