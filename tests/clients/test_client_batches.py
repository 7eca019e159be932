"""The Python client's batch helpers against the real server, the test DepotDownloader and the fake of
Steam's Web API (for collections). Streams are cut with the CutProxy of tests/support/client.py; its
Recorder shows what the client asked for after each cut."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from google.protobuf.message import Message

from tests.fakes.webapi import FakeWebApi
from tests.support.client import FAST_RETRY, CutProxy, Recorder, key_of
from tests.support.harness import Harness, seconds
from wallwhale.rpc.servicers.streams import ARCHIVE_CHUNK
from wallwhale_client import (
    AsyncClient,
    BatchFailed,
    BatchProgress,
    Client,
    FailedPrecondition,
    IntegrityError,
)
from wallwhale_client.v1 import download_pb2

D = download_pb2
COLLECTION = 3_000_000_001
A, B, C = 2_900_000_001, 2_900_000_002, 2_900_000_003


@pytest_asyncio.fixture
async def proxy(harness: Harness) -> AsyncIterator[CutProxy]:
    """The server (with the fake Web API, one attempt per job) behind a relay the test can cut."""
    with FakeWebApi(harness.steam) as web:
        server = await harness.start(steam_web_api_url=web.base_url, max_attempts=1)
        await harness.add_account("batch_we", "pw-batch")
        relay = await CutProxy(server.port).start()
        yield relay
        await relay.close()


def expected_zip(harness: Harness, *items: int) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for item in items:
        found |= {f"{item}/{name}": body for name, body in harness.steam.expected_files(item).items()}
    return found


def read_zip(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as archive:
        assert archive.testzip() is None
        return {info.filename: archive.read(info) for info in archive.infolist()}


def item_archive(harness: Harness, download_id: str) -> Path:
    return harness.data_dir / "storage" / "archives" / f"{download_id}.zip"


class HookedRecorder(Recorder):
    """A Recorder that runs `before(n)` before the n-th call (from 1) of `method` goes out."""

    def __init__(self, method: str, before: Callable[[int], Awaitable[None]]):
        super().__init__()
        self.method = method
        self.before = before

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Message) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if method.endswith("/" + self.method):
            await self.before(len(self.of(self.method)) + 1)
        return await super().intercept_unary_stream(continuation, details, request)


async def test_the_blocking_client_downloads_a_collection_that_partly_succeeds(
    harness: Harness, proxy: CutProxy, tmp_path: Path
) -> None:
    harness.steam.add_item(A, files={"project.json": b'{"title": "A"}', "scene.pkg": 200_000})
    harness.steam.add_item(B, files={"project.json": b'{"title": "B"}', "media/clip.mp4": 150_000})
    harness.steam.add_item(C, behaviour={"depot_key_denied": True})
    harness.steam.add_collection(COLLECTION, [A, B, C], title="Rainy Days")
    updates: list[BatchProgress] = []

    def run() -> tuple[Any, ...]:
        with Client(proxy.address, api_key=key_of(harness)) as client:
            saved = client.download_batch(
                [f"https://steamcommunity.com/sharedfiles/filedetails/?id={COLLECTION}"],
                tmp_path / "out",
                progress=updates.append,
                request_id="rainy-days",
            )
            again = client.create_batch([str(COLLECTION)], request_id="rainy-days")
            listed = client.list_batches()
            events = list(client.watch_batch(saved.batch.id, exclude_logs=True))
            return saved, again, listed, events, client.get_batch(saved.batch.id)

    saved, again, listed, events, stored = await asyncio.to_thread(run)
    batch = saved.batch
    assert batch == stored
    assert batch.state == D.BATCH_STATE_PARTIALLY_SUCCEEDED
    assert (batch.succeeded_count, batch.failed_count, batch.total_count) == (2, 1, 3)
    assert again.id == batch.id  # the same request_id: the same batch, nothing queued twice
    assert [b.id for b in listed] == [batch.id]
    assert events[-1].finished == batch
    assert saved.path == tmp_path / "out" / f"{COLLECTION}-rainy-days.zip"
    assert saved.info.size == saved.path.stat().st_size
    assert saved.info.missing == ()
    assert read_zip(saved.path) == expected_zip(harness, A, B)
    assert [p.name for p in saved.path.parent.iterdir()] == [saved.path.name]  # no partial file left
    assert updates[0].batch.state == D.BATCH_STATE_ACTIVE
    assert updates[0].final_count == 0
    final_states = {download.state for download in updates[-1].downloads.values()}
    assert final_states == {D.DOWNLOAD_STATE_SUCCEEDED, D.DOWNLOAD_STATE_FAILED}
    assert updates[-1].final_count == 3
    assert updates[-1].fetched_bytes == updates[-1].archive_bytes == saved.info.size
    fetched = [update.fetched_bytes for update in updates]
    assert fetched == sorted(fetched)


async def test_a_batch_with_no_success_raises_and_an_active_one_has_no_archive(
    harness: Harness, proxy: CutProxy, tmp_path: Path
) -> None:
    harness.steam.add_item(A, files={"scene.pkg": 1000}, behaviour={"file_delay": seconds(2)})
    harness.steam.add_item(C, behaviour={"missing": True})
    async with AsyncClient(proxy.address, api_key=key_of(harness)) as client:
        with pytest.raises(BatchFailed) as failed:
            await client.download_batch([str(C)], tmp_path / "out")
        assert failed.value.reason == "FAILED"
        assert failed.value.batch.failed_count == 1
        active = await client.create_batch([str(A)])
        with pytest.raises(FailedPrecondition) as not_ready:
            await client.save_batch_archive(active.id, tmp_path / "out")
        assert not_ready.value.reason == "ARCHIVE_NOT_READY"
        cancelled = await client.cancel_batch(active.id)
        assert cancelled.state == D.BATCH_STATE_CANCELLED
    assert await asyncio.to_thread(lambda: list((tmp_path / "out").iterdir())) == []


async def test_a_watch_cut_mid_way_reconnects_and_skips_what_the_replay_repeats(
    harness: Harness, proxy: CutProxy
) -> None:
    for item in (A, B):
        harness.steam.add_item(
            item, files={f"f{i}.bin": 1000 for i in range(6)}, behaviour={"file_delay": seconds(0.1)}
        )
    recorder = Recorder()
    async with AsyncClient(
        proxy.address, api_key=key_of(harness), interceptors=[recorder], retry=FAST_RETRY
    ) as client:
        batch = await client.create_batch([str(A), str(B)])
        seen: list[D.WatchBatchResponse] = []
        async for event in client.watch_batch(batch.id):
            seen.append(event)
            if len(seen) in (3, 12):
                proxy.cut()
    assert len(recorder.of("WatchBatch")) >= 3
    assert proxy.connections >= 3
    assert seen[-1].finished.state == D.BATCH_STATE_SUCCEEDED
    assert sum(event.HasField("finished") for event in seen) == 1
    for download_id in batch.download_ids:
        own = [e.download_event.sequence for e in seen if e.download_event.download_id == download_id]
        recorded = [e.sequence for e in await harness.watch(download_id) if not e.HasField("finished")]
        assert own == list(range(1, len(own) + 1))  # nothing lost, nothing twice
        assert own == recorded[: len(own)]


async def _finished_batch(client: AsyncClient, *urls_or_ids: str) -> D.Batch:
    """A batch created and followed until every item is final."""
    batch = await client.create_batch(list(urls_or_ids))
    async for _ in client.watch_batch(batch.id, exclude_logs=True):
        pass
    return batch


async def test_an_archive_cut_mid_way_resumes_while_its_version_is_unchanged(
    harness: Harness, proxy: CutProxy, tmp_path: Path
) -> None:
    # Pseudo-random bytes do not compress: eight chunks in all, cut in the third.
    harness.steam.add_item(A, files={"scene.pkg": 4 * ARCHIVE_CHUNK})
    harness.steam.add_item(B, files={"scene.pkg": 4 * ARCHIVE_CHUNK})
    recorder = Recorder()
    async with AsyncClient(
        proxy.address, api_key=key_of(harness), interceptors=[recorder], retry=FAST_RETRY
    ) as client:
        batch = await _finished_batch(client, str(A), str(B))
        proxy.cut_after(int(2.7 * ARCHIVE_CHUNK))
        saved = await client.save_batch_archive(batch.id, tmp_path)
    assert read_zip(saved.path) == expected_zip(harness, A, B)
    offsets = [request.offset for request in recorder.of("FetchBatchArchive")]
    assert len(offsets) == 2, offsets
    assert offsets[0] == 0
    assert 0 < offsets[1] < 2.7 * ARCHIVE_CHUNK  # resumed, not started again


async def test_an_archive_whose_version_changed_between_attempts_is_fetched_again_from_the_start(
    harness: Harness, proxy: CutProxy, tmp_path: Path
) -> None:
    harness.steam.add_item(A, files={"scene.pkg": 4 * ARCHIVE_CHUNK})
    harness.steam.add_item(B, files={"scene.pkg": 4 * ARCHIVE_CHUNK})
    version: list[str] = []

    async def before(attempt: int) -> None:
        if attempt == 2:  # after the cut: B's archive has expired meanwhile
            item_archive(harness, batch.download_ids[1]).unlink()

    recorder = HookedRecorder("FetchBatchArchive", before)
    async with AsyncClient(
        proxy.address, api_key=key_of(harness), interceptors=[recorder], retry=FAST_RETRY
    ) as client:
        batch = await _finished_batch(client, str(A), str(B))
        complete = await harness.downloads.FetchBatchArchive(
            D.FetchBatchArchiveRequest(id=batch.id, length=1), metadata=harness.admin
        ).initial_metadata()
        version.append(dict(complete)["x-archive-version"])
        proxy.cut_after(int(2.7 * ARCHIVE_CHUNK))
        saved = await client.save_batch_archive(batch.id, tmp_path)
    offsets = [request.offset for request in recorder.of("FetchBatchArchive")]
    assert len(offsets) == 3, offsets
    assert offsets[0] == 0
    assert offsets[1] > 0
    assert offsets[2] == 0  # the bytes of the old archive were thrown away
    assert saved.info.version != version[0]
    assert saved.info.missing == (B,)
    assert read_zip(saved.path) == expected_zip(harness, A)
    assert saved.info.size == saved.path.stat().st_size


async def test_an_archive_damaged_on_the_way_fails_testzip_and_is_not_kept(
    harness: Harness, proxy: CutProxy, tmp_path: Path
) -> None:
    harness.steam.add_item(A, files={"scene.pkg": 50_000})
    async with AsyncClient(proxy.address, api_key=key_of(harness)) as client:
        batch = await _finished_batch(client, str(A))
        # Well past the response's headers, inside the entry's bytes (one message holds the whole zip, its
        # HTTP/2 frames 16 KiB): same size, no sha256 to compare, only the entry's CRC-32 tells.
        proxy.flip_at(30_000)
        with pytest.raises(IntegrityError, match="does not match its CRC-32"):
            await client.save_batch_archive(batch.id, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
