"""Server bootstrap shared by every service: grpc.aio server, the mesh interceptor (auth, errors,
deadlines, metrics, logs), gRPC health, server reflection, graceful SIGTERM drain.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Sequence

import grpc
import redis.exceptions
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from common.auth import ApiKeyAuthenticator
from common.config import GrpcSettings, GrpcTlsSettings
from common.context import CallContext, bind_call, unbind_call
from common.errors import MeshError
from common.limits import MeshLimits
from common.telemetry import AccessLog, RpcMetrics, ServerSpans, annotate_server_span

log = logging.getLogger("giftcard.rpc")

_UNDECODABLE = object()

# Only the mesh's own APIs need a merchant key; health and reflection stay open for probes/grpcurl.
PROTECTED_PREFIX = "/giftcard."


def _split_method(full_method: str) -> tuple[str, str]:
    service, _, rpc = full_method.rpartition("/")
    return service.lstrip("/"), rpc


class MeshInterceptor(grpc.aio.ServerInterceptor):
    """The one place where a call is authenticated, bounded by its deadline, traced, measured,
    logged, and where `MeshError`s become `google.rpc.Status` with ErrorInfo details.

    grpc.aio asks every interceptor for a handler on every call; the wrapped handler of a method
    never changes, so it is built once per method and reused (the profile of GetBalance showed
    the per-call handler and closure building, and a second interceptor layer for tracing, among
    the largest costs of the server stack)."""

    def __init__(
        self, authenticator: ApiKeyAuthenticator, metrics: RpcMetrics | None, default_deadline: float,
        access_log: AccessLog | None = None, limits: MeshLimits | None = None,
        spans: ServerSpans | None = None,
    ) -> None:
        self._authenticator = authenticator
        # Per-merchant call rate (common/limits.py); None or off = no Redis call on the hot path.
        self._limits = limits if limits is not None and limits.limits_merchant_calls else None
        self._metrics = metrics
        self._default_deadline = default_deadline
        self._access_log = access_log
        self._spans = spans
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        try:
            return self._handlers[method]
        except KeyError:
            pass
        handler = await continuation(handler_call_details)
        if handler is None or not method.startswith(PROTECTED_PREFIX) or handler.unary_unary is None:
            return handler  # not cached: health, reflection, unknown methods stay as served
        wrapped = self._wrap(method, handler)
        self._handlers[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        behaviour = handler.unary_unary
        deserialize = handler.request_deserializer
        service, rpc = _split_method(method)
        authenticator, metrics, access_log, spans = self._authenticator, self._metrics, self._access_log, self._spans

        def tolerant_deserializer(data: bytes):
            # A body that is not a valid message (e.g. bad UTF-8 in a string) becomes a clean
            # INVALID_ARGUMENT below instead of grpc's UNKNOWN with parser internals.
            try:
                return deserialize(data) if deserialize else data
            except DecodeError:
                return _UNDECODABLE

        async def guarded(request, context: grpc.aio.ServicerContext):
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            details = ""
            merchant_id = ""
            metadata = context.invocation_metadata()
            span = token = None
            if spans is not None:
                span, token = spans.start(method, service, rpc, metadata, context.peer)
            try:
                merchant_id = await authenticator.authenticate_async(metadata)
                if span is None:
                    annotate_server_span(merchant_id)  # a server span started by another interceptor
                elif span.is_recording():
                    span.set_attribute("giftcard.merchant_id", merchant_id)
                if self._limits is not None:
                    await self._limits.admit_merchant_call(merchant_id, service)
                if request is _UNDECODABLE:
                    raise MeshError(
                        grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST",
                        "request is not a valid message (bad encoding or invalid UTF-8 in a string field)",
                    )
                remaining = context.time_remaining()
                if remaining is None or remaining > 1e9:
                    remaining = self._default_deadline
                if remaining <= 0:
                    raise MeshError(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", "deadline already expired")
                call = CallContext(
                    merchant_id=merchant_id,
                    deadline=time.monotonic() + remaining,
                    authorization=_authorization(metadata),
                )
                call_token = bind_call(call)
                try:
                    async with asyncio.timeout(remaining):
                        return await behaviour(request, context)
                finally:
                    unbind_call(call_token)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # every failure leaves as a clean google.rpc.Status
                error = _as_mesh_error(exc, method)
                code, details = error.code, error.message
                status = rpc_status.to_status(error.to_status())
                await context.abort(status.code, status.details, status.trailing_metadata)
            finally:
                elapsed = time.perf_counter() - started
                if metrics is not None:
                    metrics.observe(service, rpc, code.name, elapsed)
                if access_log is not None:
                    access_log.record(service, rpc, code.name, elapsed, merchant_id, request)
                if span is not None:
                    spans.end(span, token, code, details)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=tolerant_deserializer,
            response_serializer=handler.response_serializer,
        )


def _as_mesh_error(exc: Exception, method: str) -> MeshError:
    if isinstance(exc, MeshError):
        return exc
    if isinstance(exc, TimeoutError):
        return MeshError(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", "deadline exceeded")
    if isinstance(exc, NotImplementedError):
        return MeshError(grpc.StatusCode.UNIMPLEMENTED, "NOT_IMPLEMENTED", "this RPC is not implemented yet")
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        # Redis down or restarting (LOADING is a ConnectionError): the caller retries with the same
        # request_id; idempotency and the intents make that safe (tests/chaos/test_redis_restart.py).
        log.warning("state store unavailable", extra={"rpc": method, "error": type(exc).__name__})
        return MeshError(grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE", "the state store is unavailable; retry",
                         retryable=True)
    # The last line of defence: never crash, never leak details (they could hold request data).
    log.exception("unhandled error", extra={"rpc": method})
    return MeshError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error", retryable=True)


def _authorization(metadata) -> str:
    for name, value in metadata or ():
        if name.lower() == "authorization":
            return value if isinstance(value, str) else value.decode(errors="replace")
    return ""


def server_options(settings: GrpcSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", settings.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_ms),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 1),
    ]


def server_credentials(tls: GrpcTlsSettings) -> grpc.ServerCredentials:
    """TLS from PEM files; with a client CA and `require_client_cert`, mutual TLS."""
    with open(tls.key_file, "rb") as key, open(tls.cert_file, "rb") as cert:
        pair = (key.read(), cert.read())
    client_ca = None
    if tls.client_ca_file:
        with open(tls.client_ca_file, "rb") as ca:
            client_ca = ca.read()
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=tls.require_client_cert,
    )


def peer_credentials(tls: GrpcTlsSettings) -> grpc.ChannelCredentials:
    """How one service of the mesh calls another over TLS: verify the peer against `peer_ca_file`
    (or `client_ca_file`) and present this service's own certificate (for peers requiring mTLS)."""
    ca_file = tls.peer_ca_file or tls.client_ca_file
    with open(tls.key_file, "rb") as key, open(tls.cert_file, "rb") as cert:
        private_key, chain = key.read(), cert.read()
    root = None
    if ca_file:
        with open(ca_file, "rb") as ca:
            root = ca.read()
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=private_key, certificate_chain=chain)


class MeshServer:
    """A grpc.aio server with health and reflection, serving the given services."""

    def __init__(
        self,
        settings: GrpcSettings,
        interceptors: Sequence[grpc.aio.ServerInterceptor],
        registrations: Sequence[Callable[[grpc.aio.Server], None]],
        service_names: Sequence[str],
    ) -> None:
        self.settings = settings
        self.server = grpc.aio.server(interceptors=list(interceptors), options=server_options(settings))
        for register in registrations:
            register(self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = list(service_names)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        address = f"{settings.host}:{settings.port}"
        if settings.tls is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, server_credentials(settings.tls))
        if self.port == 0:
            raise RuntimeError(f"cannot bind {settings.host}:{settings.port}")

    async def start(self) -> None:
        await self.server.start()
        for name in [*self.service_names, ""]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: report NOT_SERVING, refuse new calls, let in-flight calls finish within grace."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.shutdown_grace_seconds if grace is None else grace)


async def run_until_signalled(servers: Sequence[MeshServer], on_stop: Callable[[], object] | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain every server and return (exit code 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining in-flight calls")
    await asyncio.gather(*(server.stop() for server in servers))
    if on_stop is not None:
        result = on_stop()
        if asyncio.iscoroutine(result):
            await result
