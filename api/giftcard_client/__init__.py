"""A thin, typed client for the gift card mesh (installed with `giftcard-api`).

    import giftcard_client
    from giftcard.balance.v1 import balance_pb2

    async with giftcard_client.connect("127.0.0.1:50051", api_key) as mesh:
        reply = await mesh.balance.GetBalance(balance_pb2.GetBalanceRequest(...))

What it sets up, so every caller does not have to:

- `authorization: Bearer <api_key>` on every call;
- a default deadline (`deadline` seconds) on calls that do not pass `timeout=`;
- a gRPC service config retry policy: UNAVAILABLE and ABORTED (e.g. REQUEST_IN_PROGRESS) are
  retried with exponential backoff, at most 4 attempts. Retrying a mutating RPC is safe because
  it carries the same `request_id` (AIP-155): the mesh replays the first answer;
- `new_request_id()` for those request ids (one per logical operation, reused on retries).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc

from giftcard.authorization.v1 import authorization_pb2, authorization_pb2_grpc
from giftcard.balance.v1 import balance_pb2, balance_pb2_grpc
from giftcard.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from giftcard.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from giftcard.refund.v1 import refund_pb2, refund_pb2_grpc
from giftcard.settlement.v1 import settlement_pb2, settlement_pb2_grpc

if TYPE_CHECKING:
    from giftcard.authorization.v1.authorization_pb2_grpc import AuthorizationServiceAsyncStub
    from giftcard.balance.v1.balance_pb2_grpc import BalanceServiceAsyncStub
    from giftcard.fulfillment.v1.fulfillment_pb2_grpc import FulfillmentServiceAsyncStub
    from giftcard.gateway.v1.gateway_pb2_grpc import ProviderGatewayServiceAsyncStub
    from giftcard.refund.v1.refund_pb2_grpc import RefundServiceAsyncStub
    from giftcard.settlement.v1.settlement_pb2_grpc import SettlementServiceAsyncStub

__all__ = ["MeshClient", "MeshClientSync", "connect", "connect_sync", "new_request_id", "service_config"]

SERVICES: tuple[str, ...] = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (balance_pb2, "BalanceService"),
        (authorization_pb2, "AuthorizationService"),
        (fulfillment_pb2, "FulfillmentService"),
        (settlement_pb2, "SettlementService"),
        (refund_pb2, "RefundService"),
        (gateway_pb2, "ProviderGatewayService"),
    )
)
RETRYABLE_CODES = ("UNAVAILABLE", "ABORTED")


def new_request_id() -> str:
    """A fresh request_id (UUID4). Make one per logical operation and reuse it on every retry."""
    return str(uuid.uuid4())


def service_config(
    max_attempts: int = 4, initial_backoff: float = 0.1, max_backoff: float = 2.0, multiplier: float = 2.0,
) -> str:
    """The gRPC service config (JSON) with the mesh's retry policy for every mesh service."""
    return json.dumps({
        "methodConfig": [{
            "name": [{"service": service} for service in SERVICES],
            "retryPolicy": {
                "maxAttempts": max_attempts,
                "initialBackoff": f"{initial_backoff}s",
                "maxBackoff": f"{max_backoff}s",
                "backoffMultiplier": multiplier,
                "retryableStatusCodes": list(RETRYABLE_CODES),
            },
        }],
    })


