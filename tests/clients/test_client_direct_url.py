"""The Python client fetches archives by their presigned URL when the server keeps them in an object
store (GetArchiveUrl), checks them like FetchArchive's, and falls back to FetchArchive otherwise."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx
import pytest

from tests.support.client import key_of
from tests.support.harness import Harness
from tests.support.s3 import S3Server
from wallwhale import metrics
from wallwhale_client import AsyncClient, IntegrityError
from wallwhale_client.v1 import download_pb2

ITEM = 2831299000
D = download_pb2
pytestmark = pytest.mark.slow


def served_bytes() -> float:
    """Archive bytes this process's servers streamed (FetchArchive and friends)."""
    return float(metrics.ARCHIVE_SERVED_BYTES._value.get())


async def test_download_takes_the_direct_url_and_checks_it(
    harness: Harness, s3: S3Server, tmp_path: Path
) -> None:
    server = await harness.start(**s3.settings(), archive_url_seconds=60)
    await harness.add_account("alice_we", "correct horse")
    harness.steam.add_item(ITEM, files={"scene.pkg": 400_000, "project.json": b"{}"})
    before = served_bytes()
    async with AsyncClient(f"127.0.0.1:{server.port}", api_key=key_of(harness)) as client:
        path = await client.download(str(ITEM), tmp_path / "out")
        job = (await client.list_downloads(limit=1))[0]
        direct = await client.archive_url(job.id)
    assert served_bytes() == before  # not one archive byte passed through the server
    stored = s3.object_path(f"archives/{job.id}.zip").read_bytes()
    assert path.read_bytes() == stored
    assert path.name == job.archive.filename
    assert direct is not None
    assert direct.sha256 == hashlib.sha256(stored).hexdigest() == job.archive.sha256
    assert direct.size_bytes == len(stored)
    assert s3.secret_key not in direct.url
    reply = await asyncio.to_thread(httpx.get, direct.url)
    assert reply.content == stored
    assert reply.headers["content-disposition"] == f'attachment; filename="{job.archive.filename}"'


async def test_a_damaged_object_is_refused_by_url_and_by_fetch(
    harness: Harness, s3: S3Server, tmp_path: Path
) -> None:
    server = await harness.start(**s3.settings())
    await harness.add_account("alice_we", "correct horse")
    harness.steam.add_item(ITEM, files={"scene.pkg": 100_000})
    async with AsyncClient(f"127.0.0.1:{server.port}", api_key=key_of(harness)) as client:
        path = await client.download(str(ITEM), tmp_path / "first")
        job = (await client.list_downloads(limit=1))[0]
        damaged = bytearray(path.read_bytes())
        damaged[1000] ^= 0xFF  # same size, other bytes: only the sha256 tells
        s3.object_path(f"archives/{job.id}.zip").write_bytes(damaged)
        before = served_bytes()
        with pytest.raises(IntegrityError, match="sha256"):
            await client.save_archive(job.id, tmp_path / "second")
    assert served_bytes() > before  # the direct URL's bytes were refused, then FetchArchive tried
    assert list((tmp_path / "second").iterdir()) == []


async def test_without_an_object_store_there_is_no_url_and_fetch_serves(
    harness: Harness, tmp_path: Path
) -> None:
    server = await harness.start()
    await harness.add_account("alice_we", "correct horse")
    harness.steam.add_item(ITEM, files={"scene.pkg": 50_000})
    before = served_bytes()
    async with AsyncClient(f"127.0.0.1:{server.port}", api_key=key_of(harness)) as client:
        path = await client.download(str(ITEM), tmp_path / "out")
        job = (await client.list_downloads(limit=1))[0]
        assert await client.archive_url(job.id) is None
    assert served_bytes() - before == path.stat().st_size
