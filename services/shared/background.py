"""Work done outside any caller's RPC (resolver, checkout resumption) still calls other services
through the same clients, which read the merchant and the deadline from the call context."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from common.context import CallContext, bind_call, current_call, unbind_call


@contextlib.contextmanager
def merchant_call(merchant: str, seconds: float, authorization: str = "") -> Iterator[CallContext]:
    """Bind a call context for `merchant` with its own budget of `seconds`.

    `authorization` is forwarded to services reached over gRPC; a background job has none of its
    own (merchant keys exist only as hashes), so over gRPC it must be given a caller's.
    """
    call = CallContext(merchant_id=merchant, deadline=time.monotonic() + seconds, authorization=authorization)
    token = bind_call(call)
    try:
        yield call
    finally:
        unbind_call(token)


@contextlib.contextmanager
def fresh_budget(seconds: float) -> Iterator[CallContext]:
    """Re-bind the current caller with a new budget: compensation must finish even when the
    caller's own deadline has passed (the caller stopped waiting, the money did not)."""
    caller = current_call()
    with merchant_call(caller.merchant_id, seconds, caller.authorization) as call:
        yield call
