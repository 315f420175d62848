"""Per-call context of an authenticated RPC: who is calling and by when it must finish.

Set by the server interceptor for the duration of one call and read by clients of other services,
which forward the caller's credentials and remaining deadline (in-process or over gRPC alike).
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass

import grpc

from common.errors import MeshError


@dataclass(frozen=True, slots=True)
class CallContext:
    merchant_id: str
    # Monotonic-clock deadline of the incoming call.
    deadline: float
    # The caller's `authorization` metadata, forwarded to other services of the mesh.
    authorization: str = ""

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


_current: ContextVar[CallContext | None] = ContextVar("giftcard_call_context", default=None)


def current_call() -> CallContext:
    call = _current.get()
    if call is None:
        raise MeshError(
            grpc.StatusCode.INTERNAL, "NO_CALL_CONTEXT",
            "service invoked outside an authenticated call",
        )
    return call


def bind_call(call: CallContext):
    """Bind `call` as the current call context; returns a token for `unbind_call`."""
    return _current.set(call)


def unbind_call(token) -> None:
    _current.reset(token)
