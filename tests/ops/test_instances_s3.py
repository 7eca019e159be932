"""Instances on separate hosts (issue 19): three servers with three data directories of their own (no
shared storage folder), one PostgreSQL and one bucket (rclone serve s3), behind the real Envoy.

A download is built by whichever instance claims it, uploaded, and its local zip removed; every
instance serves it from the bucket, over gRPC and REST, byte for byte the same."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from tests.support.envoy import Envoy, http, proxy_socket, running_envoy
from tests.support.harness import Harness, rpc_error, unzip
from tests.support.s3 import S3Server
from tests.support.server import error_info
from wallwhale.app import WallWhaleServer
from wallwhale.v1 import download_pb2, download_pb2_grpc, status_pb2, status_pb2_grpc

D = download_pb2
ITEM = 2831290000
pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


@contextlib.asynccontextmanager
async def three_hosts(
    harness: Harness, s3: S3Server, *per_instance: dict[str, Any], **common: Any
) -> AsyncIterator[tuple[Envoy, list[WallWhaleServer]]]:
    """Instances A, B, C, each with its own data directory, sharing the database and the bucket
    (and the key that seals Steam passwords, which every host of one deployment needs)."""
    own = list(per_instance) or [{}, {}, {}]
    secret = base64.b64encode(b"k" * 32).decode()
    servers = [
        await harness.start(
            data_dir=harness.data_dir.parent / f"host-{'abc'[n]}",
            grpc_socket=proxy_socket(),  # Envoy's way in, whose x-forwarded-for is believed
            secret_key=secret,
            **s3.settings(),
            **common,
            **settings,
        )
        for n, settings in enumerate(own)
    ]
    async with running_envoy(harness.data_dir.parent / "envoy", [s.upstream for s in servers]) as envoy:
        yield envoy, servers


def local_zips(servers: list[WallWhaleServer]) -> list[Path]:
    return [path for server in servers for path in server.storage.archive_root.glob("*.zip*")]


async def fetch_grpc(channel: aio.Channel, metadata: Any, download_id: str, offset: int = 0) -> bytes:
    call = download_pb2_grpc.DownloadServiceStub(channel).FetchArchive(
        D.FetchArchiveRequest(id=download_id, offset=offset), metadata=metadata
    )
    return b"".join([chunk.data async for chunk in call])


async def built_on(harness: Harness, servers: list[WallWhaleServer], workshop_id: int) -> int:
    """Which instance ran DepotDownloader for the item (its -dir is under that host's storage)."""
    for run in harness.steam.runs():
        argv = run.get("argv", [])
        if "-pubfile" in argv and argv[argv.index("-pubfile") + 1] == str(workshop_id):
            target = argv[argv.index("-dir") + 1]
            return next(n for n, s in enumerate(servers) if target.startswith(str(s.storage.root)))
    raise AssertionError(f"no run of {workshop_id}")


async def test_an_archive_built_on_one_host_is_served_by_every_host(harness: Harness, s3: S3Server) -> None:
    files = {"scene.pkg": os.urandom(300_000), "preview.jpg": os.urandom(50_000), "project.json": b"{}" * 999}
    harness.steam.add_item(ITEM, files=files)
    # Only A runs jobs; B and C only serve.
    async with three_hosts(
        harness,
        s3,
        {"max_concurrent_downloads": 2},
        {"max_concurrent_downloads": 0},
        {"max_concurrent_downloads": 0},
    ) as (envoy, servers):
        await harness.add_account("ann_s3", "pw-ann")
        download = await harness.create(str(ITEM))
        done = await harness.wait_until(download.id, lambda d: d.state == D.DOWNLOAD_STATE_SUCCEEDED, 30)
        assert await built_on(harness, servers, ITEM) == 0
        assert s3.keys() == [f"{s3.prefix}/archives/{download.id}.zip"]
        assert local_zips(servers) == []  # uploaded, then removed from A's disk
        stored = s3.object_path(f"archives/{download.id}.zip").read_bytes()
        assert hashlib.sha256(stored).hexdigest() == done.archive.sha256
        assert unzip(stored) == files

        # gRPC, straight to each instance (B and C never had the file) and through Envoy.
        for channel in harness.channels:
            assert await fetch_grpc(channel, harness.admin, download.id) == stored
        async with aio.insecure_channel(f"127.0.0.1:{envoy.port}") as edge:
            for _ in range(3):
                assert await fetch_grpc(edge, harness.admin, download.id) == stored
            assert await fetch_grpc(edge, harness.admin, download.id, offset=12345) == stored[12345:]

        # REST through Envoy: three calls, round robin over the three instances; Range resumes.
        headers = dict(harness.admin)
        served = set()
        for _ in range(3):
            reply = await http("GET", envoy.url(f"/v1/downloads/{download.id}/archive"), headers=headers)
            assert reply.status == 200
            assert reply.body == stored
            assert reply.headers["x-archive-sha256"] == done.archive.sha256
            served.add(reply.headers.get("x-envoy-upstream-host", ""))
        resumed = await http(
            "GET",
            envoy.url(f"/v1/downloads/{download.id}/archive"),
            headers={**headers, "range": f"bytes={len(stored) - 1000}-"},
        )
        assert resumed.status == 206
        assert resumed.body == stored[-1000:]
        size = len(stored)
        assert resumed.headers["content-range"] == f"bytes {size - 1000}-{size - 1}/{size}"

        # The direct URL, asked over REST: the bytes come from the store, not through Envoy.
        answer = await http("GET", envoy.url(f"/v1/downloads/{download.id}/archive:url"), headers=headers)
        assert answer.status == 200, answer.body
        offered = answer.json()
        assert offered["sha256"] == done.archive.sha256
        assert int(offered["sizeBytes"]) == size
        assert offered["url"].startswith(s3.endpoint)
        assert (await http("GET", offered["url"])).body == stored


async def test_a_batch_zip_spans_items_built_on_different_hosts(harness: Harness, s3: S3Server) -> None:
    items = [ITEM + 1, ITEM + 2]
    for n, item in enumerate(items):
        harness.steam.add_item(
            item, files={f"file{n}.bin": os.urandom(100_000)}, behaviour={"file_delay": 100}
        )
    # A and B run one job each at a time: both items run at once, one on each.
    async with three_hosts(
        harness,
        s3,
        {"max_concurrent_downloads": 1},
        {"max_concurrent_downloads": 1},
        {"max_concurrent_downloads": 0},
    ) as (envoy, servers):
        await harness.add_account("ann_s3", "pw-ann")
        await harness.add_account("bob_s3", "pw-bob")
        batch = (
            await harness.downloads.CreateBatch(
                D.CreateBatchRequest(urls_or_ids=[str(i) for i in items]), metadata=harness.admin
            )
        ).batch
        deadline = time.monotonic() + 60
        while (
            await harness.downloads.GetBatch(D.GetBatchRequest(id=batch.id), metadata=harness.admin)
        ).batch.state != D.BATCH_STATE_SUCCEEDED:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert {await built_on(harness, servers, item) for item in items} == {0, 1}
        assert local_zips(servers) == []
        reply = await http("GET", envoy.url(f"/v1/batches/{batch.id}/archive"), headers=dict(harness.admin))
        assert reply.status == 200
        contents = unzip(reply.body)
        assert sorted(contents) == [f"{ITEM + 1}/file0.bin", f"{ITEM + 2}/file1.bin"]
        call = download_pb2_grpc.DownloadServiceStub(harness.channels[2]).FetchBatchArchive(
            D.FetchBatchArchiveRequest(id=batch.id, offset=100), metadata=harness.admin
        )
        assert b"".join([chunk.data async for chunk in call]) == reply.body[100:]


async def test_retention_removes_the_object_and_fetch_says_why(harness: Harness, s3: S3Server) -> None:
    harness.steam.add_item(ITEM + 3, files={"a.bin": 5000})
    async with three_hosts(
        harness,
        s3,
        {"archive_max_age_hours": 2 / 3600, "retention_interval_seconds": 0.5},
        {"max_concurrent_downloads": 0},
        {"max_concurrent_downloads": 0},
    ) as (_envoy, _servers):
        await harness.add_account("ann_s3", "pw-ann")
        download = await harness.create(str(ITEM + 3))
        await harness.wait_until(download.id, lambda d: d.state == D.DOWNLOAD_STATE_SUCCEEDED, 30)
        assert len(s3.keys()) == 1
        await harness.wait_until(download.id, lambda d: d.archive.state == D.ARCHIVE_STATE_EXPIRED, 30)
        deadline = time.monotonic() + 10
        while s3.keys():
            assert time.monotonic() < deadline, s3.keys()
            await asyncio.sleep(0.1)
        error = await rpc_error(fetch_grpc(harness.channels[1], harness.admin, download.id))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "retention" in (error.details() or "")


async def test_the_upload_waits_for_an_unreachable_store_and_status_says_so(
    harness: Harness, s3: S3Server, capfd: pytest.CaptureFixture[str]
) -> None:
    harness.steam.add_item(ITEM + 4, files={"a.bin": os.urandom(20_000)})
    async with three_hosts(
        harness, s3, {}, {"max_concurrent_downloads": 0}, {"max_concurrent_downloads": 0}
    ) as (_envoy, servers):
        await harness.add_account("ann_s3", "pw-ann")
        s3.stop()
        download = await harness.create(str(ITEM + 4))
        await harness.wait_until(download.id, lambda d: d.state == D.DOWNLOAD_STATE_ARCHIVING, 30)
        status = status_pb2_grpc.StatusServiceStub(harness.channels[0])
        report = await status.GetStatus(status_pb2.GetStatusRequest(), metadata=harness.admin)
        assert not report.storage.writable
        assert "object store is unreachable" in report.storage.error
        await asyncio.sleep(3)  # several upload attempts: the download neither fails nor finishes
        waiting = await harness.get(download.id)
        assert waiting.state == D.DOWNLOAD_STATE_ARCHIVING
        s3.start()
        done = await harness.wait_until(download.id, lambda d: d.state == D.DOWNLOAD_STATE_SUCCEEDED, 60)
        assert done.attempt == waiting.attempt
        assert (
            await fetch_grpc(harness.channels[2], harness.admin, download.id)
            == s3.object_path(f"archives/{download.id}.zip").read_bytes()
        )
        report = await status.GetStatus(status_pb2.GetStatusRequest(), metadata=harness.admin)
        assert report.storage.writable
        assert local_zips(servers) == []
        history = [event.log_line.line for event in await harness.watch(download.id)]
        assert any("upload to the object store failed" in line for line in history), history
    # Credentials appear nowhere: not in logs, the status or errors.
    output = "".join(capfd.readouterr())
    assert "upload" in output
    assert s3.secret_key not in output
    assert s3.access_key not in output
    assert s3.secret_key not in str(report)


async def test_fetch_errors_name_no_credentials(harness: Harness, s3: S3Server) -> None:
    harness.steam.add_item(ITEM + 5, files={"a.bin": 5000})
    async with three_hosts(harness, s3) as (_envoy, _servers):
        await harness.add_account("ann_s3", "pw-ann")
        download = await harness.create(str(ITEM + 5))
        await harness.wait_until(download.id, lambda d: d.state == D.DOWNLOAD_STATE_SUCCEEDED, 30)
        s3.stop()
        error = await rpc_error(fetch_grpc(harness.channels[1], harness.admin, download.id))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "object store is unreachable" in (error.details() or "")
        assert error_info(error).reason == "UNAVAILABLE"
        s3.start()
        s3.object_path(f"archives/{download.id}.zip").unlink()
        error = await rpc_error(fetch_grpc(harness.channels[1], harness.admin, download.id))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "missing from storage" in (error.details() or "")
        for text in (error.details() or "", str(error.debug_error_string())):
            assert s3.secret_key not in text
            assert s3.access_key not in text


async def test_a_share_link_over_rest_redirects_to_the_object_store(harness: Harness, s3: S3Server) -> None:
    harness.steam.add_item(ITEM + 6, files={"a.bin": os.urandom(40_000)})
    async with three_hosts(harness, s3, {}, *[{"max_concurrent_downloads": 0}] * 2) as (envoy, _servers):
        await harness.add_account("ann_s3", "pw-ann")
        download = await harness.create(str(ITEM + 6))
        done = await harness.wait_until(download.id, lambda d: d.state == D.DOWNLOAD_STATE_SUCCEEDED, 30)
        stored = s3.object_path(f"archives/{download.id}.zip").read_bytes()
        headers = dict(harness.admin)
        made = await http(
            "POST",
            envoy.url(f"/v1/downloads/{download.id}/links"),
            json_body={"ttl": "600s"},
            headers=headers,
        )
        assert made.status == 200, made.body
        link = made.json()["urlPath"]
        for _ in range(3):  # whichever instance answers
            reply = await http("GET", envoy.url(link))
            assert reply.status == 302, reply.body
            location = reply.headers["location"]
            assert location.startswith(s3.endpoint)
            assert "x-wallwhale-location" not in reply.headers
            assert s3.secret_key not in location
            direct = await http("GET", location, headers={"range": "bytes=100-"})
            assert direct.body == stored[100:]
            assert done.archive.filename in direct.headers["content-disposition"]
        # gRPC callers of the same link get the bytes through the server.
        call = download_pb2_grpc.DownloadServiceStub(harness.channels[1]).FetchArchiveLink(
            D.FetchArchiveLinkRequest(token=link.rsplit("/", 1)[1])
        )
        assert b"".join([chunk.data async for chunk in call]) == stored
