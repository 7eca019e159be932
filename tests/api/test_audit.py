"""The audit trail: every denial and every mutating call leaves a record; reads do not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc import aio

from tests.support.database import add_key, audit_events, prepare_database, wait_for_audit_events
from tests.support.server import Metadata, make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.core.audit import AuditRecord, AuditWriter, action_name
from wallwhale.db.engine import create_engine, session_factory
from wallwhale.v1 import download_pb2, download_pb2_grpc, status_pb2, status_pb2_grpc


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("/wallwhale.v1.DownloadService/CreateDownload", "download.create"),
        ("/wallwhale.v1.AdminService/RevokeApiKey", "api_key.revoke"),
        ("/wallwhale.v1.AuthService/Login", "auth.login"),
        ("/wallwhale.v1.StatusService/GetStatus", "status.get"),
        ("/wallwhale.v1.AdminService/SubmitSteamGuardCode", "steam_guard_code.submit"),
    ],
)
def test_action_names(method: str, expected: str) -> None:
    assert action_name(method) == expected


async def test_a_call_without_credentials_is_audited_as_denied(
    channel: aio.Channel, migrated_database_url: str
) -> None:
    with pytest.raises(grpc.RpcError):
        await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
            status_pb2.GetStatusRequest(),
            metadata=(("x-request-id", "audit-anon-1"), ("user-agent", "probe/1.0")),
        )
    [event] = await wait_for_audit_events(migrated_database_url, "audit-anon-1")
    assert (event.action, event.outcome, event.status_code) == ("status.get", "denied", "UNAUTHENTICATED")
    assert (event.actor_kind, event.actor_id) == ("anonymous", None)
    assert event.client_address == "127.0.0.1"
    assert event.user_agent.startswith("grpc-python")  # what the test's client library sends
    assert event.details == {"reason": "CREDENTIALS_MISSING"}


async def test_a_missing_scope_is_audited_with_the_key_and_without_its_secret(
    channel: aio.Channel, migrated_database_url: str
) -> None:
    key = await add_key(migrated_database_url, ["download:read"])
    with pytest.raises(grpc.RpcError):
        await download_pb2_grpc.DownloadServiceStub(channel).CancelDownload(
            download_pb2.CancelDownloadRequest(id="job-1"),
            metadata=(("x-api-key", key), ("x-request-id", "audit-scope-1")),
        )
    [event] = await wait_for_audit_events(migrated_database_url, "audit-scope-1")
    assert (event.action, event.outcome, event.status_code) == (
        "download.cancel",
        "denied",
        "PERMISSION_DENIED",
    )
    assert event.actor_kind == "api_key"
    assert event.actor_id
    assert event.actor_display.startswith(key[:9])
    assert event.resource == "downloads/job-1"
    assert key not in repr(event.__dict__)


async def test_mutating_calls_are_audited_and_reads_are_not(
    channel: aio.Channel, migrated_database_url: str, admin: Metadata
) -> None:
    stub = download_pb2_grpc.DownloadServiceStub(channel)
    with pytest.raises(grpc.RpcError):
        await stub.RetryDownload(
            download_pb2.RetryDownloadRequest(id="job-2"),
            metadata=(*admin, ("x-request-id", "audit-write-1")),
        )
    [event] = await wait_for_audit_events(migrated_database_url, "audit-write-1")
    assert (event.action, event.outcome, event.status_code) == ("download.retry", "failure", "NOT_FOUND")
    assert event.resource == "downloads/job-2"

    await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
        status_pb2.GetStatusRequest(), metadata=(*admin, ("x-request-id", "audit-read-1"))
    )
    await asyncio.sleep(0.6)  # longer than the flush interval
    assert await audit_events(migrated_database_url, "audit-read-1") == []


async def test_a_graceful_stop_stores_every_queued_event(migrated_database_url: str, tmp_path: Path) -> None:
    # A flush interval far longer than the test: only the stop itself can store the events.
    server = WallWhaleServer(
        make_settings(migrated_database_url, tmp_path, audit_flush_interval_seconds=3600)
    )
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = status_pb2_grpc.StatusServiceStub(channel)
        for n in range(20):
            with pytest.raises(grpc.RpcError):
                await stub.GetStatus(
                    status_pb2.GetStatusRequest(), metadata=(("x-request-id", f"audit-stop-{n}"),)
                )
    assert await audit_events(migrated_database_url, "audit-stop-0") == []
    await server.stop(grace=1)
    for n in range(20):
        assert len(await audit_events(migrated_database_url, f"audit-stop-{n}")) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_row_the_database_refuses_is_logged_and_does_not_block_the_trail(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await prepare_database(database_url)
    engine = create_engine(database_url)
    writer = AuditWriter(session_factory(engine), flush_interval=3600)
    try:
        good = [AuditRecord("test.ok", "success", "OK", request_id=f"audit-row-{n}") for n in range(3)]
        # Bypasses record()'s clean-up on purpose: PostgreSQL refuses NUL in text, forever.
        writer._pending[:] = [
            good[0],
            AuditRecord("test.bad", "failure", "OK", user_agent="x\x00y"),
            *good[1:],
        ]
        assert await writer.flush()
        writer.record(AuditRecord("test.after", "success", "OK", request_id="audit-row-after"))
        await writer.close()
    finally:
        await engine.dispose()
    for request_id in ("audit-row-0", "audit-row-1", "audit-row-2", "audit-row-after"):
        assert len(await audit_events(database_url, request_id)) == 1
    assert "audit event refused by the database" in capsys.readouterr().out


async def test_repeated_identical_denials_are_one_row_per_window_with_a_count(
    database_url: str, tmp_path: Path
) -> None:
    await prepare_database(database_url)
    settings = make_settings(
        database_url, tmp_path, audit_flush_interval_seconds=0.1, audit_denial_window_seconds=1.5
    )
    server = WallWhaleServer(settings)
    await server.start()

    async def refused(request_id: str, *metadata: tuple[str, str]) -> None:
        with pytest.raises(grpc.RpcError):
            await stub.GetStatus(
                status_pb2.GetStatusRequest(), metadata=(("x-request-id", request_id), *metadata)
            )

    try:
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = status_pb2_grpc.StatusServiceStub(channel)
            for n in range(12):
                await refused(f"agg-{n}")
            await refused("agg-other", ("x-api-key", "ww_not_a_key"))  # another denial: its own row
            # The first is stored as it came, the repeats are not (yet).
            [first] = await wait_for_audit_events(database_url, "agg-0")
            assert first.details == {"reason": "CREDENTIALS_MISSING"}
            [other] = await wait_for_audit_events(database_url, "agg-other")
            assert other.details["reason"] != "CREDENTIALS_MISSING"
            for n in range(1, 12):
                assert await audit_events(database_url, f"agg-{n}") == []
            # The window ends: one row for the eleven repeats, naming the first.
            [summary] = await wait_for_audit_events(database_url, "agg-11")
            assert (summary.action, summary.outcome, summary.status_code) == (
                "status.get",
                "denied",
                "UNAUTHENTICATED",
            )
            assert summary.client_address == first.client_address == "127.0.0.1"
            assert summary.details["repeated"] == 11
            assert summary.details["first_event_id"] == first.id
            assert summary.details["reason"] == "CREDENTIALS_MISSING"
            assert summary.event_time >= first.event_time
            # After the window a denial is a first occurrence again; a stop stores an open window.
            for n in range(3):
                await refused(f"agg-next-{n}")
            await wait_for_audit_events(database_url, "agg-next-0")
    finally:
        await server.stop(grace=1)
    [stored] = await audit_events(database_url, "agg-next-2")
    assert stored.details["repeated"] == 2
    assert await audit_events(database_url, "agg-next-1") == []
