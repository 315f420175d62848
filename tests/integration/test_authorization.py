"""AuthorizationService through the public gRPC API on the native provider, in both deployment
modes (all-in-one; one server per service talking gRPC): holds, redemptions, voids, reversals,
GetHold, validation, idempotency and merchant isolation. Amounts are checked to the cent."""

from __future__ import annotations

import asyncio
import secrets

import grpc
import pytest
from google.protobuf import duration_pb2

from giftcard.authorization.v1 import authorization_pb2 as pb
from giftcard.type.v1 import card_pb2, hold_pb2, money_pb2, transaction_pb2
from tests.integration.test_mesh_server import error_details
from tests.support.mesh import ACME_KEY, MODES, auth, start_mesh

USD = "USD"


@pytest.fixture(params=MODES)
async def mesh(request, redis_client, redis_url):
    running = await start_mesh(request.param, redis_url)
    yield running
    await running.close()


def usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code=USD)


def rid() -> str:
    return "req-" + secrets.token_hex(8)


def ledger(mesh):
    return mesh.runtimes[0].providers.native_ledger


async def new_card(mesh, balance_minor: int, merchant: str = "demo", currency: str = USD) -> str:
    number = "7777" + "".join(secrets.choice("0123456789") for _ in range(12))
    await ledger(mesh).create_card(merchant, number, currency, balance_minor=balance_minor, active=True)
    return number


async def balance_of(mesh, number: str, merchant: str = "demo") -> tuple[int, int]:
    """(balance, held) at the native ledger."""
    state = await ledger(mesh).get_card(merchant, number)
    return state.balance_minor, state.held_minor


def card(number: str) -> card_pb2.CardRef:
    return card_pb2.CardRef(card_number=number)


async def call(mesh, rpc: str, request, key: str | None = None, timeout: float = 10):
    stub = mesh.stub("authorization")
    return await getattr(stub, rpc)(request, metadata=auth(key) if key else auth(), timeout=timeout)


# The concurrency tests send 200 calls at once; on a loaded CI machine some need longer than 10 s,
# and a call the client stopped waiting for still completes on the server (its outcome is then
# unknown to the test), so give them room.
BURST_TIMEOUT = 120


async def fails(mesh, rpc: str, request, key: str | None = None) -> tuple[grpc.StatusCode, str, dict, list]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(mesh, rpc, request, key)
    reason, metadata, fields = error_details(caught.value)
    return caught.value.code(), reason, metadata, fields


def authorize(number: str, minor: int, **kwargs) -> pb.AuthorizeRequest:
    return pb.AuthorizeRequest(request_id=kwargs.pop("request_id", rid()), order_id=kwargs.pop("order_id", "order-1"),
                               card=card(number), amount=usd(minor), **kwargs)


def redeem(number: str, minor: int, **kwargs) -> pb.RedeemRequest:
    return pb.RedeemRequest(request_id=kwargs.pop("request_id", rid()), order_id=kwargs.pop("order_id", "order-1"),
                            card=card(number), amount=usd(minor), **kwargs)


# -- Authorize / GetHold ------------------------------------------------------------------------


async def test_authorize_places_a_hold_and_get_hold_returns_it(mesh):
    number = await new_card(mesh, 100_00)
    reply = await call(mesh, "Authorize", authorize(number, 40_00, order_id="ord-77", client_transaction_id="pos-1"))
    assert (reply.requested.amount_minor, reply.approved.amount_minor, reply.remaining.amount_minor) == (4000, 4000, 0)
    hold = reply.hold
    assert hold.state == hold_pb2.HOLD_STATE_OPEN
    assert (hold.authorized.amount_minor, hold.open.amount_minor, hold.captured.amount_minor) == (4000, 4000, 0)
    assert hold.order_id == "ord-77" and hold.provider == "native"
    assert hold.hold_mode == card_pb2.HOLD_MODE_NATIVE
    assert hold.masked_number == number[:6] + "******" + number[-4:]
    assert hold.client_transaction_id == "pos-1"
    assert await balance_of(mesh, number) == (100_00, 40_00)
    got = await call(mesh, "GetHold", pb.GetHoldRequest(hold_id=hold.hold_id))
    assert got.hold == hold


