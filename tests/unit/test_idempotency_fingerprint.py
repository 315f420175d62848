"""Pure parts of common/idempotency.py: request fingerprints, request_id validation, record keys."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2

from common.errors import MeshError
from common.idempotency import fingerprint, record_key, validate_request_id

RPC = "giftcard.authorization.v1.AuthorizationService/Hold"


def _struct(items: list[tuple[str, object]]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    for key, value in items:  # insertion order differs between callers on purpose
        message[key] = value
    return message


def test_equal_requests_have_equal_fingerprints_whatever_the_map_insertion_order():
    a = _struct([("amount_minor", 1500), ("currency_code", "USD"), ("memo", "x")])
    b = _struct([("memo", "x"), ("currency_code", "USD"), ("amount_minor", 1500)])
    assert fingerprint(RPC, a) == fingerprint(RPC, b)


def test_fingerprint_is_sha256_hex():
    digest = fingerprint(RPC, _struct([("a", 1)]))
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_different_body_changes_the_fingerprint():
    assert fingerprint(RPC, _struct([("amount_minor", 1500)])) != fingerprint(
        RPC, _struct([("amount_minor", 1501)])
    )


def test_rpc_name_is_part_of_the_fingerprint():
    message = _struct([("amount_minor", 1500)])
    assert fingerprint(RPC, message) != fingerprint(
        "giftcard.refund.v1.RefundService/Refund", message
    )


def test_message_type_is_part_of_the_fingerprint():
    # Both serialize to empty bytes; the type still tells them apart.
    assert fingerprint(RPC, struct_pb2.Struct()) != fingerprint(RPC, struct_pb2.ListValue())


def test_request_id_field_is_ignored_and_the_caller_message_is_untouched():
    first = error_details_pb2.RequestInfo(request_id="req-1", serving_data="hold 1500 USD")
    second = error_details_pb2.RequestInfo(request_id="req-2", serving_data="hold 1500 USD")
    other = error_details_pb2.RequestInfo(request_id="req-1", serving_data="hold 1600 USD")
    assert fingerprint(RPC, first) == fingerprint(RPC, second)
    assert fingerprint(RPC, first) != fingerprint(RPC, other)
    assert first.request_id == "req-1"


def test_keyed_fingerprint_is_hmac_and_depends_on_the_key():
    message = _struct([("card_number", "6006491234567890123")])
    plain = fingerprint(RPC, message)
    keyed = fingerprint(RPC, message, key=b"k1" * 16)
    assert keyed != plain
    assert keyed == fingerprint(RPC, message, key=b"k1" * 16)
    assert keyed != fingerprint(RPC, message, key=b"k2" * 16)
    assert "6006491234567890123" not in keyed


@pytest.mark.parametrize(
    "request_id",
    ["a", "A" * 128, "550e8400-e29b-41d4-a716-446655440000", "order:17.line_2", "x-Y_z.0:9"],
)
def test_valid_request_ids_pass(request_id):
    validate_request_id(request_id)


@pytest.mark.parametrize(
    "request_id",
    [
        "", "A" * 129, "has space", "tab\t", "new\nline", "ok\n", "{tag}", "a/b", "ключ", "é",
        None,
    ],
)
def test_invalid_request_id_is_invalid_argument_on_field_request_id(request_id):
    with pytest.raises(MeshError) as raised:
        validate_request_id(request_id)
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.field == "request_id"
    if request_id:
        assert str(request_id) not in raised.value.message


def test_record_key_layout_has_one_hash_tag_of_merchant_and_request_id():
    assert record_key("merchant-7", RPC, "req-1") == f"idem:{{m:merchant-7:req-1}}:{RPC}"


def test_record_keys_never_collide_across_merchant_and_request_id_boundaries():
    # Without encoding the merchant, both would be idem:{m:a:b:c}:rpc.
    assert record_key("a:b", RPC, "c") != record_key("a", RPC, "b:c")
    assert record_key("a%3Ab", RPC, "c") != record_key("a:b", RPC, "c")


def test_merchant_braces_cannot_break_the_hash_tag():
    key = record_key("evil}{x", RPC, "req-1")
    tag = key[key.index("{") + 1 : key.index("}")]
    assert tag == "m:evil%7D%7Bx:req-1"


def test_empty_merchant_or_rpc_is_a_programming_error():
    with pytest.raises(ValueError):
        record_key("", RPC, "req-1")
    with pytest.raises(ValueError):
        record_key("m", "", "req-1")
