"""Hostile requests for the fuzz tests: hypothesis strategies built from the proto descriptors of
every mesh RPC, biased towards the values that break payment code (boundary and overflowing
amounts, unknown currencies, huge and non-ASCII strings, bad ids, unknown enum values, missing
oneofs), plus a mesh served from a background thread so the sync fuzz tests can call it.
"""

from __future__ import annotations

import ast

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import redis
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor as F
from hypothesis import strategies as st

from common.money import MAX_AMOUNT_MINOR
from mesh.services import SPECS
from tests.support.mesh import start_mesh

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
INT32_MAX = 2**31 - 1
# Demo cards of tests/support/mesh.py (card 2 has PIN 1234) and numbers no one issued.
KNOWN_CARDS = ["6035710000000001", "6035710000000002", "6035710000000003"]
MAX_MESSAGE = 1024 * 1024


@dataclass(frozen=True)
class Rpc:
    service: str  # SPECS name
    path: str  # /package.Service/Method
    request: type
    response: type

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 2)[-2].rsplit(".", 1)[-1] + "." + self.path.rsplit("/", 1)[-1]


def all_rpcs() -> list[Rpc]:
    """Every unary RPC of every mesh service, from the descriptors (a new RPC is fuzzed for free)."""
    pool = descriptor_pool.Default()
    found = []
    for name, spec in SPECS.items():
        service = pool.FindServiceByName(spec.full_name)
        for method in service.methods:
            if method.client_streaming or method.server_streaming:
                continue
            found.append(Rpc(
                name, f"/{service.full_name}/{method.name}",
                message_factory.GetMessageClass(method.input_type),
                message_factory.GetMessageClass(method.output_type),
            ))
    return found


# -- values --------------------------------------------------------------------------------------

AMOUNTS = st.one_of(
    st.sampled_from([
        0, 1, -1, 99, 100, 2500, 10000, 10001, MAX_AMOUNT_MINOR, MAX_AMOUNT_MINOR + 1,
        INT64_MAX, INT64_MAX - 1, INT64_MIN, INT64_MIN + 1, 2**62, -(2**62), INT32_MAX, INT32_MAX + 1,
    ]),
    st.integers(INT64_MIN, INT64_MAX),
)
CURRENCIES = st.sampled_from(
    ["USD", "CAD", "EUR", "JPY", "BHD", "XXX", "ZZZ", "usd", "US", "USDD", "", " USD", "U$D", "\u20ac\u20ac\u20ac", "XTS"]
)
CARD_NUMBERS = st.one_of(
    st.sampled_from(KNOWN_CARDS),
    st.sampled_from([
        "", "0", "12345", "603571", "6035710000000001 ", " 6035710000000001", "6035-7100-0000-0001",
        "0" * 32, "9" * 33, "\uff16\uff10\uff13\uff15\uff17\uff11\uff10\uff10",  # full-width digits
        "\u0666\u0660\u0663\u0665\u0667\u0661",  # Arabic-Indic digits (str.isdigit() is True)
        "6035710000000001\n", "6035710000000001\x00", "1e10", "-6035710000000001",
    ]),
    st.text("0123456789", min_size=6, max_size=19).map(lambda s: "8" + s),
)
PINS = st.sampled_from(["", "1234", "0000", "12345678", "x" * 17, "12 4", "\u0661\u0662\u0663\u0664", "1234\x00", "\u00e9t\u00e9"])
IDS = st.one_of(
    st.sampled_from([
        "", "a", "req-1", "order-1", "h_0", "t_0", "a" * 128, "a" * 129, "{tag}", "x}y{", "id with space",
        "../../etc/passwd", "\x00", "caf\u00e9", "\U0001F4B3", "*", "idem:{m:demo:x}:rpc", "%7B", "a:b:c",
    ]),
    st.text(min_size=0, max_size=40),
)
BIG = st.sampled_from([1_000, 70_000, 300_000, MAX_MESSAGE - 200, MAX_MESSAGE + 10])
STRINGS = st.one_of(st.text(max_size=40), BIG.map(lambda n: "A" * n), IDS)