async def test_authorize_default_expiry_is_the_merchants_and_override_is_honoured(mesh):
    number = await new_card(mesh, 100_00)
    default = (await call(mesh, "Authorize", authorize(number, 1_00))).hold
    assert default.expire_time.seconds - default.create_time.seconds in (7 * 24 * 3600, 7 * 24 * 3600 - 1)
    short = (await call(mesh, "Authorize", authorize(number, 1_00, expires_in=duration_pb2.Duration(seconds=3600)))).hold
    assert short.expire_time.seconds - short.create_time.seconds in (3600, 3599)


async def test_authorize_expiry_beyond_the_merchants_limit_is_invalid(mesh):
    number = await new_card(mesh, 100_00)
    code, reason, _, fields = await fails(
        mesh, "Authorize", authorize(number, 1_00, expires_in=duration_pb2.Duration(seconds=31 * 24 * 3600)))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EXPIRY", ["expires_in"])
    assert await balance_of(mesh, number) == (100_00, 0)


async def test_authorize_partial_approval_reports_requested_approved_remaining(mesh):
    number = await new_card(mesh, 30_00)
    reply = await call(mesh, "Authorize", authorize(number, 50_00, allow_partial=True))
    assert (reply.requested.amount_minor, reply.approved.amount_minor, reply.remaining.amount_minor) == (5000, 3000, 2000)
    assert reply.hold.authorized.amount_minor == 3000


async def test_authorize_without_partial_denies_when_short(mesh):
    number = await new_card(mesh, 30_00)
    code, reason, _, _ = await fails(mesh, "Authorize", authorize(number, 50_00))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert await balance_of(mesh, number) == (30_00, 0)


async def test_authorize_is_idempotent_by_request_id(mesh):
    number = await new_card(mesh, 100_00)
    request = authorize(number, 25_00)
    first = await call(mesh, "Authorize", request)
    second = await call(mesh, "Authorize", request)
    assert first == second
    assert await balance_of(mesh, number) == (100_00, 25_00)
    changed = authorize(number, 26_00, request_id=request.request_id)
    code, reason, _, _ = await fails(mesh, "Authorize", changed)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.AuthorizeRequest(request_id="r1", order_id="o", amount=usd(100)), "card"),
        (pb.AuthorizeRequest(request_id="r1", order_id="o", card=card("6035710000000001")), "amount.currency_code"),
        (pb.AuthorizeRequest(request_id="r1", order_id="o", card=card("6035710000000001"), amount=usd(0)), "amount.amount_minor"),
        (pb.AuthorizeRequest(request_id="r1", order_id="o", card=card("6035710000000001"), amount=usd(-5)), "amount.amount_minor"),
        (pb.AuthorizeRequest(request_id="r1", card=card("6035710000000001"), amount=usd(100)), "order_id"),
        (pb.AuthorizeRequest(request_id="r1", order_id="o", card=card("6035710000000001"),
                             amount=money_pb2.Money(amount_minor=100, currency_code="EUR")), "amount.currency_code"),
        (pb.AuthorizeRequest(request_id="bad id!", order_id="o", card=card("6035710000000001"), amount=usd(100)), "request_id"),
        (pb.AuthorizeRequest(request_id="r1", order_id="o", card=card("6035710000000001"), amount=usd(100),
                             client_transaction_id="has space"), "client_transaction_id"),
    ],
)
async def test_authorize_rejects_bad_input_naming_the_field(mesh, request_, field):
    code, _, _, fields = await fails(mesh, "Authorize", request_)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields == [field]


async def test_get_hold_of_unknown_or_foreign_hold_is_not_found(mesh):
    number = await new_card(mesh, 100_00)
    hold = (await call(mesh, "Authorize", authorize(number, 10_00))).hold
    for hold_id, key in (("hld_doesnotexist", None), (hold.hold_id, ACME_KEY)):
        code, reason, _, _ = await fails(mesh, "GetHold", pb.GetHoldRequest(hold_id=hold_id), key)
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "HOLD_NOT_FOUND")


async def test_expired_hold_reads_expired_and_cannot_be_released(mesh):
    number = await new_card(mesh, 100_00)
    hold = (await call(mesh, "Authorize", authorize(number, 10_00, expires_in=duration_pb2.Duration(seconds=1)))).hold
    await asyncio.sleep(1.2)
    got = (await call(mesh, "GetHold", pb.GetHoldRequest(hold_id=hold.hold_id))).hold
    assert got.state == hold_pb2.HOLD_STATE_EXPIRED
    assert (got.open.amount_minor, got.released.amount_minor) == (0, 10_00)
    code, reason, _, _ = await fails(mesh, "ReverseAuthorization", pb.ReverseAuthorizationRequest(
        request_id=rid(), hold_id=hold.hold_id))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_EXPIRED")
    assert await balance_of(mesh, number) == (100_00, 0)


