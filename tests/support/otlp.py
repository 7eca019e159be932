"""An OTLP/gRPC receiver: the collector's TraceService (opentelemetry-proto's generated service) on a
real grpc server on a free port, keeping every span it is sent. Envoy and the server export to it as
they would to a collector; no collector binary is needed.

    with OtlpReceiver() as receiver:          # receiver.endpoint: http://127.0.0.1:PORT
        ...
        spans = await receiver.wait_for(lambda spans: ..., within=30)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the resource's service.name
    name: str
    trace_id: str  # hex, as in a traceparent header
    span_id: str
    parent_span_id: str  # "" for a root span
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]

    def event_names(self, attribute: str) -> list[Any]:
        return [attributes.get(attribute) for _, attributes in self.events]


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, receiver: OtlpReceiver):
        self._receiver = receiver

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        if not self._receiver.keep:
            self._receiver.count(
                sum(len(scope.spans) for spans in request.resource_spans for scope in spans.scope_spans)
            )
            return trace_service_pb2.ExportTraceServiceResponse()
        received = []
        for resource_spans in request.resource_spans:
            service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes=_attributes(span.attributes),
                            events=[(event.name, _attributes(event.attributes)) for event in span.events],
                        )
                    )
        self._receiver.add(received)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """Runs in its own threads: exporters (the SDK's batch thread, Envoy) block on it, never the
    test's event loop."""

    def __init__(self, *, keep: bool = True) -> None:
        """`keep=False`: only count the spans (a bench's receiver, which must cost little)."""
        self.keep = keep
        self.received = 0
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self._spans += spans
            self.received += len(spans)

    def count(self, spans: int) -> None:
        with self._lock:
            self.received += spans

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    async def wait_for(
        self, done: Callable[[list[ReceivedSpan]], bool], within: float = 30
    ) -> list[ReceivedSpan]:
        """The spans received, once `done(spans)` holds (AssertionError with them after `within` s)."""
        deadline = time.monotonic() + within
        while not done(spans := self.spans):
            if time.monotonic() > deadline:
                listing = "\n".join(
                    f"{s.service} {s.name} {s.trace_id} {s.span_id}<-{s.parent_span_id}" for s in spans
                )
                listing = "\n".join(line for line in listing.splitlines() if "Health" not in line)
                raise AssertionError(f"the spans received never matched:\n{listing}")
            await asyncio.sleep(0.1)
        return spans

    def __enter__(self) -> OtlpReceiver:
        self._server.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._server.stop(grace=None)
