"""No card number, PIN or CVV2 leaks: a workload over every service (balance, authorization,
settlement, refund, fulfillment, gateway), on cards with unique 19-digit numbers and 8-digit PINs,
including refusals (wrong PIN, unknown card, insufficient funds, bad input), and e-gift issuance
that hands out new numbers, PINs and CVV2s. Captured and scanned for every secret used or issued:

- every log line as printed (the production JSON formatter, DEBUG level) and every LogRecord's
  message, arguments, extra fields and exception text;
- every span attribute, event and status of every span (InMemorySpanExporter, sampling 1.0);
- every metric sample and label of the runtime's Prometheus registry;
- every error message, ErrorInfo metadata and BadRequest detail the client received;
- every key and value in Redis.

Secrets shorter than 6 characters cannot be scanned as plain strings (they occur by chance); the
3-digit CVV2s are searched next to the word cvv2 instead (e.g. `"cvv2": "123"`).
"""

from __future__ import annotations

import io
import logging
import re
import secrets
import time

import grpc
from google.protobuf import timestamp_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

from common.auth import key_digest
from common.cards import mask_number
from common.config import TelemetrySettings
from common.telemetry import configure_logging
from giftcard.authorization.v1 import authorization_pb2 as apb
from giftcard.balance.v1 import balance_pb2 as bpb
from giftcard.fulfillment.v1 import fulfillment_pb2 as fpb
from giftcard.gateway.v1 import gateway_pb2 as gpb
from giftcard.refund.v1 import refund_pb2 as rpb
from giftcard.settlement.v1 import settlement_pb2 as spb
from giftcard.type.v1 import card_pb2, money_pb2
from mesh.runtime import MeshRuntime
from mesh.services import SPECS
from tests.support.mesh import ACME_KEY, DEMO_KEY, auth, mesh_settings
from tests.support.secrets_scan import SecretWatch, record_text, redis_dump

PROGRAMS = {
    "egift-pin": {"prefix": "739901", "length": 19, "pin_digits": 8},
    "egift-cvv2": {"prefix": "739902", "length": 19, "cvv2": True},
}


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code="USD")


def number19() -> str:
    return "7391" + "".join(secrets.choice("0123456789") for _ in range(15))


def pin8() -> str:
    return "".join(secrets.choice("0123456789") for _ in range(8))