def _options(retry: bool, extra: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [("grpc.enable_retries", 1 if retry else 0)]
    if retry:
        options.append(("grpc.service_config", service_config()))
    options.extend(extra)
    return options


class _Details(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


class _AsyncDefaults(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, metadata, deadline: float) -> None:
        self._metadata = metadata
        self._deadline = deadline

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        details = grpc.aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout if client_call_details.timeout is not None else self._deadline,
            _merge(client_call_details.metadata, self._metadata),
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


class _SyncDefaults(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, metadata, deadline: float) -> None:
        self._metadata = metadata
        self._deadline = deadline

    def intercept_unary_unary(self, continuation, client_call_details, request):
        details = _Details(
            client_call_details.method,
            client_call_details.timeout if client_call_details.timeout is not None else self._deadline,
            tuple(_merge(client_call_details.metadata, self._metadata)),
            client_call_details.credentials,
            getattr(client_call_details, "wait_for_ready", None),
            getattr(client_call_details, "compression", None),
        )
        return continuation(details, request)


def _merge(existing, defaults) -> grpc.aio.Metadata:
    merged = grpc.aio.Metadata(*(tuple(existing) if existing else ()))
    for name, value in defaults:
        if name not in merged:
            merged.add(name, value)
    return merged


def _auth_metadata(api_key: str) -> tuple[tuple[str, str], ...]:
    if not api_key:
        raise ValueError("api_key is required")
    return (("authorization", f"Bearer {api_key}"),)


class MeshClient:
    """Typed async stubs for every mesh service on one channel. Use as `async with`, or `close()`."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.balance: BalanceServiceAsyncStub = balance_pb2_grpc.BalanceServiceStub(channel)  # type: ignore[assignment]
        self.authorization: AuthorizationServiceAsyncStub = authorization_pb2_grpc.AuthorizationServiceStub(channel)  # type: ignore[assignment]
        self.fulfillment: FulfillmentServiceAsyncStub = fulfillment_pb2_grpc.FulfillmentServiceStub(channel)  # type: ignore[assignment]
        self.settlement: SettlementServiceAsyncStub = settlement_pb2_grpc.SettlementServiceStub(channel)  # type: ignore[assignment]
        self.refund: RefundServiceAsyncStub = refund_pb2_grpc.RefundServiceStub(channel)  # type: ignore[assignment]
        self.gateway: ProviderGatewayServiceAsyncStub = gateway_pb2_grpc.ProviderGatewayServiceStub(channel)  # type: ignore[assignment]

    new_request_id = staticmethod(new_request_id)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> MeshClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


class MeshClientSync:
    """Typed blocking stubs for every mesh service on one channel. Use as `with`, or `close()`."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.balance = balance_pb2_grpc.BalanceServiceStub(channel)
        self.authorization = authorization_pb2_grpc.AuthorizationServiceStub(channel)
        self.fulfillment = fulfillment_pb2_grpc.FulfillmentServiceStub(channel)
        self.settlement = settlement_pb2_grpc.SettlementServiceStub(channel)
        self.refund = refund_pb2_grpc.RefundServiceStub(channel)
        self.gateway = gateway_pb2_grpc.ProviderGatewayServiceStub(channel)

    new_request_id = staticmethod(new_request_id)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> MeshClientSync:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(
    target: str,
    api_key: str,
    *,
    deadline: float = 5.0,
    credentials: grpc.ChannelCredentials | None = None,
    retry: bool = True,
    options: Sequence[tuple[str, Any]] = (),
) -> MeshClient:
    """An async client for the mesh at `target` ("host:port"); TLS when `credentials` are given
    (e.g. `grpc.ssl_channel_credentials()`), plaintext otherwise."""
    interceptors = [_AsyncDefaults(_auth_metadata(api_key), deadline)]
    channel_options = _options(retry, options)
    if credentials is not None:
        channel = grpc.aio.secure_channel(target, credentials, options=channel_options, interceptors=interceptors)
    else:
        channel = grpc.aio.insecure_channel(target, options=channel_options, interceptors=interceptors)
    return MeshClient(channel)


def connect_sync(
    target: str,
    api_key: str,
    *,
    deadline: float = 5.0,
    credentials: grpc.ChannelCredentials | None = None,
    retry: bool = True,
    options: Sequence[tuple[str, Any]] = (),
) -> MeshClientSync:
    """As `connect`, with blocking stubs."""
    channel_options = _options(retry, options)
    if credentials is not None:
        channel = grpc.secure_channel(target, credentials, options=channel_options)
    else:
        channel = grpc.insecure_channel(target, options=channel_options)
    return MeshClientSync(grpc.intercept_channel(channel, _SyncDefaults(_auth_metadata(api_key), deadline)))
