"""The running server over a real socket, on SQLite and PostgreSQL: health, status, errors, metadata."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import func, select

from tests.support.database import PostgresDatabases
from tests.support.server import Metadata, make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.db import migrate
from wallwhale.db.engine import create_engine
from wallwhale.db.models import Download, DownloadState
from wallwhale.v1 import (
    download_pb2,
    download_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_is_serving_for_the_server_and_each_service(channel: aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "wallwhale.v1.DownloadService", "wallwhale.v1.StatusService"):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == SERVING, service
    with pytest.raises(grpc.RpcError) as raised:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_follows_the_database(postgres: PostgresDatabases, tmp_path: Path) -> None:
    url = postgres.create()
    await asyncio.to_thread(migrate.upgrade, url)
    server = WallWhaleServer(make_settings(url, tmp_path, health_check_interval_seconds=0.1))
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == SERVING
            await asyncio.to_thread(postgres.drop, url)  # the database goes away under the server
            update = await asyncio.wait_for(watch.read(), timeout=10)
            assert update.status == NOT_SERVING
            watch.cancel()
    finally:
        await server.stop(grace=0)


async def _count_queued(url: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return int(
                await connection.scalar(
                    select(func.count()).select_from(Download).where(Download.state == DownloadState.QUEUED)
                )
                or 0
            )
    finally:
        await engine.dispose()


async def test_status_reports_database_downloader_and_storage(
    channel: aio.Channel, migrated_database_url: str, admin: Metadata
) -> None:
    response = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
        status_pb2.GetStatusRequest(), metadata=admin
    )
    assert response.database.ok, response.database.error
    assert response.database.backend == migrated_database_url.split("+")[0]
    assert response.database.schema_revision == await asyncio.to_thread(
        migrate.current_revision, migrated_database_url
    )
    assert response.downloader.available, response.downloader.error
    assert response.downloader.version == "3.4.0+c553ef4d60c00a4f5fd16c9fe017f569001589ff"
    assert response.downloader.runtime.startswith(".NET 9")
    assert response.storage.writable
    assert 0 < response.storage.free_bytes <= response.storage.total_bytes
    assert response.queue.queued == await _count_queued(migrated_database_url)
    assert response.version
    assert response.uptime.ToNanoseconds() > 0


async def test_status_says_why_the_downloader_is_unavailable(
    migrated_database_url: str, tmp_path: Path, admin: Metadata
) -> None:
    missing = tmp_path / "nowhere" / "DepotDownloader"
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'cannot execute binary file' >&2\nexit 126\n")
    broken.chmod(0o755)
    for path, expected in ((missing, "not found"), (broken, "exited 126")):
        server = WallWhaleServer(make_settings(migrated_database_url, tmp_path, depotdownloader_path=path))
        await server.start()
        try:
            async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                response = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                    status_pb2.GetStatusRequest(), metadata=admin
                )
        finally:
            await server.stop(grace=0)
        assert not response.downloader.available
        assert expected in response.downloader.error
        assert response.database.ok


async def test_request_id_is_echoed_or_generated(channel: aio.Channel, admin: Metadata) -> None:
    stub = status_pb2_grpc.StatusServiceStub(channel)
    call = stub.GetStatus(
        status_pb2.GetStatusRequest(), metadata=(*admin, ("x-request-id", "client-chose-this"))
    )
    await call
    assert ("x-request-id", "client-chose-this") in tuple(await call.initial_metadata())

    call = stub.GetStatus(status_pb2.GetStatusRequest(), metadata=admin)
    await call
    generated = dict(await call.initial_metadata())["x-request-id"]
    assert len(generated) == 24

    # On failure the id travels in the trailers; an id too long for a log line is replaced.
    failing = download_pb2_grpc.DownloadServiceStub(channel).GetDownload(
        download_pb2.GetDownloadRequest(id="x"), metadata=(*admin, ("x-request-id", "x" * 200))
    )
    with pytest.raises(grpc.RpcError):
        await failing
    trailing = dict(await failing.trailing_metadata())
    assert len(trailing["x-request-id"]) == 24


async def test_reflection_lists_every_service(channel: aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():  # type: ignore[no-untyped-def]
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for response in stub.ServerReflectionInfo(requests()):
        names = {service.name for service in response.list_services_response.service}
    assert {
        "wallwhale.v1.DownloadService",
        "wallwhale.v1.AdminService",
        "wallwhale.v1.AuthService",
        "wallwhale.v1.StatusService",
        "grpc.health.v1.Health",
    } <= names


async def test_metrics_count_calls_by_method_and_code(
    server: WallWhaleServer, channel: aio.Channel, admin: Metadata
) -> None:
    stub = download_pb2_grpc.DownloadServiceStub(channel)
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            await stub.DeleteDownload(download_pb2.DeleteDownloadRequest(id="x"), metadata=admin)
    assert server.metrics_server is not None
    url = f"http://127.0.0.1:{server.metrics_server.port}/metrics"
    text = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())).decode()
    line = next(
        line
        for line in text.splitlines()
        if line.startswith("wallwhale_rpc_requests_total{")
        and 'method="/wallwhale.v1.DownloadService/DeleteDownload"' in line
        and 'code="NOT_FOUND"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) >= 3
    assert "process_resident_memory_bytes" in text


async def test_graceful_stop_refuses_new_calls_and_reports_not_serving(
    migrated_database_url: str, tmp_path: Path
) -> None:
    server = WallWhaleServer(make_settings(migrated_database_url, tmp_path))
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == SERVING
        stopping = asyncio.create_task(server.stop(grace=1))
        assert (await asyncio.wait_for(watch.read(), timeout=5)).status == NOT_SERVING
        await stopping
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.RpcError) as raised:
            await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                status_pb2.GetStatusRequest(), timeout=2
            )
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
