"""Telemetry bootstrap: OpenTelemetry tracing (W3C propagation), JSON logs with trace ids, and the
Prometheus metrics of the RPC layer.

Exporters are off by default; `telemetry.otlp_endpoint` or `telemetry.console_exporter` turn them
on. Nothing here records request bodies, so card data never reaches spans or metric labels.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from pythonjsonlogger.json import JsonFormatter

from common.config import TelemetrySettings

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def build_tracer_provider(
    settings: TelemetrySettings, extra_exporters: list[SpanExporter] | None = None
) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    exporters: list[SpanExporter] = list(extra_exporters or [])
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True))
    if settings.console_exporter:
        # One compact JSON object per line: greppable and shippable as JSON lines, and encoded by
        # the C encoder (the SDK's default, indent=4, goes through the pure-Python one: ~1/5 of a
        # fully traced Authorize's CPU in the bench's tracing run).
        exporters.append(ConsoleSpanExporter(out=sys.stderr, formatter=_span_json_line))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _span_json_line(span) -> str:
    return span.to_json(indent=None) + "\n"


class _TraceIds(logging.Filter):
    """Adds the current trace and span ids to every record (empty outside a sampled span)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else ""
        record.span_id = format(context.span_id, "016x") if context.is_valid else ""
        return True


class _MeshJsonFormatter(JsonFormatter):
    """python-json-logger's formatter with the per-record work cut for the access log's rate (one
    line per RPC): fixed fields and extras in one pass instead of its generic merge (renames,
    reserved-name checks per attribute), the timestamp text built once per second. Same output:
    time, level, logger, message, trace_id, span_id, then the record's extras."""

    _FIXED = ("time", "level", "logger", "message", "trace_id", "span_id")

    def __init__(self) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}{trace_id}{span_id}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
        self._second = -1
        self._second_text = ""
        self._skip = frozenset(self._skip_fields) | {"asctime", "message", "trace_id", "span_id"}

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return self.default_msec_format % (self._second_text, record.msecs)

    def add_fields(self, log_data, record: logging.LogRecord, message_dict) -> None:
        attributes = record.__dict__
        log_data["time"] = attributes.get("asctime")
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = attributes.get("message")
        log_data["trace_id"] = attributes.get("trace_id")
        log_data["span_id"] = attributes.get("span_id")
        skip = self._skip
        for key, value in attributes.items():
            if key not in skip and not (hasattr(key, "startswith") and key.startswith("_")):
                log_data[key] = value
        log_data.update(message_dict)


