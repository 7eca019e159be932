"""Traces: one trace from a REST call at Envoy through the server's RPC, the queue wait, the job's
DepotDownloader run and the archive build, exported over OTLP/gRPC to a receiver the test runs
(tests/support/otlp.py), with the real Envoy, the real server and the test DepotDownloader. The
client's traceparent is honoured; the trace id is in the call's log lines and its audit row.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

from sqlalchemy import select

from tests.support.envoy import http, proxy_socket, render_envoy_config, running_envoy
from tests.support.harness import Harness
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.server import server_log_to
from wallwhale import tracing
from wallwhale.app import WallWhaleServer
from wallwhale.db.models import AuditEvent, Download
from wallwhale.v1 import admin_pb2, download_pb2

WORKSHOP_ID = 2_950_000_001
CREATE = "/wallwhale.v1.DownloadService/CreateDownload"
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER


def one(spans: list[ReceivedSpan], name: str, service: str = tracing.SERVICE_NAME) -> ReceivedSpan:
    found = [span for span in spans if span.name == name and span.service == service]
    assert len(found) == 1, (name, found)
    return found[0]


async def audit_rows(server: WallWhaleServer, request_id: str, within: float = 15) -> list[AuditEvent]:
    """The audit rows of the call, once the batched writer has stored them."""
    deadline = time.monotonic() + within
    while True:
        async with server.sessions() as session:
            rows = list(await session.scalars(select(AuditEvent).where(AuditEvent.request_id == request_id)))
        if rows or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.1)


async def test_one_trace_from_envoy_to_the_archive(harness: Harness, tmp_path: Path) -> None:
    client_trace, client_span = secrets.token_hex(16), secrets.token_hex(8)
    request_id = f"traced-{secrets.token_hex(4)}"
    with OtlpReceiver() as receiver, server_log_to(tmp_path / "server.log") as log:
        server = await harness.start(grpc_socket=proxy_socket(), otlp_endpoint=receiver.endpoint)
        await harness.add_account("tracer", "pw-trace")
        harness.steam.add_item(WORKSHOP_ID)
        async with running_envoy(
            tmp_path / "envoy", [server.upstream], extra_args=["--otlp-endpoint", receiver.endpoint]
        ) as envoy:
            reply = await http(
                "POST",
                envoy.url("/v1/downloads"),
                json_body={"urlOrId": str(WORKSHOP_ID)},
                headers={
                    **dict(harness.admin),
                    "traceparent": f"00-{client_trace}-{client_span}-01",
                    "x-request-id": request_id,
                },
            )
            assert reply.status == 200, reply.body
            download_id = reply.json()["download"]["id"]
            done = await harness.wait_for(download_id, limit=60)
            assert done.state == download_pb2.DOWNLOAD_STATE_SUCCEEDED, done

            def complete(spans: list[ReceivedSpan]) -> bool:
                ours = [span for span in spans if span.trace_id == client_trace]
                names = {(span.service, span.name) for span in ours}
                wanted = {(tracing.SERVICE_NAME, "download job"), (tracing.SERVICE_NAME, CREATE)}
                return wanted <= names and any(span.service == "wallwhale-edge" for span in ours)

            # Envoy sends its spans every few seconds; the server's batch leaves within a second.
            spans = await receiver.wait_for(complete, within=45)
        audit = await audit_rows(server, request_id)
        listed = await harness.admin_api.ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(action="download.create"), metadata=harness.admin
        )
        async with server.sessions() as session:
            row = await session.get(Download, download_id)
        await server.stop(grace=0)  # while the receiver listens: the last spans leave

    trace = [span for span in spans if span.trace_id == client_trace]
    # Envoy's health checks (every half second here) make no spans.
    assert not [span for span in spans if span.name.startswith("/grpc.health.")]
    # The client's traceparent is the parent of Envoy's span; Envoy's is the parent of the RPC's.
    edge = [span for span in trace if span.service == "wallwhale-edge"]
    assert [span.parent_span_id for span in edge if span.parent_span_id not in {s.span_id for s in edge}] == [
        client_span
    ], edge
    rpc = one(trace, CREATE)
    assert rpc.kind == SERVER_KIND
    assert rpc.parent_span_id in {span.span_id for span in edge}, (rpc, edge)
    assert ("download.state", {"download.id": download_id}) not in rpc.events  # created, not moved
    # The job continues the trace from its row: queue wait and the job under the RPC, the run and
    # the archive under the job.
    queue_wait, job = one(trace, "queue wait"), one(trace, "download job")
    assert queue_wait.parent_span_id == rpc.span_id
    assert job.parent_span_id == rpc.span_id
    assert queue_wait.start_ns <= queue_wait.end_ns <= job.start_ns + 1_000_000_000
    run, archive = one(trace, "DepotDownloader run"), one(trace, "archive build")
    assert run.parent_span_id == job.span_id
    assert archive.parent_span_id == job.span_id
    assert run.attributes["outcome"] == "succeeded"
    assert run.end_ns <= archive.start_ns
    phases = run.event_names("phase")
    assert {"LOGGING_IN", "DOWNLOADING"} <= set(phases), phases
    assert archive.attributes["archive.size"] == done.archive.size_bytes
    # The state changes the job made are events of its span, the final one last.
    states = [attributes["state"] for name, attributes in job.events if name == "download.state"]
    assert states[-2:] == ["ARCHIVING", "SUCCEEDED"], job.events
    assert {span.attributes.get("download.id") for span in (queue_wait, job)} == {download_id}

    # Every log line of the call names its trace; so does its audit row.
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    of_the_call = [line for line in lines if line.get("request_id") == request_id]
    assert any(line.get("event") == "rpc" for line in of_the_call), of_the_call
    assert {line.get("trace_id") for line in of_the_call} == {client_trace}, of_the_call
    assert [event.trace_id for event in audit] == [client_trace]
    assert [e.trace_id for e in listed.audit_events if e.request_id == request_id] == [client_trace]
    assert row is not None
    assert row.trace_parent == f"00-{client_trace}-{rpc.span_id}-01"


async def test_without_an_endpoint_nothing_is_traced(harness: Harness, tmp_path: Path) -> None:
    """A caller's traceparent goes nowhere: no span, no trace id on the job or in the audit."""
    server = await harness.start()
    assert not tracing.enabled()
    await harness.add_account("untraced", "pw-untraced")
    harness.steam.add_item(WORKSHOP_ID)
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    response = await harness.downloads.CreateDownload(
        download_pb2.CreateDownloadRequest(url_or_id=str(WORKSHOP_ID)),
        metadata=(*harness.admin, ("traceparent", traceparent), ("x-request-id", "untraced-create")),
    )
    done = await harness.wait_for(response.download.id, limit=60)
    assert done.state == download_pb2.DOWNLOAD_STATE_SUCCEEDED
    audit = await audit_rows(server, "untraced-create")
    async with server.sessions() as session:
        row = await session.get(Download, response.download.id)
    assert row is not None
    assert row.trace_parent is None
    assert [event.trace_id for event in audit] == [""]
    # And Envoy gets no tracer, nor a cluster for a collector.
    config = render_envoy_config(tmp_path / "envoy", [server.port], port=1, admin_port=2).read_text()
    assert "opentelemetry" not in config
    assert "otlp_collector" not in config
