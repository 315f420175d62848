"""Request bodies for every scenario, serialized once before the run.

Bodies for the varying-body client are split in two: the per-call id fields (request_id and
order_id or shipment_id, spliced in by `bench.loadgen`) and a pre-serialized remainder per
card or hold (a "variant")."""

from __future__ import annotations

from giftcard.authorization.v1 import authorization_pb2
from giftcard.balance.v1 import balance_pb2
from giftcard.settlement.v1 import settlement_pb2
from giftcard.type.v1 import card_pb2, money_pb2

CURRENCY = "USD"
# Every money call moves one minor unit, so the cards never run dry during a run.
AMOUNT_MINOR = 1
CARD_BALANCE_MINOR = 2_000_00
CARD_PREFIX = "60357199"
HOT_CARD = "6035719899999999"


def card_numbers(count: int) -> list[str]:
    return [f"{CARD_PREFIX}{index:08d}" for index in range(count)]


def _money(amount: int = AMOUNT_MINOR) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency_code=CURRENCY)


def _card(number: str) -> card_pb2.CardRef:
    return card_pb2.CardRef(card_number=number)


def get_balance(number: str) -> bytes:
    return balance_pb2.GetBalanceRequest(card=_card(number)).SerializeToString()


def authorize_variant(number: str) -> bytes:
    """AuthorizeRequest without request_id (1) and order_id (2)."""
    return authorization_pb2.AuthorizeRequest(card=_card(number), amount=_money()).SerializeToString()


def authorize_full(request_id: str, number: str) -> bytes:
    return authorization_pb2.AuthorizeRequest(
        request_id=request_id, order_id=request_id, card=_card(number), amount=_money(),
    ).SerializeToString()


def redeem_variant(number: str) -> bytes:
    """RedeemRequest without request_id (1) and order_id (2); the merchant's redemption mode."""
    return authorization_pb2.RedeemRequest(card=_card(number), amount=_money()).SerializeToString()


def checkout_variant(numbers: list[str]) -> bytes:
    """CheckoutRequest without request_id (1) and order_id (2): one tender per card, redeemed."""
    return authorization_pb2.CheckoutRequest(
        tenders=[authorization_pb2.CheckoutTender(card=_card(n), amount=_money()) for n in numbers],
        action=authorization_pb2.CHECKOUT_ACTION_REDEEM,
    ).SerializeToString()


def capture_variant(hold_id: str) -> bytes:
    """CaptureRequest without request_id (1) and shipment_id (4): captures one unit, final."""
    return settlement_pb2.CaptureRequest(
        hold_id=hold_id, amount=_money(), final_shipment=True,
    ).SerializeToString()


def hold_ids(responses: list[bytes]) -> list[str]:
    """Hold ids from serialized AuthorizeResponses."""
    ids = []
    for raw in responses:
        response = authorization_pb2.AuthorizeResponse.FromString(raw)
        if response.hold.hold_id:
            ids.append(response.hold.hold_id)
    return ids


def splice(fields: list[int], uid: str, variant: bytes) -> bytes:
    """The body `bench.loadgen` sends for call id `uid` (same construction, for probes)."""
    raw = uid.encode()
    head = b"".join(bytes([(number << 3) | 2, len(raw)]) + raw for number in fields)
    return head + variant
