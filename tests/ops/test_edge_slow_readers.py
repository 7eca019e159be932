"""Slow readers through Envoy (issue 15 item 1): clients that start an archive download and stop
reading must not delay anybody else's calls through the same Envoy.

A real server with the test DepotDownloader, a large archive (stored, incompressible), the real
Envoy. Several clients ask for the archive over REST (and one over gRPC) and then stop reading
their sockets; while they hang, another key's REST and gRPC calls through Envoy must each answer
within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from grpc import aio

from tests.support.envoy import Envoy, http, proxy_socket, running_envoy
from tests.support.harness import Harness, harness_for
from wallwhale.config import to_async_url
from wallwhale.v1 import download_pb2, download_pb2_grpc, status_pb2, status_pb2_grpc

pytestmark = pytest.mark.slow

BIG_ITEM = 2831239001
ARCHIVE_MB = 48
STALLED_READERS = 4
# Seconds an archive stream may move nothing before Envoy resets it (60 s in production).
ARCHIVE_IDLE = 4


@pytest_asyncio.fixture
async def big_archive(tmp_path: Path) -> AsyncIterator[tuple[Harness, Envoy, str]]:
    url = to_async_url(f"sqlite:///{tmp_path / 'slow.sqlite3'}")
    async for harness in harness_for(url, tmp_path):
        server = await harness.start(grpc_socket=proxy_socket())
        await harness.add_account("slow_reader", "pw-slow")
        # .mp4 is stored, not deflated: the archive is as large as the file.
        harness.steam.add_item(BIG_ITEM, files={"scene.mp4": ARCHIVE_MB * 1024 * 1024})
        download = await harness.create(str(BIG_ITEM))
        done = await harness.wait_for(download.id, limit=120)
        assert done.state == download_pb2.DOWNLOAD_STATE_SUCCEEDED, done
        async with running_envoy(
            tmp_path / "envoy", [server.upstream], extra_args=["--archive-idle-timeout", str(ARCHIVE_IDLE)]
        ) as envoy:
            yield harness, envoy, download.id


@contextlib.contextmanager
def stalled_rest_readers(envoy: Envoy, path: str, key: str, count: int) -> Iterator[list[socket.socket]]:
    """`count` HTTP/1.1 clients that ask for `path` and never read the reply (small receive
    buffers, so the bytes pile up in Envoy, not in the kernel)."""
    sockets = []
    try:
        for _ in range(count):
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect(("127.0.0.1", envoy.port))
            client.sendall(f"GET {path} HTTP/1.1\r\nhost: wallwhale\r\nx-api-key: {key}\r\n\r\n".encode())
            sockets.append(client)
        yield sockets
    finally:
        for client in sockets:
            client.close()


async def stalled_grpc_reader(envoy: Envoy, download_id: str, key: str) -> AsyncIterator[aio.Channel]:
    """A gRPC client through Envoy that takes the first chunk of the archive and reads no more."""
    channel = aio.insecure_channel(envoy.grpc_target)
    call = download_pb2_grpc.DownloadServiceStub(channel).FetchArchive(
        download_pb2.FetchArchiveRequest(id=download_id), metadata=(("x-api-key", key),)
    )
    await call.read()
    yield channel
    call.cancel()
    await channel.close()


async def _archive_streams_open(envoy: Envoy) -> int:
    for line in (
        await envoy.admin("/stats?filter=^cluster.wallwhale_archives.upstream_rq_active$")
    ).splitlines():
        return int(line.rsplit(":", 1)[1])
    raise AssertionError("no upstream_rq_active stat for the archive cluster")


async def test_stalled_archive_readers_do_not_delay_other_callers(
    big_archive: tuple[Harness, Envoy, str],
) -> None:
    harness, envoy, download_id = big_archive
    admin_key = dict(harness.admin)["x-api-key"]
    other = dict(await harness.add_key(["download:read"]))
    path = f"/v1/downloads/{download_id}/archive"
    grpc_reader = stalled_grpc_reader(envoy, download_id, admin_key)
    channel = aio.insecure_channel(envoy.grpc_target)
    try:
        with stalled_rest_readers(envoy, path, admin_key, STALLED_READERS):
            await anext(grpc_reader)
            await asyncio.sleep(2)  # every buffer on the way fills up
            downloads = download_pb2_grpc.DownloadServiceStub(channel)
            status = status_pb2_grpc.StatusServiceStub(channel)
            for _ in range(6):  # calls spread over both of Envoy's workers and its connections
                started = time.monotonic()
                reply = await http(
                    "GET", envoy.url(f"/v1/downloads/{download_id}"), headers=other, socket_timeout=1
                )
                assert reply.status == 200, reply
                await downloads.GetDownload(
                    download_pb2.GetDownloadRequest(id=download_id), metadata=tuple(other.items()), timeout=1
                )
                await status.GetStatus(
                    status_pb2.GetStatusRequest(), metadata=tuple(other.items()), timeout=1
                )
                assert time.monotonic() - started < 1.5
            # Another key's archive keeps flowing too (the first MiB, as a resumed download asks).
            started = time.monotonic()
            part = await http(
                "GET", envoy.url(path), headers={**other, "range": "bytes=0-1048575"}, socket_timeout=1
            )
            assert part.status == 206, part
            assert len(part.body) == 1048576
            assert time.monotonic() - started < 1
            # The stalled streams move nothing: Envoy resets them after the archive idle timeout.
            assert await _archive_streams_open(envoy) >= STALLED_READERS
            deadline = time.monotonic() + ARCHIVE_IDLE + 5
            while await _archive_streams_open(envoy) > 0:
                assert time.monotonic() < deadline, "stalled archive streams were not reset"
                await asyncio.sleep(0.2)
    finally:
        await channel.close()
        with contextlib.suppress(StopAsyncIteration):
            await anext(grpc_reader)