def configure_logging(settings: TelemetrySettings, stream=None) -> None:
    """JSON lines on stderr (or `stream`), one object per record, with trace ids."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_MeshJsonFormatter())
    handler.addFilter(_TraceIds())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Thread and process names are not in our lines; looking them up is a third of the cost of a
    # LogRecord, paid on every access line.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class RpcMetrics:
    """Request count and latency per service, RPC and status code (bounded label sets)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "giftcard_rpc_requests", "RPCs handled", ["service", "rpc", "code"], registry=registry
        )
        self.latency = Histogram(
            "giftcard_rpc_duration_seconds", "RPC latency", ["service", "rpc"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )

    def observe(self, service: str, rpc: str, code: str, seconds: float) -> None:
        self.requests.labels(service, rpc, code).inc()
        self.latency.labels(service, rpc).observe(seconds)


# -- provider calls -----------------------------------------------------------------------------

# Every provider port operation (gateway/ports.py); anything else on a provider is passed through.
PROVIDER_OPERATIONS = frozenset({
    "balance", "place_hold", "capture_hold", "release_hold", "redeem", "credit", "reverse",
    "activate", "allocate", "issue_value", "cash_out", "exchange",
})


class ProviderMetrics:
    """Calls to providers (the native ledger or a vendor API) per provider and operation.

    `code` is the gRPC status name the call ended with (OK, FAILED_PRECONDITION, UNAVAILABLE...):
    business refusals and provider faults are told apart by code, and no label ever holds card
    data, so the series count is providers x operations x codes whatever the traffic.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "giftcard_provider_requests", "Provider calls", ["provider", "operation", "code"],
            registry=registry,
        )
        self.errors = Counter(
            "giftcard_provider_errors",
            "Provider calls that failed for a reason other than a business refusal "
            "(UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, ...)",
            ["provider", "operation", "code"], registry=registry,
        )
        self.latency = Histogram(
            "giftcard_provider_duration_seconds", "Provider call latency", ["provider", "operation"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        # 0 closed, 1 half-open, 2 open. Set by the vendor adapters' circuit breakers.
        self.breaker_state = Gauge(
            "giftcard_circuit_breaker_state", "Circuit breaker state per provider (0 closed, 1 half-open, 2 open)",
            ["provider"], registry=registry,
        )

    def set_breaker_state(self, provider: str, state: str) -> None:
        self.breaker_state.labels(provider).set(BREAKER_STATES[state])

    def observe(self, provider: str, operation: str, code: str, seconds: float) -> None:
        self.calls.labels(provider, operation, code).inc()
        self.latency.labels(provider, operation).observe(seconds)
        if code in PROVIDER_FAULT_CODES:
            self.errors.labels(provider, operation, code).inc()


BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
# Codes that say the provider (or the way to it) failed, as opposed to a refusal of the request.
PROVIDER_FAULT_CODES = frozenset({
    "UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "RESOURCE_EXHAUSTED", "CANCELLED",
    "DATA_LOSS",
})


class MeasuredProvider:
    """A provider port wrapped so every operation is counted, timed and traced.

    The span carries provider, operation, merchant, masked card and amount; never the card
    number or PIN (a `CardId` contributes only `.masked`). Attributes other than the port's
    operations (`name`, `capabilities`, ...) are the wrapped provider's own.
    """

    def __init__(self, provider, metrics: ProviderMetrics | None, tracer: trace.Tracer | None = None) -> None:
        self._provider = provider
        self._metrics = metrics
        self._tracer = tracer or trace.NoOpTracer()

    def __getattr__(self, name: str):
        target = getattr(self._provider, name)
        if name not in PROVIDER_OPERATIONS:
            return target
        measured = functools.partial(self._measured, name, target)
        setattr(self, name, measured)  # an operation's wrapper is built once, not on every call
        return measured

    @property
    def wrapped(self):
        return self._provider

    async def _measured(self, operation: str, target, *args, **kwargs):
        if _in_unsampled_trace():
            # Parent-based sampling drops this span for sure: skip building it (measured ~2% of
            # a GetBalance with tracing off); the metrics are still recorded.
            return await self._metered(operation, target, args, kwargs)
        provider = self._provider.name
        with self._tracer.start_as_current_span(
            f"provider {provider}.{operation}", kind=trace.SpanKind.INTERNAL,
        ) as span:
            if span.is_recording():
                span.set_attributes(_provider_span_attributes(provider, operation, args, kwargs))
            return await self._metered(operation, target, args, kwargs)

    async def _metered(self, operation: str, target, args, kwargs):
        started = time.perf_counter()
        code = "OK"
        try:
            return await target(*args, **kwargs)
        except BaseException as exc:
            code = _code_name(exc)
            raise
        finally:
            if self._metrics is not None:
                self._metrics.observe(self._provider.name, operation, code, time.perf_counter() - started)


def _in_unsampled_trace() -> bool:
    """True inside a trace that is not sampled: a child span would be a non-recording no-op
    (parent-based sampling). False inside a sampled one, and outside any trace (a root span
    is still up to the sampler)."""
    span = trace.get_current_span()
    return not span.is_recording() and span.get_span_context().is_valid


def _provider_span_attributes(provider: str, operation: str, args, kwargs) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {"giftcard.provider": provider, "giftcard.operation": operation}
    if args and isinstance(args[0], str):
        attributes["giftcard.merchant_id"] = args[0]  # every port operation takes the merchant first
    for value in (*args, *kwargs.values()):
        masked = getattr(value, "masked", None)  # CardId: only its masked form, never .value/.pin
        if isinstance(masked, str) and "giftcard.card.masked" not in attributes:
            attributes["giftcard.card.masked"] = masked
        minor = getattr(value, "amount_minor", None)  # Money
        if isinstance(minor, int) and "giftcard.amount_minor" not in attributes:
            attributes["giftcard.amount_minor"] = minor
            attributes["giftcard.currency"] = str(getattr(value, "currency", ""))
    return attributes


def _code_name(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if isinstance(code, grpc.StatusCode):
        return code.name
    if callable(code):  # grpc.RpcError
        try:
            value = code()
            if isinstance(value, grpc.StatusCode):
                return value.name
        except Exception:  # noqa: BLE001 - a broken error object must not break the metric
            pass
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "DEADLINE_EXCEEDED"
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"


# -- idempotency ------------------------------------------------------------------------------

class IdempotencyMetrics:
    """Replays and key conflicts per RPC; pass `on_event` to `IdempotencyStore(on_event=...)`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.replays = Counter(
            "giftcard_idempotency_replays", "Requests answered from a stored outcome", ["rpc"], registry=registry
        )
        self.conflicts = Counter(
            "giftcard_idempotency_conflicts", "request_id reused with a different request (IDEMPOTENCY_KEY_REUSED)",
            ["rpc"], registry=registry,
        )
        self.in_progress = Counter(
            "giftcard_idempotency_in_progress", "Duplicates refused while the first attempt ran (REQUEST_IN_PROGRESS)",
            ["rpc"], registry=registry,
        )

    def on_event(self, event: str, rpc: str) -> None:
        counter = {"replay": self.replays, "conflict": self.conflicts, "in_progress": self.in_progress}.get(str(event))
        if counter is not None:
            counter.labels(rpc).inc()


class SettlementMetrics:
    """The settlement service's scheduler: job runs, items finished, queue depths.

    Labels are fixed sets (job: batch | reversals | expiry | resolver; queue: captures | reversals;
    outcome: ok | error, or the item's end state), never merchants or ids, so the series count does
    not grow with traffic. Queue depth and the oldest unresolved intent's age are also exported
    through the scrape-time `giftcard_job_queue_depth` / `giftcard_oldest_unresolved_intent_age_seconds`
    families (service="settlement") from the values the jobs last measured.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "giftcard_settlement_job_runs", "Scheduler job runs", ["job", "outcome"], registry=registry,
        )
        self.items = Counter(
            "giftcard_settlement_items", "Work items finished or put back, by end state",
            ["queue", "outcome"], registry=registry,
        )
        self.depth = Gauge(
            "giftcard_settlement_queue_depth", "Items not yet final, over all merchants", ["queue"],
            registry=registry,
        )
        self.oldest_intent = Gauge(
            "giftcard_settlement_oldest_unresolved_intent_seconds",
            "Age of the oldest write-ahead intent with no recorded outcome", registry=registry,
        )

    def run(self, job: str, outcome: str) -> None:
        self.runs.labels(job, outcome).inc()

    def item(self, queue: str, outcome: str) -> None:
        self.items.labels(queue, outcome).inc()

    def backlog(self) -> list["JobBacklog"]:
        depth = sum(child._value.get() for child in (self.depth.labels(q) for q in ("captures", "reversals")))
        return [JobBacklog("settlement", int(depth), float(self.oldest_intent._value.get()))]


# -- state read at scrape time ----------------------------------------------------------------

@dataclass(frozen=True)
class OpenHolds:
    merchant: str
    currency: str
    count: int
    held_minor: int


@dataclass(frozen=True)
class JobBacklog:
    service: str
    depth: int
    oldest_age_seconds: float


class ScrapeCollector:
    """Gauges computed from Redis when Prometheus scrapes, not on the request path.

    `holds_source()` -> iterable of OpenHolds; `jobs_source()` -> iterable of JobBacklog. Sources
    are plain callables (run in the metrics server's thread) and may be added later by the
    services that own the state (`add_holds_source` / `add_jobs_source`). A result is cached for
    `cache_seconds` so several scrapers do not multiply the Redis work, and a failing source only
    loses its own series (logged) instead of the whole scrape.
    """

    def __init__(self, cache_seconds: float = 5.0) -> None:
        self._cache_seconds = cache_seconds
        self._holds_sources: list[Callable[[], Iterable[OpenHolds]]] = []
        self._jobs_sources: list[Callable[[], Iterable[JobBacklog]]] = []
        self._cached: tuple[float, list[OpenHolds], list[JobBacklog]] | None = None
        self._lock = threading.Lock()

    def add_holds_source(self, source: Callable[[], Iterable[OpenHolds]]) -> None:
        self._holds_sources.append(source)

    def add_jobs_source(self, source: Callable[[], Iterable[JobBacklog]]) -> None:
        self._jobs_sources.append(source)

    def describe(self):
        return list(self._families([], []))

    def collect(self):
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self._cache_seconds:
                self._cached = (now, _gather(self._holds_sources), _gather(self._jobs_sources))
            _, holds, jobs = self._cached
        yield from self._families(holds, jobs)

    @staticmethod
    def _families(holds: list[OpenHolds], jobs: list[JobBacklog]):
        count = GaugeMetricFamily("giftcard_open_holds", "Open (unexpired, not fully settled) holds", labels=["merchant"])
        held = GaugeMetricFamily(
            "giftcard_held_amount_minor", "Amount held by open holds, in minor units", labels=["merchant", "currency"]
        )
        per_merchant: dict[str, int] = {}
        for item in holds:
            per_merchant[item.merchant] = per_merchant.get(item.merchant, 0) + item.count
            held.add_metric([item.merchant, item.currency], item.held_minor)
        for merchant, value in sorted(per_merchant.items()):
            count.add_metric([merchant], value)
        depth = GaugeMetricFamily("giftcard_job_queue_depth", "Unresolved work items per service", labels=["service"])
        age = GaugeMetricFamily(
            "giftcard_oldest_unresolved_intent_age_seconds", "Age of the oldest unresolved intent", labels=["service"]
        )
        for job in jobs:
            depth.add_metric([job.service], job.depth)
            age.add_metric([job.service], job.oldest_age_seconds)
        return [count, held, depth, age]


def _gather(sources) -> list:
    items: list = []
    for source in sources:
        try:
            items.extend(source())
        except Exception:  # noqa: BLE001 - a scrape must not fail because one source did
            logging.getLogger("giftcard.metrics").warning("metrics source failed", exc_info=True)
    return items


class MeshMetrics:
    """Every metric of one process, on one registry."""

    def __init__(self, registry: CollectorRegistry, scrape_cache_seconds: float = 5.0) -> None:
        self.registry = registry
        self.rpc = RpcMetrics(registry)
        self.providers = ProviderMetrics(registry)
        self.idempotency = IdempotencyMetrics(registry)
        self.scrape = ScrapeCollector(scrape_cache_seconds)
        registry.register(self.scrape)


# -- access log -------------------------------------------------------------------------------

class AccessLog:
    """One JSON line per RPC on logger `giftcard.access` (INFO): merchant, rpc, code, latency,
    request_id when the request has one; trace and span ids come from the logging filter.

    Cheap when off: nothing is built unless the logger would emit the record. When on, the record
    is built and handed to the logger's handlers directly: `Logger.info` would also look up the
    caller's source line (a stack walk per RPC) for fields the JSON line does not carry.
    """

    def __init__(self, enabled: bool = True, logger: logging.Logger | None = None) -> None:
        self._enabled = enabled
        self._log = logger or logging.getLogger("giftcard.access")

    def record(self, service: str, rpc: str, code: str, seconds: float, merchant: str, request) -> None:
        if not self._enabled or not self._log.isEnabledFor(logging.INFO):
            return
        extra = {
            "service": service, "rpc": rpc, "code": code, "merchant": merchant,
            "latency_ms": round(seconds * 1000, 3),
        }
        request_id = getattr(request, "request_id", None)
        if isinstance(request_id, str) and request_id:
            extra["request_id"] = request_id
        log = self._log
        log.handle(log.makeRecord(log.name, logging.INFO, "", 0, "rpc", (), None, extra=extra))


def annotate_server_span(merchant: str) -> None:
    """Adds the authenticated merchant to the current (gRPC server) span, if it records."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("giftcard.merchant_id", merchant)


# Server-side statuses that mark a span as failed (as opentelemetry-instrumentation-grpc does):
# the server's own faults, not the caller's mistakes (INVALID_ARGUMENT, NOT_FOUND, ...).
_SERVER_ERROR_CODES = frozenset({
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
})
_PROPAGATION_HEADERS = frozenset({"traceparent", "tracestate", "baggage"})


class ServerSpans:
    """The SERVER span of each mesh RPC, started by the mesh interceptor (common/server.py).

    Same spans as opentelemetry-instrumentation-grpc's aio server interceptor (name = full method,
    kind SERVER, rpc.* attributes, W3C parent from the metadata, parent-based sampling), at a
    fraction of its per-call cost, which the profile of GetBalance showed at ~7% of the server's
    CPU with tracing off: here no wrapper around the servicer context, no second interceptor
    layer, and attributes are only built for a span that records. An unsampled call still gets
    a (non-recording) span with a trace id, so its log lines carry one and it is propagated.
    """

    def __init__(self, tracer_provider) -> None:
        self._tracer = tracer_provider.get_tracer("giftcard.grpc.server")

    def start(self, method: str, service: str, rpc: str, metadata, peer: Callable[[], str]):
        """Start and activate the span; returns (span, token) for `end`."""
        carrier = None
        for name, value in metadata or ():
            if name in _PROPAGATION_HEADERS:
                if carrier is None:
                    carrier = {}
                carrier[name] = value
        parent = propagate.extract(carrier) if carrier is not None else None
        span = self._tracer.start_span(method, context=parent, kind=trace.SpanKind.SERVER)
        if span.is_recording():
            attributes: dict[str, str | int] = {
                "rpc.system": "grpc", "rpc.grpc.status_code": 0, "rpc.method": rpc, "rpc.service": service,
            }
            for name, value in metadata or ():
                if name == "user-agent":
                    attributes["rpc.user_agent"] = value if isinstance(value, str) else value.decode(errors="replace")
            attributes.update(_peer_attributes(peer()))
            span.set_attributes(attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    @staticmethod
    def end(span, token, code: grpc.StatusCode, details: str = "") -> None:
        try:
            if span.is_recording():
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code in _SERVER_ERROR_CODES:
                    span.set_status(Status(StatusCode.ERROR, f"{code}:{details}"))
            span.end()
        finally:
            otel_context.detach(token)


def _peer_attributes(peer: str) -> dict[str, str]:
    """`ipv4:127.0.0.1:57284` / `ipv6:[::1]:57284` -> net.peer.ip / net.peer.port (unix: none)."""
    if not peer or peer.startswith("unix:"):
        return {}
    try:
        ip, port = peer.split(",")[0].split(":", 1)[1].rsplit(":", 1)
    except (IndexError, ValueError):
        return {}
    attributes = {"net.peer.ip": unquote(ip), "net.peer.port": port}
    if attributes["net.peer.ip"] in ("[::1]", "127.0.0.1"):
        attributes["net.peer.name"] = "localhost"
    return attributes


# -- client instrumentation -------------------------------------------------------------------

def instrument_redis(client, tracer_provider: TracerProvider) -> None:
    """Redis spans for one client. The instrumentation records only the command name with its
    arguments replaced by `?` (db.statement "EVALSHA ? ? ..."), so script ARGV never reaches a span;
    tests/observability asserts that.

    Inside an unsampled trace a command skips the instrumentation: its span would be dropped
    anyway (parent-based sampling), and formatting the arguments, naming the span and attaching
    a context cost ~5% of a GetBalance with tracing off (profile, bench/). Inside a sampled
    trace, or outside any (a root span, up to the sampler), it is traced as before."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor.instrument_client(client, tracer_provider=tracer_provider)
    traced = client.__dict__.get("execute_command")
    if traced is None:  # the instrumentation did not wrap this client's method: leave it
        return
    plain = type(client).execute_command.__get__(client)

    def execute_command(*args, **options):
        return (plain if _in_unsampled_trace() else traced)(*args, **options)

    client.execute_command = execute_command
    traced_pipeline = client.__dict__.get("pipeline")
    if traced_pipeline is not None:  # pipelines likewise (their span metadata is built eagerly)
        plain_pipeline = type(client).pipeline.__get__(client)

        def pipeline(*args, **options):
            return (plain_pipeline if _in_unsampled_trace() else traced_pipeline)(*args, **options)

        client.pipeline = pipeline


def instrument_http_client(client, tracer_provider: TracerProvider) -> None:
    """Client spans and W3C `traceparent` injection for one vendor `httpx` client.

    Only method, URL and status are recorded (no bodies, no headers), and the URL without its
    query string: some vendor APIs take card numbers as query parameters."""
    import httpx
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    if isinstance(client, httpx.AsyncClient):
        async def hook(span, request) -> None:
            _drop_url_query(span)
    else:
        def hook(span, request) -> None:
            _drop_url_query(span)
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=tracer_provider, request_hook=hook)


def _drop_url_query(span) -> None:
    if not span.is_recording() or span.attributes is None:
        return
    for attribute in ("url.full", "http.url"):
        value = span.attributes.get(attribute)
        if isinstance(value, str) and ("?" in value or "#" in value):
            span.set_attribute(attribute, value.split("?", 1)[0].split("#", 1)[0])
