"""Builds and runs the mesh: every service in one process (all-in-one, the default) or a chosen
subset, each depending on the others through one client interface: a direct in-process call when
the other service runs here, a gRPC stub to `endpoints.<name>` when it runs elsewhere."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CollectorRegistry, start_http_server

from common.auth import DEV_API_KEY, DEV_MERCHANT_ID, ApiKeyAuthenticator, ApiKeyStore, key_digest
from common.config import MerchantSettings, Settings
from common.idempotency import IdempotencyStore
from common.limits import MeshLimits
from common.redis_client import create_redis
from common.sealing import Sealer
from common.server import MeshInterceptor, MeshServer, peer_credentials
from common.service_client import GrpcClient, InProcessClient
from common.telemetry import (
    AccessLog, MeasuredProvider, MeshMetrics, ServerSpans, build_tracer_provider, instrument_redis,
)
from gateway.limits import LimitedProvider
from gateway.providers import ProviderFactory
from gateway.routing import ProviderRouter
from gateway.servicer import GatewayServicer
from mesh.admin_registry import RuntimeMerchants, RuntimeRouter
from mesh.admin_sources import NativeOpenHolds, create_sync_redis
from mesh.demo import seed_demo_cards
from mesh.services import NOT_YET_IMPLEMENTED, SPECS
from services.balance.logic import BalanceLogic
from services.balance.servicer import BalanceServicer

log = logging.getLogger("giftcard.mesh")

ALL_SERVICES: tuple[str, ...] = tuple(SPECS)


def with_dev_merchant(settings: Settings) -> Settings:
    """Dev mode accepts the demo merchant with its well-known key (README); never otherwise."""
    if settings.security.dev_mode and DEV_MERCHANT_ID not in settings.merchants:
        settings.merchants[DEV_MERCHANT_ID] = MerchantSettings(api_key_sha256=[key_digest(DEV_API_KEY)])
    return settings


class MeshRuntime:
    def __init__(
        self, settings: Settings, services: Sequence[str] = ALL_SERVICES,
        span_exporters: list[SpanExporter] | None = None,
    ) -> None:
        unknown = set(services) - set(SPECS)
        if unknown:
            raise ValueError(f"unknown services: {sorted(unknown)}")
        self.settings = with_dev_merchant(settings)
        self.services = [name for name in SPECS if name in services]
        self.tracer_provider = build_tracer_provider(settings.telemetry, span_exporters)
        self.registry = CollectorRegistry()
        self.telemetry = MeshMetrics(self.registry, settings.metrics.scrape_cache_seconds)
        self.metrics = self.telemetry.rpc
        self.redis = create_redis(settings.redis)
        instrument_redis(self.redis, self.tracer_provider)
        self.idempotency = IdempotencyStore(
            self.redis, ttl_seconds=settings.idempotency.ttl_seconds,
            lease_seconds=settings.idempotency.lease_seconds, fingerprint_key=settings.card_hash_key,
            on_event=self.telemetry.idempotency.on_event,
        )
        self.key_store = ApiKeyStore(self.redis)
        self.limits = MeshLimits(self.redis, settings.limits, settings.card_hash_key)
        self.runtime_merchants = RuntimeMerchants(self.settings.merchants)
        self._scrape_redis = None
        self.sealer = Sealer(settings.card_hash_key)
        self.providers = ProviderFactory(
            self.redis, settings, provider_metrics=self.telemetry.providers, tracer_provider=self.tracer_provider,
        )
        self._channels: list[grpc.aio.Channel] = []
        self._servicers: dict[str, object] = {}
        self._metrics_server = None
        # Background schedulers of the services served here (settlement), started with the server.
        self.schedulers: list = []
        for name in self.services:
            self._servicers[name] = self._build(name)
        self.server = MeshServer(
            settings.grpc,
            # Server spans are started by the mesh interceptor itself (ServerSpans: the same spans
            # as opentelemetry-instrumentation-grpc's server interceptor, cheaper per call).
            interceptors=[
                MeshInterceptor(
                    ApiKeyAuthenticator(
                        {m: s.api_key_sha256 for m, s in self.settings.merchants.items()}, self.key_store,
                        cache_seconds=settings.security.api_key_cache_seconds,
                        on_runtime_merchant=self.runtime_merchants.learn,
                        internal_token=self.internal_token,
                    ),
                    self.metrics, settings.grpc.default_deadline_seconds,
                    AccessLog(settings.telemetry.access_log), limits=self.limits,
                    spans=ServerSpans(self.tracer_provider),
                ),
            ],
            registrations=[
                (lambda server, n=name: SPECS[n].add_to_server(self._servicers[n], server))
                for name in self.services
            ],
            service_names=[SPECS[name].full_name for name in self.services],
        )

    @property
    def internal_token(self) -> str | None:
        token = self.settings.security.internal_token
        return token.get_secret_value() if token is not None else None

    @property
    def port(self) -> int:
        return self.server.port

    def client(self, name: str):
        """How this process reaches service `name`: in-process if it runs here, else over gRPC."""
        if name in self._servicers:
            return InProcessClient(self._servicers[name])
        endpoint = self.settings.endpoints.get(name)
        if not endpoint:
            raise ValueError(f"service {name} is not served here and endpoints.{name} is not configured")
        interceptors = aio_client_interceptors(tracer_provider=self.tracer_provider)
        tls = self.settings.grpc.tls
        channel = (
            grpc.aio.insecure_channel(endpoint, interceptors=interceptors) if tls is None
            else grpc.aio.secure_channel(endpoint, peer_credentials(tls), interceptors=interceptors)
        )
        self._channels.append(channel)
        return GrpcClient(channel, SPECS[name].stub, self.internal_token)

    def _build(self, name: str) -> object:
        if name == "gateway":
            return GatewayServicer(self._gateway_router())
        if name == "balance":
            return BalanceServicer(BalanceLogic(self.client("gateway")))
        if name == "authorization":
            from services.authorization.server import build_authorization

            return build_authorization(self)
        if name == "fulfillment":
            from services.fulfillment.server import build_fulfillment

            return build_fulfillment(self)
        if name == "refund":
            from services.refund.server import build_refund

            return build_refund(self)
        if name == "settlement":
            from services.settlement.server import build_settlement

            servicer, scheduler = build_settlement(self)
            self.schedulers.append(scheduler)
            return servicer
        return NOT_YET_IMPLEMENTED[name]()

    def _gateway_router(self) -> RuntimeRouter:
        """Routes to providers wrapped for metrics and spans; knows runtime-added merchants too."""
        tracer = self.tracer_provider.get_tracer("giftcard.gateway")

        def create(merchant_id, profile):
            provider = MeasuredProvider(self.providers.create(merchant_id, profile), self.telemetry.providers, tracer)
            return LimitedProvider(provider, self.limits) if self.limits.limits_cards else provider

        # Open holds are read from Redis at scrape time (only then: the client connects lazily),
        # by the process serving the gateway, so a series is exported once per mesh.
        self._scrape_redis = create_sync_redis(self.settings.redis)
        self.telemetry.scrape.add_holds_source(NativeOpenHolds(self._scrape_redis))
        return RuntimeRouter(ProviderRouter(self.settings.merchants, create), self.runtime_merchants, create)

    async def start(self) -> None:
        if "gateway" in self.services and self.settings.security.dev_mode:
            await seed_demo_cards(self.providers.native_ledger, self.settings.demo)
        await self.server.start()
        if self.settings.metrics.enabled:
            self._metrics_server, _ = start_http_server(
                self.settings.metrics.port, self.settings.metrics.host, registry=self.registry
            )
        if self.settings.settlement.scheduler_enabled:
            for scheduler in self.schedulers:
                scheduler.start()
        log.info("serving", extra={"services": self.services, "port": self.port})

    async def stop(self, grace: float | None = None) -> None:
        for scheduler in self.schedulers:
            await scheduler.stop()
        await self.server.stop(grace)
        await self.idempotency.drain()
        for channel in self._channels:
            await channel.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        if self._scrape_redis is not None:
            self._scrape_redis.close()
        await self.providers.aclose()
        await self.redis.aclose()
        self.tracer_provider.shutdown()
