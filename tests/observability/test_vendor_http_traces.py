"""Vendor HTTP calls: a client span under the caller's span, W3C `traceparent` sent to the vendor,
and no query string (where some vendors put card numbers) in span attributes."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from common.telemetry import instrument_http_client

CARD = "6035710000000001"


@pytest.fixture
def vendor():
    """A real HTTP server on localhost that records the traceparent header it receives."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            seen.append(self.headers.get("traceparent"))
            body = b'{"balance": "10.00"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


async def test_vendor_call_is_a_child_span_and_carries_traceparent(vendor):
    base_url, seen = vendor
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    async with httpx.AsyncClient(base_url=base_url) as client:
        instrument_http_client(client, provider)
        with tracer.start_as_current_span("provider paytronix.balance") as parent:
            reply = await client.get("/balance", params={"cardNumber": CARD})
    assert reply.status_code == 200
    [http_span] = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert http_span.parent.span_id == parent.get_span_context().span_id
    assert http_span.context.trace_id == parent.get_span_context().trace_id
    trace_id = format(parent.get_span_context().trace_id, "032x")
    [header] = seen
    version, sent_trace, sent_parent, flags = header.split("-")
    assert (version, sent_trace, sent_parent) == ("00", trace_id, format(http_span.context.span_id, "016x"))
    assert int(flags, 16) & 1  # sampled
    assert http_span.attributes.get("http.response.status_code", http_span.attributes.get("http.status_code")) == 200
    for value in http_span.attributes.values():
        assert CARD not in str(value)
    url = http_span.attributes.get("url.full", http_span.attributes.get("http.url"))
    assert url == f"{base_url}/balance"
