"""Helpers shared by the security tests: failed-call details, raw (bytes) calls, Redis digests."""

from __future__ import annotations

import hashlib

import grpc

from google.rpc import error_details_pb2
from grpc_status import rpc_status

# Codes a hostile or unauthorised request may get: each is a deliberate answer of the mesh. UNKNOWN
# and INTERNAL (a crash or an unmapped exception) never are.
CLEAN_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED,
})


def failure(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """(code, ErrorInfo reason, ErrorInfo metadata) of a failed call ("" / {} when grpc itself
    answered, e.g. a message over the size limit, and there is no google.rpc.Status)."""
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return error.code(), info.reason, dict(info.metadata)
    return error.code(), "", {}


def raw_method(channel: grpc.aio.Channel, full_method: str):
    """A unary method taking and returning bytes, to send what no generated stub would."""
    return channel.unary_unary(full_method, request_serializer=lambda b: b, response_deserializer=lambda b: b)


async def keyspace(client) -> dict[bytes, bytes]:
    """Every key of the database -> a digest of its type and value (TTLs left out: they tick)."""
    found: dict[bytes, bytes] = {}
    async for key in client.scan_iter(count=1000):
        kind = (await client.type(key)).decode()
        if kind == "string":
            value = [await client.get(key) or b""]
        elif kind == "hash":
            value = [b"%s=%s" % kv for kv in sorted((await client.hgetall(key)).items())]
        elif kind == "list":
            value = await client.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(await client.smembers(key))
        elif kind == "zset":
            value = [b"%s@%r" % (m, s) for m, s in await client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            value = [repr(entry).encode() for entry in await client.xrange(key)]
        else:
            value = []
        found[key] = hashlib.sha256(kind.encode() + b"\0" + b"\0".join(value)).digest()
    return found