async def test_no_card_number_pin_or_cvv2_anywhere(redis_client, redis_url):
    exporter = InMemorySpanExporter()
    settings = mesh_settings(
        redis_url, telemetry={"trace_sample_ratio": 1.0, "log_level": "DEBUG"},
        settlement={"scheduler_enabled": False},
        merchants={
            "demo": {"api_key_sha256": [key_digest(DEMO_KEY)], "currencies": ["USD", "CAD"],
                     "providers": [{"provider": "native", "options": {"programs": PROGRAMS}}]},
            "acme": {"api_key_sha256": [key_digest(ACME_KEY)], "currencies": ["USD"]},
        },
    )
    printed = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    configure_logging(TelemetrySettings(log_level="DEBUG"), stream=printed)
    capture = Capture()
    root.addHandler(capture)
    runtime = MeshRuntime(settings, span_exporters=[exporter])
    await runtime.start()
    watch = SecretWatch()
    cvv2s: list[str] = []
    errors: list[str] = []
    calls = 0
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}")
    stubs = {name: SPECS[name].stub(channel) for name in SPECS}

    async def call(service: str, rpc: str, request, key: str = DEMO_KEY):
        nonlocal calls
        calls += 1
        try:
            return await getattr(stubs[service], rpc)(request, metadata=auth(key), timeout=10)
        except grpc.aio.AioRpcError as error:
            trailing = b"".join(
                v if isinstance(v, bytes) else v.encode() for _, v in (error.trailing_metadata() or ())
            )
            errors.append(f"{error.code().name} {error.details()} {trailing!r}")
            return None

    try:
        ledger = runtime.providers.native_ledger
        cards = {}
        for name, balance in (("a", 10_000), ("b", 5_000), ("c", 3_000), ("d", 0)):
            number, pin = number19(), pin8()
            await ledger.create_card("demo", number, "USD", pin=pin, balance_minor=balance, active=balance > 0)
            cards[name] = (number, pin)
            watch.add(number, pin)

        def wrong_pin() -> str:
            pin = pin8()
            watch.add(pin)
            return pin

        def ref(name: str, pin: str | None = None) -> card_pb2.CardRef:
            number, real_pin = cards[name]
            return card_pb2.CardRef(card_number=number, pin=real_pin if pin is None else pin)

        stranger = number19()
        watch.add(stranger)
        # Balance: right PIN, wrong PIN, unknown card, another merchant, a plan.
        await call("balance", "GetBalance", bpb.GetBalanceRequest(card=ref("a")))
        await call("balance", "GetBalance", bpb.GetBalanceRequest(card=ref("a", pin=wrong_pin())))
        await call("balance", "GetBalance", bpb.GetBalanceRequest(card=card_pb2.CardRef(card_number=stranger, pin=wrong_pin())))
        await call("balance", "GetBalance", bpb.GetBalanceRequest(card=ref("a")), key=ACME_KEY)
        await call("balance", "PlanTender", bpb.PlanTenderRequest(order_total=usd(12_000), cards=[ref("a"), ref("b")]))
        # A card number where a PIN belongs, letters in a number: refused without echo.
        await call("balance", "GetBalance", bpb.GetBalanceRequest(card=card_pb2.CardRef(card_number=cards["a"][0] + "x")))
        # Authorization: hold, partial release, capture through settlement, redeem, void, reverse.
        held = await call("authorization", "Authorize", apb.AuthorizeRequest(
            request_id="s-auth", order_id="s-1", card=ref("a"), amount=usd(4_000)))
        await call("authorization", "Authorize", apb.AuthorizeRequest(
            request_id="s-auth-big", order_id="s-1", card=ref("b"), amount=usd(999_999)))
        if held is not None:
            hold_id = held.hold.hold_id
            await call("authorization", "GetHold", apb.GetHoldRequest(hold_id=hold_id))
            await call("authorization", "ReverseAuthorization", apb.ReverseAuthorizationRequest(
                request_id="s-rel", hold_id=hold_id, amount=usd(500)))
            await call("settlement", "Capture", spb.CaptureRequest(
                request_id="s-cap", hold_id=hold_id, amount=usd(2_000), shipment_id="ship-1", final_shipment=True))
        redeemed = await call("authorization", "Redeem", apb.RedeemRequest(
            request_id="s-red", order_id="s-2", card=ref("b"), amount=usd(1_000), client_transaction_id="s-ct"))
        await call("authorization", "Redeem", apb.RedeemRequest(
            request_id="s-red-pin", order_id="s-2", card=ref("b", pin=wrong_pin()), amount=usd(100)))
        if redeemed is not None:
            await call("refund", "Refund", rpb.RefundRequest(
                request_id="s-refund", transaction_id=redeemed.transaction.transaction_id, amount=usd(300)))
            await call("authorization", "VoidRedemption", apb.VoidRedemptionRequest(
                request_id="s-void", transaction_id=redeemed.transaction.transaction_id))
        await call("authorization", "Checkout", apb.CheckoutRequest(
            request_id="s-checkout", order_id="s-3",
            tenders=[apb.CheckoutTender(card=ref("c"), amount=usd(1_000)), apb.CheckoutTender(card=ref("b"), amount=usd(500))]))
        await call("authorization", "ReverseTransaction", apb.ReverseTransactionRequest(
            request_id="s-revt", client_transaction_id="s-ct"))
        # Refund service: reload, cash-out, refund onto a new card (cash-out + issue).
        await call("refund", "Reload", rpb.ReloadRequest(request_id="s-reload", card=ref("c"), amount=usd(700)))
        await call("refund", "CashOut", rpb.CashOutRequest(request_id="s-cashout", card=ref("c")))
        moved = await call("refund", "RefundToNewCard", rpb.RefundToNewCardRequest(
            request_id="s-r2c", order_id="s-4", program_id="egift-pin", amount=usd(1_500),
            policy=rpb.REFUND_TO_CARD_POLICY_NEW_CARD))
        if moved is not None and moved.HasField("new_card"):
            watch.add(moved.new_card.card_number, moved.new_card.pin)
        # Fulfillment: physical activation, e-gift with PIN and with CVV2, exchange, lookups.
        await call("fulfillment", "ActivatePhysicalCard", fpb.ActivatePhysicalCardRequest(
            request_id="s-act", order_id="s-5", line_id="1", card=ref("d"), amount=usd(2_500)))
        for line, program in (("1", "egift-pin"), ("2", "egift-cvv2")):
            issued = await call("fulfillment", "IssueElectronicCard", fpb.IssueElectronicCardRequest(
                request_id=f"s-egift-{line}", order_id="s-6", line_id=line, program_id=program, amount=usd(2_000)))
            assert issued is not None and issued.HasField("card")
            watch.add(issued.card.card_number, issued.card.pin)
            if issued.card.cvv2:
                cvv2s.append(issued.card.cvv2)
            # The same request again: the stored (sealed) response replays the credentials.
            await call("fulfillment", "IssueElectronicCard", fpb.IssueElectronicCardRequest(
                request_id=f"s-egift-{line}", order_id="s-6", line_id=line, program_id=program, amount=usd(2_000)))
            if line == "1":
                egift = (issued.card.card_number, issued.card.pin)
        await call("fulfillment", "GetActivation", fpb.GetActivationRequest(order_id="s-6", line_id="1"))
        await call("fulfillment", "ExchangeCard", fpb.ExchangeCardRequest(
            request_id="s-exchange", from_card=card_pb2.CardRef(card_number=egift[0], pin=egift[1]), to_card=ref("a"),
            reason=fpb.EXCHANGE_REASON_EGIFT_TO_PHYSICAL))
        # The gateway directly, with its ids.
        placed = await call("gateway", "PlaceHold", gpb.PlaceHoldRequest(
            reference_id="s-gw", card=ref("a"), amount=usd(100),
            expire_time=timestamp_pb2.Timestamp(seconds=int(time.time()) + 3600)))
        if placed is not None:
            await call("gateway", "ReleaseHold", gpb.ReleaseHoldRequest(
                reference_id="s-gw-rel", card=ref("a"), provider_hold_id=placed.provider_hold_id))
        await call("gateway", "CashOut", gpb.CashOutRequest(reference_id="s-gw-co", card=card_pb2.CardRef(card_number=stranger)))
        assert len(watch.secrets) >= 17 and len(cvv2s) == 1
    finally:
        await channel.close()
        await runtime.stop(grace=1)  # flushes the spans
        root.removeHandler(capture)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)

    assert calls >= 30 and errors, "the workload must include refusals"
    lines = printed.getvalue()
    spans = exporter.get_finished_spans()
    span_text = "\n".join(
        f"{span.name} {dict(span.attributes or {})} {[(e.name, dict(e.attributes or {})) for e in span.events]} "
        f"{span.status.description}"
        for span in spans
    )
    metrics = generate_latest(runtime.registry).decode()
    dump = await redis_dump(redis_client)
    assert len(capture.records) > 50 and len(spans) > 100 and dump

    places = {
        "printed log lines": lines,
        "log records": "\n".join(record_text(r) for r in capture.records),
        "span attributes": span_text,
        "metric samples": metrics,
        "error replies": "\n".join(errors),
        "redis": dump.decode("latin-1"),
    }
    # The scan looks where card data flows: the masked numbers are there (first 6 / last 4).
    assert mask_number(cards["a"][0]) in places["span attributes"] + places["printed log lines"]
    leaks = [
        (place, "secret#%d" % i) for place, text in places.items()
        for i, secret in enumerate(sorted(watch.secrets)) if secret in text
    ]
    assert leaks == []
    cvv_pattern = re.compile("|".join(rf"cvv2?\W{{0,8}}{re.escape(c)}" for c in cvv2s), re.IGNORECASE)
    assert [place for place, text in places.items() if cvv_pattern.search(text)] == []
    print(f"\nsecrets scan: {calls} calls, {len(errors)} refusals, {len(watch.secrets)} secrets + {len(cvv2s)} CVV2, "
          f"{lines.count(chr(10))} log lines, {len(spans)} spans, {metrics.count(chr(10))} metric lines, "
          f"{len(dump)} bytes of Redis")