# -- ReverseAuthorization -----------------------------------------------------------------------


async def test_partial_then_full_reverse_authorization(mesh):
    number = await new_card(mesh, 100_00)
    hold = (await call(mesh, "Authorize", authorize(number, 60_00))).hold
    part = await call(mesh, "ReverseAuthorization", pb.ReverseAuthorizationRequest(
        request_id=rid(), hold_id=hold.hold_id, amount=usd(15_00), reason="partial cancel"))
    assert part.released.amount_minor == 15_00
    assert (part.hold.open.amount_minor, part.hold.released.amount_minor) == (45_00, 15_00)
    assert part.hold.state == hold_pb2.HOLD_STATE_OPEN
    assert await balance_of(mesh, number) == (100_00, 45_00)
    rest = await call(mesh, "ReverseAuthorization", pb.ReverseAuthorizationRequest(request_id=rid(), hold_id=hold.hold_id))
    assert rest.released.amount_minor == 45_00
    assert rest.hold.state == hold_pb2.HOLD_STATE_RELEASED
    assert (rest.hold.open.amount_minor, rest.hold.released.amount_minor) == (0, 60_00)
    assert await balance_of(mesh, number) == (100_00, 0)


async def test_over_release_is_refused_and_changes_nothing(mesh):
    number = await new_card(mesh, 100_00)
    hold = (await call(mesh, "Authorize", authorize(number, 20_00))).hold
    code, reason, metadata, _ = await fails(mesh, "ReverseAuthorization", pb.ReverseAuthorizationRequest(
        request_id=rid(), hold_id=hold.hold_id, amount=usd(20_01)))
    assert (code, reason, metadata.get("open_minor")) == (grpc.StatusCode.FAILED_PRECONDITION, "AMOUNT_EXCEEDS_OPEN", "2000")
    assert await balance_of(mesh, number) == (100_00, 20_00)
    got = (await call(mesh, "GetHold", pb.GetHoldRequest(hold_id=hold.hold_id))).hold
    assert got.open.amount_minor == 20_00


async def test_reverse_authorization_is_idempotent_and_refuses_a_released_hold(mesh):
    number = await new_card(mesh, 100_00)
    hold = (await call(mesh, "Authorize", authorize(number, 20_00))).hold
    request = pb.ReverseAuthorizationRequest(request_id=rid(), hold_id=hold.hold_id, amount=usd(5_00))
    first = await call(mesh, "ReverseAuthorization", request)
    again = await call(mesh, "ReverseAuthorization", request)
    assert first == again
    assert await balance_of(mesh, number) == (100_00, 15_00)
    await call(mesh, "ReverseAuthorization", pb.ReverseAuthorizationRequest(request_id=rid(), hold_id=hold.hold_id))
    code, reason, _, _ = await fails(mesh, "ReverseAuthorization", pb.ReverseAuthorizationRequest(
        request_id=rid(), hold_id=hold.hold_id))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_NOT_OPEN")


async def test_concurrent_partial_releases_never_exceed_the_hold(mesh):
    number = await new_card(mesh, 100_00)
    hold = (await call(mesh, "Authorize", authorize(number, 10_00))).hold
    results = await asyncio.gather(*(
        call(mesh, "ReverseAuthorization", pb.ReverseAuthorizationRequest(request_id=rid(), hold_id=hold.hold_id, amount=usd(3_00)))
        for _ in range(10)
    ), return_exceptions=True)
    released = [r.released.amount_minor for r in results if not isinstance(r, BaseException)]
    assert sum(released) == 9_00 and len(released) == 3
    got = (await call(mesh, "GetHold", pb.GetHoldRequest(hold_id=hold.hold_id))).hold
    assert (got.open.amount_minor, got.released.amount_minor) == (1_00, 9_00)
    assert await balance_of(mesh, number) == (100_00, 1_00)


async def test_another_merchant_cannot_release_a_hold(mesh):
    number = await new_card(mesh, 100_00)
    hold = (await call(mesh, "Authorize", authorize(number, 10_00))).hold
    code, reason, _, _ = await fails(mesh, "ReverseAuthorization", pb.ReverseAuthorizationRequest(
        request_id=rid(), hold_id=hold.hold_id), ACME_KEY)
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "HOLD_NOT_FOUND")
    assert await balance_of(mesh, number) == (100_00, 10_00)


