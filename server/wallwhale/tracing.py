"""OpenTelemetry traces, off unless WALLWHALE_OTLP_ENDPOINT names an OTLP/gRPC collector.

One trace follows a download: the caller's request at Envoy (its `traceparent` goes upstream), the
server's RPC span (grpc.aio instrumentation, which honours that header or a client's own), then the
job, which may run on another instance and much later: its row keeps the RPC's `traceparent`
(`Download.trace_parent`), and the worker continues the trace from it with a queue-wait span, the
job's span with the DepotDownloader run (its phases as span events) and the archive build inside,
and the state changes as events of the span that made them (the final one on the job's span).

The provider is this module's, not OpenTelemetry's global one: a process may run servers with and
without tracing (the tests do), and `shutdown()` turns it off again. While off, nothing here starts
a span or reads a header, and the log processor finds no span to name.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:  # the SDK, the exporter and the instrumentation are imported only when configured
    from opentelemetry.sdk.trace import TracerProvider

SERVICE_NAME = "wallwhale"
Span = trace.Span
NO_SPAN: Span = trace.INVALID_SPAN  # records nothing
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACEPARENT = "traceparent"


@dataclass
class _State:
    provider: TracerProvider
    tracer: trace.Tracer


_state: _State | None = None


def configure(
    endpoint: str, instance_id: str, *, sample_ratio: float = 1.0, export_delay_seconds: float = 1.0
) -> None:
    """Starts exporting spans to the collector at `endpoint` (http://host:4317 for plain h2c,
    https://... for TLS). Spans leave in batches from a thread of the SDK, never from a call.
    `sample_ratio`: the share of traces started here that are recorded; a caller's (or Envoy's)
    traceparent decides for the traces it continues."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    global _state
    shutdown()
    provider = TracerProvider(
        resource=Resource.create({"service.name": SERVICE_NAME, "service.instance.id": instance_id}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://")),
            schedule_delay_millis=export_delay_seconds * 1000,
        )
    )
    _state = _State(provider, provider.get_tracer("wallwhale"))


def enabled() -> bool:
    return _state is not None


def shutdown() -> None:
    """Sends what is left and turns tracing off."""
    global _state
    state, _state = _state, None
    if state is not None:
        state.provider.shutdown()


def server_interceptor() -> Any:
    """The grpc.aio server interceptor that gives every call its span (outermost: the call's log
    lines and audit row then see it), or None while tracing is off."""
    if _state is None:
        return None
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    # Envoy's health checks every second or two would be most of the spans, and tell nothing.
    not_health = filters.negate(filters.service_name("grpc.health.v1.Health"))
    return aio_server_interceptor(tracer_provider=_state.provider, filter_=not_health)  # type: ignore[no-untyped-call]


# --- what the rest of the server asks -------------------------------------------------------------


def trace_id() -> str:
    """The current trace's id (32 hex digits), or "" outside any span."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else ""


def traceparent() -> str | None:
    """The current span as a W3C traceparent header, for a job to continue the trace later."""
    if _state is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(_TRACEPARENT)


@dataclass(frozen=True)
class SpanEvent:
    """An event for a span, added later (core.after_commit adds it once its change is committed)."""

    span: trace.Span
    name: str
    attributes: dict[str, str | int | float | bool]

    def add(self) -> None:
        self.span.add_event(self.name, self.attributes)


def span_event(name: str, attributes: Mapping[str, str | int | float | bool]) -> SpanEvent | None:
    """An event for the current span, or None when no span records."""
    span = trace.get_current_span()
    return SpanEvent(span, name, dict(attributes)) if span.is_recording() else None


def add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: names the current trace and span in every log line made inside one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", trace.format_trace_id(context.trace_id))
        event_dict.setdefault("span_id", trace.format_span_id(context.span_id))
    return event_dict


# --- spans of a job ---------------------------------------------------------------------------------


class JobTrace:
    """The spans of one claimed job, children of the RPC that queued it (`traceparent` from its row).
    A job queued without a trace, or run while tracing is off, records nothing."""

    def __init__(self, parent: str | None, attributes: Mapping[str, str | int]):
        self._tracer = _state.tracer if _state is not None and parent else None
        self._parent = _PROPAGATOR.extract({_TRACEPARENT: parent}) if parent else None
        self._attributes = dict(attributes)

    def queue_wait(self, queued_since: datetime) -> None:
        """The time the job waited in the queue, from when it was (re)queued until this claim."""
        if self._tracer is None:
            return
        start = int(queued_since.timestamp() * 1_000_000_000)
        span = self._tracer.start_span(
            "queue wait", self._parent, attributes=self._attributes, start_time=min(start, time.time_ns())
        )
        span.end()

    @contextlib.contextmanager
    def job(self) -> Iterator[None]:
        """The job's span, current while the job runs (its log lines and state events land on it)."""
        if self._tracer is None:
            yield
            return
        with self._tracer.start_as_current_span("download job", self._parent, attributes=self._attributes):
            yield

    @contextlib.contextmanager
    def step(self, name: str, **attributes: str | int) -> Iterator[Span]:
        """A span inside the job's (the DepotDownloader run, the archive build)."""
        if self._tracer is None:
            yield NO_SPAN
            return
        with self._tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span