# Plausible values: most fields of most requests get one, so requests get past the first check and
# the hostile values reach the deeper code (the flows, the Lua scripts, the vendor edge).
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_"
GOOD_IDS = st.text(_ID_CHARS, min_size=1, max_size=12).map(lambda s: "fz-" + s)
GOOD = {
    "amount_minor": st.sampled_from([1, 50, 100, 1000, 2500]),
    "currency_code": st.just("USD"),
    "card_number": st.sampled_from(KNOWN_CARDS),
    "pin": st.sampled_from(["", "1234"]),
}
NOW = int(time.time())


def _plausible(field: F):
    if field.name in GOOD:
        return GOOD[field.name]
    if field.type == F.TYPE_STRING and (field.name.endswith("_id") or field.name == "request_id"):
        return GOOD_IDS
    if field.type == F.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values if v.number]
        return st.sampled_from(numbers or [0])
    return None


def _scalar(field: F, depth: int):
    hostile = _hostile(field, depth)
    plausible = _plausible(field)
    # one_of draws its branches about evenly: three plausible branches to one hostile.
    return hostile if plausible is None else st.one_of(plausible, plausible, plausible, hostile)


def _hostile(field: F, depth: int):
    name = field.name
    kind = field.type
    if kind in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return AMOUNTS
    if kind in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return st.sampled_from([0, 1, 2**63, 2**64 - 1])
    if kind in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
        return st.one_of(st.sampled_from([0, 1, -1, INT32_MAX, -(2**31)]), st.integers(-(2**31), INT32_MAX))
    if kind in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return st.sampled_from([0, 1, 2**32 - 1])
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind == F.TYPE_ENUM:
        top = max(v.number for v in field.enum_type.values)
        return st.integers(-2, top + 3)  # proto3 enums are open: unknown numbers arrive as-is
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if kind == F.TYPE_FLOAT else 64)
    if kind == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == F.TYPE_STRING:
        if name == "currency_code":
            return CURRENCIES
        if name in ("card_number", "track_data", "barcode", "phone_number", "account_token", "proxy_number"):
            return st.one_of(CARD_NUMBERS, STRINGS) if name != "card_number" else CARD_NUMBERS
        if name == "pin":
            return PINS
        if name.endswith("_id") or name.endswith("_ids") or name == "page_token":
            return IDS
        return STRINGS
    if kind == F.TYPE_MESSAGE:
        return message_strategy(field.message_type, depth + 1)
    raise AssertionError(f"unhandled field type {kind} of {field.full_name}")


def _value(field: F, depth: int):
    single = _scalar(field, depth)
    if field.is_repeated:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            return st.just([])
        # Mostly short lists; sometimes over the caps (20 tenders / cards) to reach sum overflow.
        return st.one_of(st.lists(single, max_size=3), st.lists(single, min_size=20, max_size=26))
    return single


def _maybe(values):
    """Usually set, sometimes left out (a missing field or oneof)."""
    return st.one_of(values, values, values, st.none())


def message_strategy(descriptor, depth: int = 0):
    """Messages of `descriptor`: any subset of fields set, at most one member per oneof (often
    none, i.e. a missing oneof), nested messages down to depth 3."""
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Timestamp":
        return st.builds(cls, seconds=st.sampled_from([NOW + 3600, NOW + 86400, NOW - 60, 0, -1, 1, 253402300800, -62135596801, INT64_MAX, INT64_MIN, 1_900_000_000]),
                         nanos=st.sampled_from([0, 1, -1, 999_999_999, 1_000_000_000, INT32_MAX]))
    if descriptor.full_name == "google.protobuf.Duration":
        return st.builds(cls, seconds=st.sampled_from([0, 1, -1, 60, 315_576_000_001, INT64_MAX, INT64_MIN]),
                         nanos=st.sampled_from([0, -1, 999_999_999, 1_000_000_000]))
    if depth > 3:
        return st.just(cls())
    oneof_fields = {f.name for o in descriptor.oneofs for f in o.fields}
    plain = {f.name: _maybe(_value(f, depth)) for f in descriptor.fields if f.name not in oneof_fields}
    choices = [
        _maybe(st.sampled_from(list(o.fields)).flatmap(
            lambda f, d=depth: _value(f, d).map(lambda v, f=f: (f.name, v))))
        for o in descriptor.oneofs
    ]

    def build(args):
        values, picked = args
        message = cls()
        for name, value in [*values.items(), *(p for p in picked if p is not None)]:
            if value is None:
                continue
            field = descriptor.fields_by_name[name]
            if field.is_repeated:
                target = getattr(message, name)
                if field.type == F.TYPE_MESSAGE:
                    target.extend(value)
                else:
                    target.extend(value)
            elif field.type == F.TYPE_MESSAGE:
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.tuples(st.fixed_dictionaries(plain), st.tuples(*choices) if choices else st.just(())).map(build)


