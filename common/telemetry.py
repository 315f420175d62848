"""Telemetry bootstrap: OpenTelemetry tracing (W3C propagation), JSON logs with trace ids, and the
Prometheus metrics of the RPC layer.

Exporters are off by default; `telemetry.otlp_endpoint` or `telemetry.console_exporter` turn them
on. Nothing here records request bodies, so card data never reaches spans or metric labels.
"""

from __future__ import annotations

import logging
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from prometheus_client import CollectorRegistry, Counter, Histogram
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
        exporters.append(ConsoleSpanExporter(out=sys.stderr))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class _TraceIds(logging.Filter):
    """Adds the current trace and span ids to every record (empty outside a sampled span)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else ""
        record.span_id = format(context.span_id, "016x") if context.is_valid else ""
        return True


def configure_logging(settings: TelemetrySettings, stream=None) -> None:
    """JSON lines on stderr (or `stream`), one object per record, with trace ids."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}{trace_id}{span_id}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_TraceIds())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


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
