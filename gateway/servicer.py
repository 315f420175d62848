"""ProviderGatewayService: proto <-> provider port, routing each call to the merchant's provider.

The same object serves gRPC (microservices mode) and in-process calls (all-in-one mode); the
merchant always comes from the authenticated call context, never from the request body.
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from common.cards import CardId
from common.context import current_call
from common.errors import invalid_argument
from common.money import Money
from common.validation import card_from_proto, money_from_proto, optional_money, require_id
from gateway.ports import OperationResult, Provider
from gateway.routing import ProviderRouter
from giftcard.gateway.v1 import gateway_pb2 as pb
from giftcard.gateway.v1 import gateway_pb2_grpc
from giftcard.type.v1 import card_pb2, money_pb2

_STATUS = {
    "inactive": card_pb2.CARD_STATUS_INACTIVE,
    "active": card_pb2.CARD_STATUS_ACTIVE,
    "deactivated": card_pb2.CARD_STATUS_DEACTIVATED,
    "locked": card_pb2.CARD_STATUS_LOCKED,
}
_HOLD_MODE = {
    "native": card_pb2.HOLD_MODE_NATIVE,
    "shadow": card_pb2.HOLD_MODE_SHADOW,
    "redeem_at_authorize": card_pb2.HOLD_MODE_REDEEM_AT_AUTHORIZE,
}
_CREDIT_KIND = {pb.CREDIT_KIND_UNSPECIFIED: "reload", pb.CREDIT_KIND_RELOAD: "reload", pb.CREDIT_KIND_REFUND: "refund"}


def money_pb(money: Money | None) -> money_pb2.Money | None:
    if money is None:
        return None
    return money_pb2.Money(amount_minor=money.amount_minor, currency_code=money.currency)


def _result_pb(provider: Provider, reference_id: str, result: OperationResult) -> pb.OperationResult:
    return pb.OperationResult(
        provider=provider.name,
        provider_transaction_id=result.provider_transaction_id,
        reference_id=reference_id,
        amount=money_pb(result.amount),
        balance=money_pb(result.balance),
        masked_number=result.masked_number,
        status=_STATUS.get(result.status, card_pb2.CARD_STATUS_UNSPECIFIED),
        replayed=result.replayed,
    )


def _expiry_ms(timestamp: timestamp_pb2.Timestamp) -> int:
    return timestamp.seconds * 1000 + timestamp.nanos // 1_000_000


class GatewayServicer(gateway_pb2_grpc.ProviderGatewayServiceServicer):
    def __init__(self, router: ProviderRouter) -> None:
        self._router = router

    def _route(self, card: CardId | None) -> tuple[str, Provider]:
        merchant = current_call().merchant_id
        return merchant, self._router.route(merchant, card)

    async def GetCapabilities(self, request: pb.GetCapabilitiesRequest, context=None):
        card = card_from_proto(request.card) if request.HasField("card") else None
        _, provider = self._route(card)
        caps = provider.capabilities
        return pb.GetCapabilitiesResponse(
            provider=provider.name,
            capabilities=pb.Capabilities(
                hold_mode=_HOLD_MODE[caps.hold_mode], partial_hold=caps.partial_hold,
                partial_redeem=caps.partial_redeem, tip=caps.tip,
                reverse_by_reference=caps.reverse_by_reference, cash_out=caps.cash_out,
                exchange=caps.exchange, allocate=caps.allocate, claim_links=caps.claim_links,
                activate=caps.activate, credit=caps.credit, issue_value=caps.issue_value,
                pin_required=caps.pin_required,
            ),
        )

    async def GetBalance(self, request: pb.GetBalanceRequest, context=None):
        card = card_from_proto(request.card)
        merchant, provider = self._route(card)
        info = await provider.balance(merchant, card)
        return pb.GetBalanceResponse(
            provider=provider.name, masked_number=info.masked_number,
            status=_STATUS.get(info.status, card_pb2.CARD_STATUS_UNSPECIFIED),
            balance=money_pb(info.balance), held=money_pb(info.held),
        )

    async def PlaceHold(self, request: pb.PlaceHoldRequest, context=None):
        reference_id = require_id(request.reference_id, "reference_id")
        card = card_from_proto(request.card)
        amount = money_from_proto(request.amount, "amount")
        merchant, provider = self._route(card)
        result = await provider.place_hold(
            merchant, reference_id, card, amount,
            allow_partial=request.allow_partial, expires_at_ms=_expiry_ms(request.expire_time),
        )
        return pb.PlaceHoldResponse(
            result=_result_pb(provider, reference_id, result), provider_hold_id=result.hold_id or "",
            hold_mode=_HOLD_MODE[provider.capabilities.hold_mode],
        )

    async def CaptureHold(self, request: pb.CaptureHoldRequest, context=None):
        reference_id = require_id(request.reference_id, "reference_id")
        card = card_from_proto(request.card)
        hold_id = require_id(request.provider_hold_id, "provider_hold_id")
        amount = money_from_proto(request.amount, "amount", allow_zero=True)
        merchant, provider = self._route(card)
        result = await provider.capture_hold(
            merchant, reference_id, card, hold_id, amount, release_remainder=request.release_remainder
        )
        return pb.CaptureHoldResponse(result=_result_pb(provider, reference_id, result), open=money_pb(result.open))

    async def ReleaseHold(self, request: pb.ReleaseHoldRequest, context=None):
        reference_id = require_id(request.reference_id, "reference_id")
        card = card_from_proto(request.card)
        hold_id = require_id(request.provider_hold_id, "provider_hold_id")
        amount = optional_money(request, "amount", "amount")
        merchant, provider = self._route(card)
        result = await provider.release_hold(merchant, reference_id, card, hold_id, amount)
        return pb.ReleaseHoldResponse(result=_result_pb(provider, reference_id, result), open=money_pb(result.open))

    async def Redeem(self, request: pb.RedeemRequest, context=None):
        reference_id = require_id(request.reference_id, "reference_id")
        card = card_from_proto(request.card)
        amount = money_from_proto(request.amount, "amount")
        tip = optional_money(request, "tip", "tip", allow_zero=True)
        merchant, provider = self._route(card)
        result = await provider.redeem(
            merchant, reference_id, card, amount, tip=tip, allow_partial=request.allow_partial
        )
        return pb.RedeemResponse(result=_result_pb(provider, reference_id, result))

    async def Credit(self, request: pb.CreditRequest, context=None):
        reference_id = require_id(request.reference_id, "reference_id")
        card = card_from_proto(request.card)
        amount = money_from_proto(request.amount, "amount")
        merchant, provider = self._route(card)
        result = await provider.credit(
            merchant, reference_id, card, amount, kind=_CREDIT_KIND.get(request.kind, "reload")
        )
        return pb.CreditResponse(result=_result_pb(provider, reference_id, result))

    async def Reverse(self, request: pb.ReverseRequest, context=None):
        reference_id = require_id(request.reference_id, "reference_id")
        card = card_from_proto(request.card)
        target = request.WhichOneof("target")
        if target is None:
            raise invalid_argument("target", "set provider_transaction_id or original_reference_id")
        value = require_id(getattr(request, target), target)
        merchant, provider = self._route(card)
        reversal = await provider.reverse(
            merchant, reference_id, card,
            provider_transaction_id=value if target == "provider_transaction_id" else None,
            original_reference_id=value if target == "original_reference_id" else None,
            original_operation="hold" if request.original_operation == pb.ORIGINAL_OPERATION_HOLD else "",
        )
        return pb.ReverseResponse(
            result=_result_pb(provider, reference_id, reversal.result), reversed=reversal.reversed
        )

    async def Activate(self, request: pb.ActivateRequest, context=None):
        reference_id = require_id(request.reference_id, "reference_id")
        card = card_from_proto(request.card)
        amount = money_from_proto(request.amount, "amount")
        promo_code = require_id(request.promo_code, "promo_code", required=False)
        merchant, provider = self._route(card)
        result = await provider.activate(merchant, reference_id, card, amount, promo_code=promo_code)
        return pb.ActivateResponse(result=_result_pb(provider, reference_id, result))

    async def Allocate(self, request: pb.AllocateRequest, context=None):
        reference_id = require_id(request.reference_id, "reference_id")
        program_id = require_id(request.program_id, "program_id")
        amount = money_from_proto(request.amount, "amount")
        merchant, provider = self._route(None)
        allocation = await provider.allocate(merchant, reference_id, program_id, amount)
        return pb.AllocateResponse(
            result=_result_pb(provider, reference_id, allocation.result),
            card_number=allocation.card_number, pin=allocation.pin, cvv2=allocation.cvv2,
            claim_url=allocation.claim_url, proxy_number=allocation.proxy_number,
            activated=allocation.activated,
        )

    async def IssueValue(self, request: pb.IssueValueRequest, context=None):
        reference_id = require_id(request.reference_id, "reference_id")
        card = card_from_proto(request.card)
        amount = money_from_proto(request.amount, "amount")
        merchant, provider = self._route(card)
        result = await provider.issue_value(merchant, reference_id, card, amount)
        return pb.IssueValueResponse(result=_result_pb(provider, reference_id, result))

    async def CashOut(self, request: pb.CashOutRequest, context=None):
        reference_id = require_id(request.reference_id, "reference_id")
        card = card_from_proto(request.card)
        merchant, provider = self._route(card)
        result = await provider.cash_out(merchant, reference_id, card)
        return pb.CashOutResponse(result=_result_pb(provider, reference_id, result))

    async def Exchange(self, request: pb.ExchangeRequest, context=None):
        reference_id = require_id(request.reference_id, "reference_id")
        from_card = card_from_proto(request.from_card, "from_card")
        to_card = card_from_proto(request.to_card, "to_card")
        merchant, provider = self._route(from_card)
        result = await provider.exchange(merchant, reference_id, from_card, to_card)
        return pb.ExchangeResponse(
            result=_result_pb(provider, reference_id, result), to_masked_number=to_card.masked
        )