def invalid_utf8_bodies(rpc: Rpc) -> Iterator[tuple[str, bytes]]:
    """For every string field of the request (and of its nested messages, one level): a body
    whose only content is that field holding invalid UTF-8."""
    bad = b"\xff\xfe\xc3\x28\xed\xa0\x80"  # lone bytes, a truncated sequence, a UTF-16 surrogate

    def field_bytes(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload

    descriptor = rpc.request.DESCRIPTOR
    for field in descriptor.fields:
        if field.type == F.TYPE_STRING:
            yield field.name, field_bytes(field.number, bad)
        elif field.type == F.TYPE_MESSAGE:
            for inner in field.message_type.fields:
                if inner.type == F.TYPE_STRING:
                    yield f"{field.name}.{inner.name}", field_bytes(field.number, field_bytes(inner.number, bad))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# -- a mesh served from a background event loop ------------------------------------------------------


class ServedMesh:
    """`start_mesh` running on its own event loop thread; tests call it with sync gRPC clients."""

    def __init__(self, mode: str, redis_url: str, **overrides) -> None:
        self.mode = mode
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"mesh-{mode}", daemon=True)
        self._thread.start()
        self.redis = redis.Redis.from_url(redis_url)
        self.redis.flushdb()
        self.mesh = self.run(start_mesh(mode, redis_url, **overrides))
        self._channels: dict[int, grpc.Channel] = {}

    def run(self, coroutine, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def channel(self, service: str) -> grpc.Channel:
        port = self.mesh.ports[service]
        if port not in self._channels:
            self._channels[port] = grpc.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 4 * MAX_MESSAGE)]
            )
        return self._channels[port]

    def settle(self) -> None:
        """Wait until no request runs any more in the mesh (handlers whose caller went away go on
        and store their outcome, common/idempotency.py): only then is a Redis snapshot stable."""
        for runtime in self.mesh.runtimes:
            self.run(runtime.idempotency.drain())

    def method(self, rpc: Rpc, raw: bool = False):
        if raw:
            return self.channel(rpc.service).unary_unary(rpc.path, lambda b: b, lambda b: b)
        return self.channel(rpc.service).unary_unary(rpc.path, rpc.request.SerializeToString, rpc.response.FromString)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self.run(self.mesh.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self.redis.close()


# -- state ----------------------------------------------------------------------------------------

# A wrong PIN is meant to change state: it counts towards the card's lockout.
PIN_FIELDS = {b"pin_fail", b"locked_until"}


def money_state(client: redis.Redis) -> dict[bytes, bytes]:
    """Every key except idempotency records (checked apart) and limiter buckets -> its value
    (hashes as sorted fields, without the PIN lockout counters of cards; other types as DUMP).
    Three round trips: SCAN, a TYPE pipeline, a value pipeline."""
    keys = [k for k in client.scan_iter(count=10_000) if not k.startswith((b"idem:", b"limit:"))]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    kinds = pipe.execute()
    for key, kind in zip(keys, kinds):
        if kind == b"hash":
            pipe.hgetall(key)
        elif kind == b"zset" and key.startswith(ORDER_INDEX):
            pipe.zrange(key, 0, -1)  # payment ids, compared member by member (see order_index_members)
        else:
            pipe.dump(key)
    values = {}
    for key, value in zip(keys, pipe.execute()):
        if isinstance(value, dict):
            value = repr(sorted((k, v) for k, v in value.items() if k not in PIN_FIELDS)).encode()
        elif isinstance(value, list):
            value = repr(sorted(value)).encode()
        values[key] = value or b""
    return values


# The order -> payments index (services/shared/orders.py): a write-ahead superset of an order's
# payments, so a refused redemption is indexed too (its record says declined).
ORDER_INDEX = b"mesh:order:"


def order_index_members(value: bytes | None) -> set[bytes]:
    return set(ast.literal_eval(value.decode())) if value else set()


def idempotency_records(client: redis.Redis) -> dict[bytes, dict[bytes, bytes]]:
    keys = list(client.scan_iter(match="idem:*", count=10_000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    return dict(zip(keys, pipe.execute()))