# -- Redeem ---------------------------------------------------------------------------------------


async def test_redeem_strict_debits_and_records_client_transaction_id(mesh):
    number = await new_card(mesh, 100_00)
    reply = await call(mesh, "Redeem", redeem(number, 12_34, client_transaction_id="pos-77"))
    txn = reply.transaction
    assert txn.state == transaction_pb2.TRANSACTION_STATE_APPROVED
    assert txn.kind == transaction_pb2.TRANSACTION_KIND_REDEMPTION
    assert txn.client_transaction_id == "pos-77"
    assert (txn.amount.amount_minor, txn.balance_after.amount_minor) == (12_34, 87_66)
    assert (reply.requested.amount_minor, reply.redeemed.amount_minor, reply.remaining.amount_minor) == (12_34, 12_34, 0)
    assert reply.mode == pb.REDEMPTION_MODE_STRICT
    assert await balance_of(mesh, number) == (87_66, 0)


async def test_redeem_strict_denies_when_short(mesh):
    number = await new_card(mesh, 10_00)
    code, reason, _, _ = await fails(mesh, "Redeem", redeem(number, 10_01, mode=pb.REDEMPTION_MODE_STRICT))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert await balance_of(mesh, number) == (10_00, 0)


async def test_redeem_partial_takes_what_is_available(mesh):
    number = await new_card(mesh, 10_00)
    reply = await call(mesh, "Redeem", redeem(number, 25_00, mode=pb.REDEMPTION_MODE_PARTIAL))
    assert (reply.requested.amount_minor, reply.redeemed.amount_minor, reply.remaining.amount_minor) == (25_00, 10_00, 15_00)
    assert reply.mode == pb.REDEMPTION_MODE_PARTIAL
    assert await balance_of(mesh, number) == (0, 0)


async def test_redeem_partial_on_an_empty_card_is_insufficient_funds(mesh):
    number = await new_card(mesh, 0)
    code, reason, _, _ = await fails(mesh, "Redeem", redeem(number, 1_00, mode=pb.REDEMPTION_MODE_PARTIAL))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")


async def test_redeem_uses_the_merchants_mode_when_unspecified(redis_client, redis_url):
    from common.auth import key_digest
    from tests.support.mesh import DEMO_KEY

    running = await start_mesh("all-in-one", redis_url, merchants={
        "demo": {"api_key_sha256": [key_digest(DEMO_KEY)], "currencies": ["USD"], "redemption_mode": "PARTIAL"},
    })
    try:
        number = await new_card(running, 5_00)
        reply = await call(running, "Redeem", redeem(number, 8_00))
        assert reply.mode == pb.REDEMPTION_MODE_PARTIAL
        assert (reply.redeemed.amount_minor, reply.remaining.amount_minor) == (5_00, 3_00)
    finally:
        await running.close()


async def test_redeem_with_tip_debits_amount_plus_tip(mesh):
    number = await new_card(mesh, 100_00)
    reply = await call(mesh, "Redeem", redeem(number, 20_00, tip=usd(3_00)))
    assert (reply.requested.amount_minor, reply.redeemed.amount_minor) == (23_00, 23_00)
    assert (reply.transaction.amount.amount_minor, reply.transaction.tip.amount_minor) == (20_00, 3_00)
    assert await balance_of(mesh, number) == (77_00, 0)


async def test_partial_redeem_with_tip_covers_the_amount_first(mesh):
    number = await new_card(mesh, 21_00)
    reply = await call(mesh, "Redeem", redeem(number, 20_00, tip=usd(3_00), mode=pb.REDEMPTION_MODE_PARTIAL))
    assert (reply.redeemed.amount_minor, reply.remaining.amount_minor) == (21_00, 2_00)
    assert (reply.transaction.amount.amount_minor, reply.transaction.tip.amount_minor) == (20_00, 1_00)


async def test_redeem_tip_in_another_currency_is_invalid(mesh):
    number = await new_card(mesh, 100_00)
    code, reason, _, fields = await fails(mesh, "Redeem", redeem(
        number, 1_00, tip=money_pb2.Money(amount_minor=100, currency_code="CAD")))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "CURRENCY_MISMATCH", ["tip.currency_code"])


