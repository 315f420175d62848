"""How one service of the mesh calls another: the same interface in both deployment modes.

`InProcessClient` calls the other service's servicer directly (all-in-one mode: no loopback hop,
no serialization). `GrpcClient` calls it over gRPC (microservices mode), forwarding the caller's
credentials and remaining deadline, and turns the remote `google.rpc.Status` back into the same
`MeshError`, so callers see identical behaviour either way. Usage: `await client.GetBalance(req)`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_status import rpc_status

from common.auth import INTERNAL_MERCHANT_HEADER
from common.context import current_call
from common.errors import GRPC_CODE_BY_NUMBER, MeshError, error_info

Rpc = Callable[[Any], Awaitable[Any]]


class InProcessClient:
    def __init__(self, servicer: object) -> None:
        self._servicer = servicer

    def __getattr__(self, rpc: str) -> Rpc:
        method = getattr(self._servicer, rpc)

        def call(request):
            return method(request, None)  # the servicer's coroutine, awaited by the caller

        # Kept on the instance: the next call finds it without coming back here.
        setattr(self, rpc, call)
        return call


class GrpcClient:
    """`internal_token`: the mesh's own identity, used for work that runs with no caller (scheduled
    jobs, recovery); calls made for a caller forward that caller's credentials."""

    def __init__(self, channel: grpc.aio.Channel, stub_class: type, internal_token: str | None = None) -> None:
        self._stub = stub_class(channel)
        self._internal_token = internal_token

    def __getattr__(self, rpc: str) -> Rpc:
        method = getattr(self._stub, rpc)

        async def call(request):
            caller = current_call()
            authorization = caller.authorization
            if not authorization and self._internal_token:
                authorization = f"Bearer {self._internal_token}"
            # The merchant header only counts for the internal identity (a merchant key names its
            # own merchant), so it is always sent: a call made for an internal caller keeps it.
            metadata = (("authorization", authorization), (INTERNAL_MERCHANT_HEADER, caller.merchant_id))
            try:
                return await method(request, timeout=max(caller.remaining(), 0.001), metadata=metadata)
            except grpc.aio.AioRpcError as error:
                raise mesh_error_from_rpc(error) from None

        return call


def mesh_error_from_rpc(error: grpc.aio.AioRpcError) -> MeshError:
    status = rpc_status.from_call(error)
    info = error_info(status) if status is not None else None
    if info is None:
        code = error.code()
        return MeshError(code, code.name, error.details() or code.name, retryable=code == grpc.StatusCode.UNAVAILABLE)
    metadata = dict(info.metadata)
    field = metadata.pop("field", None)
    code = GRPC_CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    return MeshError(code, info.reason, status.message, field=field, metadata=metadata)
