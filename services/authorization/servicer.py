"""AuthorizationService over gRPC: validation and proto <-> AuthorizationLogic / CheckoutFlow.

Every mutating RPC runs through IdempotencyStore.run (AIP-155) keyed by the authenticated merchant,
never the body; input is validated before anything moves (INVALID_ARGUMENT naming the field).
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from common.config import Settings
from common.context import current_call
from common.errors import invalid_argument
from common.idempotency import IdempotencyStore
from common.validation import card_from_proto, money_from_proto, optional_money, require_id
from giftcard.authorization.v1 import authorization_pb2 as pb
from giftcard.authorization.v1 import authorization_pb2_grpc
from giftcard.type.v1 import hold_pb2, transaction_pb2
from services.authorization.checkout import CheckoutFlow, MAX_TENDERS
from services.authorization.logic import AuthorizationLogic, Reversal, money_pb
from services.shared import holds as hold_states
from services.shared import transactions as txn_states
from services.shared.holds import HoldRecord
from services.shared.transactions import TransactionRecord

SERVICE = pb.DESCRIPTOR.services_by_name["AuthorizationService"].full_name

_HOLD_STATE = {
    hold_states.OPEN: hold_pb2.HOLD_STATE_OPEN,
    hold_states.CLOSED: hold_pb2.HOLD_STATE_CLOSED,
    hold_states.RELEASED: hold_pb2.HOLD_STATE_RELEASED,
    hold_states.EXPIRED: hold_pb2.HOLD_STATE_EXPIRED,
}
_TXN_STATE = {
    txn_states.PENDING: transaction_pb2.TRANSACTION_STATE_PENDING,
    txn_states.APPROVED: transaction_pb2.TRANSACTION_STATE_APPROVED,
    txn_states.DECLINED: transaction_pb2.TRANSACTION_STATE_DECLINED,
    # Still being reversed: the redemption stands until the provider confirms the reversal.
    txn_states.REVERSING: transaction_pb2.TRANSACTION_STATE_APPROVED,
    txn_states.REVERSED: transaction_pb2.TRANSACTION_STATE_REVERSED,
}
_MODE_NAMES = {"STRICT": pb.REDEMPTION_MODE_STRICT, "PARTIAL": pb.REDEMPTION_MODE_PARTIAL}


def _stamp(epoch_ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(epoch_ms)
    return stamp


def hold_pb(hold: HoldRecord) -> hold_pb2.Hold:
    state, released, open_minor = hold.view()
    return hold_pb2.Hold(
        hold_id=hold.hold_id, order_id=hold.order_id, masked_number=hold.masked_number,
        authorized=money_pb(hold.authorized, hold.currency), captured=money_pb(hold.captured, hold.currency),
        released=money_pb(released, hold.currency), open=money_pb(open_minor, hold.currency),
        state=_HOLD_STATE[state], create_time=_stamp(hold.created_ms), expire_time=_stamp(hold.expires_at_ms),
        provider=hold.provider, hold_mode=hold.hold_mode, parent_hold_id=hold.parent_hold_id,
        client_transaction_id=hold.client_transaction_id, advanced_hold_id=hold.advanced_hold_id,
        transferred=money_pb(hold.transferred, hold.currency),
    )


def transaction_pb(record: TransactionRecord) -> transaction_pb2.Transaction:
    settled = record.state not in (txn_states.PENDING, txn_states.DECLINED)
    amount = record.redeemed - record.redeemed_tip if settled else record.amount
    tip = record.redeemed_tip if settled else record.tip
    message = transaction_pb2.Transaction(
        transaction_id=record.transaction_id, client_transaction_id=record.client_transaction_id,
        kind=transaction_pb2.TRANSACTION_KIND_REDEMPTION, state=_TXN_STATE[record.state],
        masked_number=record.masked, amount=money_pb(amount, record.currency),
        provider=record.provider, provider_transaction_id=record.provider_transaction_id,
        create_time=_stamp(record.created_ms), order_id=record.order_id,
    )
    if tip:
        message.tip.CopyFrom(money_pb(tip, record.currency))
    if settled:
        message.balance_after.CopyFrom(money_pb(record.balance_after, record.currency))
    return message


class AuthorizationServicer(authorization_pb2_grpc.AuthorizationServiceServicer):
    def __init__(self, logic: AuthorizationLogic, checkout: CheckoutFlow, idempotency: IdempotencyStore,
                 settings: Settings, recovery=None) -> None:
        self.logic = logic
        self.checkout = checkout
        self.recovery = recovery
        self._logic = logic
        self._checkout = checkout
        self._idempotency = idempotency
        self._settings = settings

    def _merchant(self):
        call = current_call()
        if self.recovery is not None:
            self.recovery.on_call(call.merchant_id, call.authorization)
        return call.merchant_id, self._settings.merchants[call.merchant_id]

    async def _run(self, rpc: str, request, handler, response_type):
        merchant = current_call().merchant_id
        return await self._idempotency.run(
            merchant, f"{SERVICE}/{rpc}", request.request_id, request, handler, response_type
        )

    # -- RPCs -----------------------------------------------------------------------------------

    async def Authorize(self, request: pb.AuthorizeRequest, context=None) -> pb.AuthorizeResponse:
        merchant, config = self._merchant()
        order_id = require_id(request.order_id, "order_id")
        card = card_from_proto(request.card)
        amount = money_from_proto(request.amount, "amount", allowed_currencies=config.currencies)
        client_id = require_id(request.client_transaction_id, "client_transaction_id", required=False)
        ttl_ms = config.hold_ttl_seconds * 1000
        if request.HasField("expires_in"):
            ttl_ms = request.expires_in.ToMilliseconds()
            if not 1000 <= ttl_ms <= config.max_hold_ttl_seconds * 1000:
                raise invalid_argument(
                    "expires_in", f"expires_in must be from 1 s to {config.max_hold_ttl_seconds} s", "INVALID_EXPIRY"
                )

        async def handle() -> pb.AuthorizeResponse:
            done = await self._logic.authorize(
                merchant, request.request_id, order_id=order_id, card=request.card, masked=card.masked,
                amount=amount, allow_partial=request.allow_partial, ttl_ms=ttl_ms,
                client_transaction_id=client_id,
            )
            approved = done.hold.authorized
            return pb.AuthorizeResponse(
                hold=hold_pb(done.hold), requested=money_pb(amount.amount_minor, amount.currency),
                approved=money_pb(approved, amount.currency),
                remaining=money_pb(amount.amount_minor - approved, amount.currency),
            )

        return await self._run("Authorize", request, handle, pb.AuthorizeResponse)

    async def ReverseAuthorization(self, request: pb.ReverseAuthorizationRequest, context=None):
        merchant, _ = self._merchant()
        hold_id = require_id(request.hold_id, "hold_id")
        amount = optional_money(request, "amount", "amount")
        if len(request.reason) > 256:
            raise invalid_argument("reason", "reason must be at most 256 characters")

        async def handle() -> pb.ReverseAuthorizationResponse:
            operation = self._logic.ids.derive("rel", merchant, "ReverseAuthorization", request.request_id)
            hold, released = await self._logic.release(merchant, hold_id, amount, operation)
            return pb.ReverseAuthorizationResponse(
                hold=hold_pb(hold), released=money_pb(released.amount_minor, released.currency)
            )

        return await self._run("ReverseAuthorization", request, handle, pb.ReverseAuthorizationResponse)

    async def Redeem(self, request: pb.RedeemRequest, context=None) -> pb.RedeemResponse:
        merchant, config = self._merchant()
        order_id = require_id(request.order_id, "order_id", required=False)
        card = card_from_proto(request.card)
        amount = money_from_proto(request.amount, "amount", allowed_currencies=config.currencies)
        tip = optional_money(request, "tip", "tip", allowed_currencies=config.currencies, allow_zero=True)
        if tip is not None and tip.currency != amount.currency:
            raise invalid_argument("tip.currency_code", "tip must be in the amount's currency", "CURRENCY_MISMATCH")
        if request.mode not in (pb.REDEMPTION_MODE_UNSPECIFIED, pb.REDEMPTION_MODE_STRICT, pb.REDEMPTION_MODE_PARTIAL):
            raise invalid_argument("mode", "unknown redemption mode")
        mode = request.mode or _MODE_NAMES[config.redemption_mode]
        client_id = require_id(request.client_transaction_id, "client_transaction_id", required=False)

        async def handle() -> pb.RedeemResponse:
            done = await self._logic.redeem(
                merchant, request.request_id, order_id=order_id, card=request.card, masked=card.masked,
                amount=amount, tip=tip, partial=mode == pb.REDEMPTION_MODE_PARTIAL,
                client_transaction_id=client_id,
            )
            redeemed = done.transaction.redeemed
            return pb.RedeemResponse(
                transaction=transaction_pb(done.transaction),
                requested=money_pb(done.requested.amount_minor, amount.currency),
                redeemed=money_pb(redeemed, amount.currency),
                remaining=money_pb(done.requested.amount_minor - redeemed, amount.currency), mode=mode,
            )

        return await self._run("Redeem", request, handle, pb.RedeemResponse)

    async def VoidRedemption(self, request: pb.VoidRedemptionRequest, context=None):
        merchant, _ = self._merchant()
        transaction_id = require_id(request.transaction_id, "transaction_id")

        async def handle() -> pb.VoidRedemptionResponse:
            done = await self._logic.void_redemption(merchant, transaction_id)
            assert done.transaction is not None
            return pb.VoidRedemptionResponse(
                redemption=transaction_pb(done.transaction),
                credited=money_pb(done.transaction.reversed_amount, done.transaction.currency),
            )

        return await self._run("VoidRedemption", request, handle, pb.VoidRedemptionResponse)

    async def ReverseTransaction(self, request: pb.ReverseTransactionRequest, context=None):
        merchant, _ = self._merchant()
        target = request.WhichOneof("target")
        if target is None:
            raise invalid_argument("target", "set transaction_id or client_transaction_id")
        value = require_id(getattr(request, target), target)

        async def handle() -> pb.ReverseTransactionResponse:
            done = await self._logic.reverse_transaction(merchant, **{target: value})
            return _reversal_pb(done)

        return await self._run("ReverseTransaction", request, handle, pb.ReverseTransactionResponse)

    async def Checkout(self, request: pb.CheckoutRequest, context=None) -> pb.CheckoutResponse:
        merchant, config = self._merchant()
        order_id = require_id(request.order_id, "order_id")
        if not request.tenders:
            raise invalid_argument("tenders", "at least one gift card tender is required")
        if len(request.tenders) > MAX_TENDERS:
            raise invalid_argument("tenders", f"at most {MAX_TENDERS} gift card tenders")
        known_actions = (pb.CHECKOUT_ACTION_UNSPECIFIED, pb.CHECKOUT_ACTION_REDEEM, pb.CHECKOUT_ACTION_AUTHORIZE)
        if request.action not in known_actions:
            raise invalid_argument("action", "unknown checkout action")
        tenders = []
        for index, tender in enumerate(request.tenders):
            card = card_from_proto(tender.card, f"tenders[{index}].card")
            amount = money_from_proto(tender.amount, f"tenders[{index}].amount", allowed_currencies=config.currencies)
            if tenders and amount.currency != tenders[0][2].currency:
                raise invalid_argument(f"tenders[{index}].amount.currency_code",
                                       "every tender must be in the same currency", "CURRENCY_MISMATCH")
            tenders.append((tender.card, card.masked, amount))
        for index, external in enumerate(request.external_tenders):
            require_id(external.kind, f"external_tenders[{index}].kind")
            if len(external.description) > 256:
                raise invalid_argument(f"external_tenders[{index}].description", "at most 256 characters")
        authorize = request.action == pb.CHECKOUT_ACTION_AUTHORIZE
        ttl_ms = config.hold_ttl_seconds * 1000

        async def handle() -> pb.CheckoutResponse:
            return await self._checkout.run(
                merchant, request.request_id, order_id=order_id, tenders=tenders,
                externals=[(e.kind, e.approved) for e in request.external_tenders],
                authorize=authorize, ttl_ms=ttl_ms,
            )

        return await self._run("Checkout", request, handle, pb.CheckoutResponse)

    async def GetHold(self, request: pb.GetHoldRequest, context=None) -> pb.GetHoldResponse:
        merchant, _ = self._merchant()
        hold_id = require_id(request.hold_id, "hold_id")
        return pb.GetHoldResponse(hold=hold_pb(await self._logic.holds.get(merchant, hold_id)))


def _reversal_pb(done: Reversal) -> pb.ReverseTransactionResponse:
    response = pb.ReverseTransactionResponse(
        outcome=pb.REVERSAL_OUTCOME_REVERSED if done.reversed else pb.REVERSAL_OUTCOME_NOTHING_TO_REVERSE,
    )
    if done.amount is not None:
        response.amount.CopyFrom(money_pb(done.amount.amount_minor, done.amount.currency))
    if done.transaction is not None:
        response.transaction.CopyFrom(transaction_pb(done.transaction))
    return response