async def test_redeem_is_idempotent_by_request_id(mesh):
    number = await new_card(mesh, 100_00)
    request = redeem(number, 10_00)
    first, second = await call(mesh, "Redeem", request), await call(mesh, "Redeem", request)
    assert first == second
    assert await balance_of(mesh, number) == (90_00, 0)


async def test_redeem_never_spends_held_money(mesh):
    number = await new_card(mesh, 100_00)
    await call(mesh, "Authorize", authorize(number, 90_00))
    code, reason, _, _ = await fails(mesh, "Redeem", redeem(number, 10_01))
    assert reason == "INSUFFICIENT_FUNDS"
    reply = await call(mesh, "Redeem", redeem(number, 50_00, mode=pb.REDEMPTION_MODE_PARTIAL))
    assert reply.redeemed.amount_minor == 10_00


# -- VoidRedemption -------------------------------------------------------------------------------


async def test_void_redemption_credits_once_and_twice_gives_the_same_answer(mesh):
    number = await new_card(mesh, 100_00)
    txn = (await call(mesh, "Redeem", redeem(number, 30_00, tip=usd(2_00)))).transaction
    first = await call(mesh, "VoidRedemption", pb.VoidRedemptionRequest(request_id=rid(), transaction_id=txn.transaction_id))
    assert first.credited.amount_minor == 32_00
    assert first.redemption.state == transaction_pb2.TRANSACTION_STATE_REVERSED
    second = await call(mesh, "VoidRedemption", pb.VoidRedemptionRequest(request_id=rid(), transaction_id=txn.transaction_id))
    assert second == first
    assert await balance_of(mesh, number) == (100_00, 0)


async def test_concurrent_voids_credit_once(mesh):
    number = await new_card(mesh, 100_00)
    txn = (await call(mesh, "Redeem", redeem(number, 30_00))).transaction
    replies = await asyncio.gather(*(
        call(mesh, "VoidRedemption", pb.VoidRedemptionRequest(request_id=rid(), transaction_id=txn.transaction_id))
        for _ in range(8)
    ), return_exceptions=True)
    ok = [r for r in replies if not isinstance(r, BaseException)]
    assert ok and all(r.credited.amount_minor == 30_00 for r in ok)
    for failure in (r for r in replies if isinstance(r, BaseException)):
        assert failure.code() == grpc.StatusCode.ABORTED  # retryable, never a second credit
    assert await balance_of(mesh, number) == (100_00, 0)


async def test_void_of_unknown_or_foreign_transaction_is_not_found(mesh):
    number = await new_card(mesh, 100_00)
    txn = (await call(mesh, "Redeem", redeem(number, 5_00))).transaction
    for transaction_id, key in (("txn_nope", None), (txn.transaction_id, ACME_KEY)):
        code, reason, _, _ = await fails(mesh, "VoidRedemption", pb.VoidRedemptionRequest(
            request_id=rid(), transaction_id=transaction_id), key)
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "TRANSACTION_NOT_FOUND")
    assert await balance_of(mesh, number) == (95_00, 0)


# -- ReverseTransaction ---------------------------------------------------------------------------


async def test_reverse_transaction_by_transaction_id(mesh):
    number = await new_card(mesh, 100_00)
    txn = (await call(mesh, "Redeem", redeem(number, 40_00))).transaction
    reply = await call(mesh, "ReverseTransaction", pb.ReverseTransactionRequest(request_id=rid(), transaction_id=txn.transaction_id))
    assert reply.outcome == pb.REVERSAL_OUTCOME_REVERSED
    assert reply.amount.amount_minor == 40_00
    assert reply.transaction.state == transaction_pb2.TRANSACTION_STATE_REVERSED
    assert await balance_of(mesh, number) == (100_00, 0)


async def test_reverse_by_client_id_after_the_original_arrived(mesh):
    number = await new_card(mesh, 100_00)
    await call(mesh, "Redeem", redeem(number, 40_00, client_transaction_id="till-9-0001"))
    reply = await call(mesh, "ReverseTransaction", pb.ReverseTransactionRequest(
        request_id=rid(), client_transaction_id="till-9-0001"))
    assert reply.outcome == pb.REVERSAL_OUTCOME_REVERSED
    assert reply.amount.amount_minor == 40_00
    assert reply.transaction.client_transaction_id == "till-9-0001"
    assert await balance_of(mesh, number) == (100_00, 0)


