"""On SQLite, an authenticated read takes no write lock: it is answered while a writer holds it.

Found by bench/read_throughput.py: the API-key look-up of every call began with BEGIN IMMEDIATE, so
reads queued behind every write, and under load they failed after the busy timeout with the raw
"database is locked" error.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import pytest
from grpc import aio

from tests.support.database import prepare_database
from tests.support.server import make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.v1 import download_pb2, download_pb2_grpc


@pytest.fixture
def database_file(tmp_path: Path) -> Path:
    return tmp_path / "wallwhale.sqlite3"


async def test_an_authenticated_read_does_not_wait_for_the_write_lock(
    database_file: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{database_file}"
    first = await prepare_database(url)
    server = WallWhaleServer(make_settings(url, tmp_path / "data"))
    await server.start()
    # Another connection holds SQLite's write lock, as a long write transaction would.
    writer = sqlite3.connect(database_file, isolation_level=None, timeout=0)
    try:
        writer.execute("BEGIN IMMEDIATE")
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            with pytest.raises(grpc.RpcError) as raised:
                # Within the server's 5 s busy timeout, a look-up that wanted the lock would still be
                # waiting: the deadline tells the two apart without timing anything.
                await download_pb2_grpc.DownloadServiceStub(channel).GetDownload(
                    download_pb2.GetDownloadRequest(id="01jd3x5k8q2m7n4p6r9s0t1v2w"),
                    metadata=(("x-api-key", first.api_key),),
                    timeout=3,
                )
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND, raised.value.details()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        await server.stop(grace=0)
