"""BalanceService over gRPC: proto <-> BalanceLogic."""

from __future__ import annotations

from common.errors import invalid_argument
from common.money import Money
from common.validation import card_from_proto, money_from_proto
from giftcard.balance.v1 import balance_pb2 as pb
from giftcard.balance.v1 import balance_pb2_grpc
from giftcard.type.v1 import money_pb2
from services.balance.logic import MAX_TENDER_CARDS, BalanceLogic


def _money(money: Money) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=money.amount_minor, currency_code=money.currency)


class BalanceServicer(balance_pb2_grpc.BalanceServiceServicer):
    def __init__(self, logic: BalanceLogic) -> None:
        self._logic = logic

    async def GetBalance(self, request: pb.GetBalanceRequest, context=None) -> pb.GetBalanceResponse:
        card_from_proto(request.card)
        found = await self._logic.balance(request.card)
        return pb.GetBalanceResponse(
            masked_number=found.masked_number, status=found.status, balance=_money(found.balance),
            held=_money(found.held), available=_money(found.available), provider=found.provider,
        )

    async def PlanTender(self, request: pb.PlanTenderRequest, context=None) -> pb.PlanTenderResponse:
        total = money_from_proto(request.order_total, "order_total")
        if not request.cards:
            raise invalid_argument("cards", "at least one card is required")
        if len(request.cards) > MAX_TENDER_CARDS:
            raise invalid_argument("cards", f"at most {MAX_TENDER_CARDS} cards per plan")
        cards = [(card_from_proto(ref, f"cards[{i}]"), ref) for i, ref in enumerate(request.cards)]
        plan, remainder = await self._logic.plan_tender(total, cards)
        return pb.PlanTenderResponse(
            allocations=[
                pb.TenderAllocation(
                    index=item.index, masked_number=item.masked_number, status=item.status,
                    available=_money(item.available), apply=_money(item.apply), skip_reason=item.skip_reason,
                )
                for item in plan
            ],
            remainder=_money(remainder),
            covered=_money(Money(total.amount_minor - remainder.amount_minor, total.currency)),
        )