async def test_reverse_by_client_id_before_arrival_blocks_the_late_original(mesh):
    number = await new_card(mesh, 100_00)
    reply = await call(mesh, "ReverseTransaction", pb.ReverseTransactionRequest(
        request_id=rid(), client_transaction_id="till-9-0002"))
    assert reply.outcome == pb.REVERSAL_OUTCOME_NOTHING_TO_REVERSE
    assert reply.amount.amount_minor == 0
    code, reason, _, _ = await fails(mesh, "Redeem", redeem(number, 40_00, client_transaction_id="till-9-0002"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TRANSACTION_REVERSED")
    code, reason, _, _ = await fails(mesh, "Authorize", authorize(number, 40_00, client_transaction_id="till-9-0002"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TRANSACTION_REVERSED")
    assert await balance_of(mesh, number) == (100_00, 0)
    again = await call(mesh, "ReverseTransaction", pb.ReverseTransactionRequest(
        request_id=rid(), client_transaction_id="till-9-0002"))
    assert again.outcome == pb.REVERSAL_OUTCOME_NOTHING_TO_REVERSE


async def test_reverse_by_client_id_releases_a_hold(mesh):
    number = await new_card(mesh, 100_00)
    hold = (await call(mesh, "Authorize", authorize(number, 30_00, client_transaction_id="web-1"))).hold
    reply = await call(mesh, "ReverseTransaction", pb.ReverseTransactionRequest(request_id=rid(), client_transaction_id="web-1"))
    assert (reply.outcome, reply.amount.amount_minor) == (pb.REVERSAL_OUTCOME_REVERSED, 30_00)
    got = (await call(mesh, "GetHold", pb.GetHoldRequest(hold_id=hold.hold_id))).hold
    assert got.state == hold_pb2.HOLD_STATE_RELEASED
    assert await balance_of(mesh, number) == (100_00, 0)


async def test_client_ids_are_per_merchant(mesh):
    number = await new_card(mesh, 100_00)
    await call(mesh, "Redeem", redeem(number, 10_00, client_transaction_id="shared-id"))
    reply = await call(mesh, "ReverseTransaction", pb.ReverseTransactionRequest(
        request_id=rid(), client_transaction_id="shared-id"), ACME_KEY)
    assert reply.outcome == pb.REVERSAL_OUTCOME_NOTHING_TO_REVERSE
    assert await balance_of(mesh, number) == (90_00, 0)


async def test_reusing_a_client_id_for_another_operation_is_refused(mesh):
    number = await new_card(mesh, 100_00)
    await call(mesh, "Redeem", redeem(number, 10_00, client_transaction_id="dup-1"))
    code, reason, _, _ = await fails(mesh, "Redeem", redeem(number, 11_00, client_transaction_id="dup-1"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CLIENT_TRANSACTION_ID_REUSED")
    assert await balance_of(mesh, number) == (90_00, 0)


async def test_a_refused_authorization_leaves_its_client_id_free(mesh, redis_client):
    short = await new_card(mesh, 5_00)
    code, reason, _, _ = await fails(mesh, "Authorize", authorize(short, 30_00, client_transaction_id="pos-7"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert await redis_client.keys("mesh:client:*pos-7*") == []  # the refusal changed nothing
    funded = await new_card(mesh, 100_00)
    hold = (await call(mesh, "Authorize", authorize(funded, 30_00, client_transaction_id="pos-7"))).hold
    reply = await call(mesh, "ReverseTransaction", pb.ReverseTransactionRequest(request_id=rid(), client_transaction_id="pos-7"))
    assert (reply.outcome, reply.amount.amount_minor) == (pb.REVERSAL_OUTCOME_REVERSED, 30_00)
    assert (await call(mesh, "GetHold", pb.GetHoldRequest(hold_id=hold.hold_id))).hold.state == hold_pb2.HOLD_STATE_RELEASED


async def test_reverse_transaction_needs_a_target(mesh):
    code, _, _, fields = await fails(mesh, "ReverseTransaction", pb.ReverseTransactionRequest(request_id=rid()))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["target"])


# -- concurrency ----------------------------------------------------------------------------------


async def test_200_concurrent_authorizations_of_1_approve_exactly_100(mesh):
    number = await new_card(mesh, 100_00)
    replies = await asyncio.gather(*(call(mesh, "Authorize", authorize(number, 1_00), timeout=BURST_TIMEOUT) for _ in range(200)),
                                   return_exceptions=True)
    approved = [r for r in replies if not isinstance(r, BaseException)]
    refused = [r for r in replies if isinstance(r, BaseException)]
    assert len(approved) == 100
    assert {(r.code().name, error_details(r)[0]) for r in refused} == {
        ("FAILED_PRECONDITION", "INSUFFICIENT_FUNDS")}
    assert await balance_of(mesh, number) == (100_00, 100_00)


async def test_200_concurrent_partial_authorizations_approve_exactly_the_balance(mesh):
    number = await new_card(mesh, 100_00)
    replies = await asyncio.gather(*(call(mesh, "Authorize", authorize(number, 73, allow_partial=True), timeout=BURST_TIMEOUT)
                                     for _ in range(200)), return_exceptions=True)
    refused = [r for r in replies if isinstance(r, BaseException)]
    assert {(r.code().name, error_details(r)[0]) for r in refused} == {("FAILED_PRECONDITION", "INSUFFICIENT_FUNDS")}
    approved = sum(r.approved.amount_minor for r in replies if not isinstance(r, BaseException))
    assert approved == 100_00
    assert await balance_of(mesh, number) == (100_00, 100_00)


async def test_concurrent_holds_and_redeems_never_overdraw(mesh):
    number = await new_card(mesh, 50_00)
    calls = []
    for i in range(120):
        calls.append(call(mesh, "Authorize", authorize(number, 1_00), timeout=BURST_TIMEOUT) if i % 2
                     else call(mesh, "Redeem", redeem(number, 1_00), timeout=BURST_TIMEOUT))
    replies = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in replies if not isinstance(r, BaseException)]
    assert len(ok) == 50
    balance, held = await balance_of(mesh, number)
    assert balance - held == 0 and balance >= 0


# -- card state, PIN, more reversal targets -------------------------------------------------------


async def test_inactive_card_cannot_be_authorized_or_redeemed(mesh):
    for rpc, request in (("Authorize", authorize("6035710000000003", 1_00)), ("Redeem", redeem("6035710000000003", 1_00))):
        code, reason, _, _ = await fails(mesh, rpc, request)
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CARD_INACTIVE")


async def test_pin_card_needs_its_pin_and_the_pin_never_shows(mesh):
    pin_card = card_pb2.CardRef(card_number="6035710000000002", pin="9999")
    code, reason, _, _ = await fails(mesh, "Redeem", pb.RedeemRequest(request_id=rid(), card=pin_card, amount=usd(1_00)))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "INVALID_PIN")
    pin_card.pin = "1234"
    reply = await call(mesh, "Redeem", pb.RedeemRequest(request_id=rid(), card=pin_card, amount=usd(1_00)))
    assert reply.transaction.balance_after.amount_minor == 24_00
    assert "1234" not in str(reply) and "6035710000000002" not in str(reply)


async def test_reverse_transaction_with_a_hold_id_releases_the_hold_once(mesh):
    number = await new_card(mesh, 100_00)
    hold = (await call(mesh, "Authorize", authorize(number, 12_00))).hold
    first = await call(mesh, "ReverseTransaction", pb.ReverseTransactionRequest(request_id=rid(), transaction_id=hold.hold_id))
    assert (first.outcome, first.amount.amount_minor) == (pb.REVERSAL_OUTCOME_REVERSED, 12_00)
    again = await call(mesh, "ReverseTransaction", pb.ReverseTransactionRequest(request_id=rid(), transaction_id=hold.hold_id))
    assert (again.outcome, again.amount.amount_minor) == (pb.REVERSAL_OUTCOME_REVERSED, 12_00)
    assert await balance_of(mesh, number) == (100_00, 0)


async def test_reverse_transaction_of_unknown_or_foreign_id_is_not_found(mesh):
    number = await new_card(mesh, 100_00)
    txn = (await call(mesh, "Redeem", redeem(number, 5_00))).transaction
    for transaction_id, key in (("txn_nope", None), (txn.transaction_id, ACME_KEY), ("hld_nope", None)):
        code, reason, _, _ = await fails(mesh, "ReverseTransaction", pb.ReverseTransactionRequest(
            request_id=rid(), transaction_id=transaction_id), key)
        assert code == grpc.StatusCode.NOT_FOUND
        assert reason in ("TRANSACTION_NOT_FOUND", "HOLD_NOT_FOUND")
    assert await balance_of(mesh, number) == (95_00, 0)
