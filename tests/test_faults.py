"""The product's promises under faults: a server killed mid-archive or mid-stream, PostgreSQL restarted
under load, a full disk, a runaway DepotDownloader, clients that stop reading, a thousand watchers.

Real parts only: `wallwhale serve` child processes killed with SIGKILL, a PostgreSQL cluster of the
test's own stopped and restarted with pg_ctl, a tmpfs that really runs out, the test DepotDownloader
writing real files. Each test says which promise it checks; each would fail if it did not hold.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2

from tests.engine_support import TIME_SCALE, Harness, describe, harness_for, rpc_error, seconds, unzip
from tests.fakes.steam import FakeSteam
from tests.fault_support import fill, health_of, private_postgres, proc_status_kb, serve_process, tmpfs
from tests.test_server import error_info
from wallwhale.core.events import WATCHER_QUEUE_SIZE
from wallwhale.v1 import download_pb2, download_pb2_grpc

ITEM = 2831234567
D = download_pb2
MIB = 1024 * 1024
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest_asyncio.fixture
async def harness(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async for value in harness_for(database_url, tmp_path):
        yield value


def _states(events: list[D.WatchDownloadResponse]) -> list[str]:
    return [
        D.DownloadState.Name(event.state_changed.download.state)
        for event in events
        if event.HasField("state_changed")
    ]


async def _fetch_all(stub: object, download_id: str, metadata: object, offset: int = 0) -> bytes:
    call = stub.FetchArchive(  # type: ignore[attr-defined]
        D.FetchArchiveRequest(id=download_id, offset=offset), metadata=metadata
    )
    return b"".join([chunk.data async for chunk in call])


# --- a server killed with SIGKILL ------------------------------------------------------------------


@pytest.mark.slow
async def test_a_server_killed_mid_archive_serves_nothing_half_written_and_the_job_succeeds_once(
    harness: Harness, tmp_path: Path
) -> None:
    """kill -9 while the zip is being written (the job is ARCHIVING) and while a client watches
    through that instance: the .partial zip is never served, a new instance takes the job back after
    the lease, it ends SUCCEEDED exactly once, the watcher resumes by sequence without a gap or a
    duplicate, and the archive's bytes match its sha256."""
    await harness.start()  # set-up API; its engine must not take the job
    await harness.add_account("kai_we", "pw-kai")
    # Thousands of small files: packing them takes seconds (per-file work), fetching them does not.
    files: dict[str, bytes | int] = {f"layers/{i:04}.bin": 8 * 1024 for i in range(3000)}
    harness.steam.add_item(ITEM, files=files)
    await harness.servers[0].downloads.stop()
    archives = harness.data_dir / "storage" / "archives"
    async with serve_process(harness, tmp_path / "serve", inactivity_timeout_seconds=60) as doomed:
        created = await harness.create(str(ITEM))
        watch = download_pb2_grpc.DownloadServiceStub(doomed.channel).WatchDownload(
            D.WatchDownloadRequest(id=created.id, exclude_logs=True), metadata=harness.admin
        )
        seen: list[D.WatchDownloadResponse] = []

        async def consume() -> None:
            async for event in watch:
                seen.append(event)

        watching = asyncio.create_task(consume())
        partial = archives / f"{created.id}.zip.partial"
        deadline = time.monotonic() + 40
        while not (partial.exists() and partial.stat().st_size > 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await doomed.kill()
        code = None
        try:
            await watching
        except grpc.RpcError as error:
            code = error.code()
        assert code == grpc.StatusCode.UNAVAILABLE, (
            describe(seen),
            partial.exists(),
            time.monotonic() - deadline,
        )
    assert partial.exists(), "the kill came too late: the zip was already complete"
    assert not (archives / f"{created.id}.zip").exists()
    assert "DOWNLOAD_STATE_ARCHIVING" in _states(seen)  # the watcher was live until the kill

    # Nothing half-written is served: the job is still ARCHIVING for everyone.
    stuck = await harness.get(created.id)
    assert stuck.state == D.DOWNLOAD_STATE_ARCHIVING
    assert stuck.archive.state != D.ARCHIVE_STATE_AVAILABLE
    error = await rpc_error(
        harness.downloads.FetchArchive(D.FetchArchiveRequest(id=created.id), metadata=harness.admin).read()
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "ARCHIVE_NOT_READY"

    await harness.start()  # a new instance: takes the job back once the lease (2 s) has run out
    last_seen = seen[-1].sequence
    resumed = [
        event
        async for event in harness.downloads.WatchDownload(
            D.WatchDownloadRequest(id=created.id, after_sequence=last_seen, exclude_logs=True),
            metadata=harness.admin,
        )
    ]
    sequences = [event.sequence for event in resumed[:-1] if not event.HasField("heartbeat")]
    assert sequences == sorted(set(sequences)) and sequences[0] > last_seen
    done = await harness.wait_for(created.id, limit=30)
    assert done.state == D.DOWNLOAD_STATE_SUCCEEDED, describe(await harness.watch(created.id))
    assert resumed[-1].finished.download.state == D.DOWNLOAD_STATE_SUCCEEDED
    history = await harness.watch(created.id)
    assert _states(history).count("DOWNLOAD_STATE_SUCCEEDED") == 1, describe(history)
    assert [e.sequence for e in history[:-1]] == list(range(1, len(history)))
    assert not partial.exists()

    data, headers = await harness.fetch(created.id)
    assert hashlib.sha256(data).hexdigest() == headers["x-archive-sha256"] == done.archive.sha256
    assert len(data) == done.archive.size_bytes
    assert unzip(data) == harness.steam.expected_files(ITEM)


@pytest.mark.slow
async def test_an_archive_stream_cut_by_a_killed_server_resumes_elsewhere_byte_exact(
    harness: Harness, tmp_path: Path
) -> None:
    """A client fetching a 64 MiB archive from an instance that is killed with SIGKILL: its stream
    breaks, and it resumes from the bytes it has (offset) on another instance and gets exactly the
    archive the sha256 names."""
    await harness.start()
    await harness.add_account("lou_we", "pw-lou")
    harness.steam.add_item(ITEM, files={"a.mp4": 40 * MIB, "b.mp4": 24 * MIB})
    done = await harness.wait_for((await harness.create(str(ITEM))).id)
    assert done.state == D.DOWNLOAD_STATE_SUCCEEDED
    async with serve_process(harness, tmp_path / "serve", max_concurrent_downloads=0) as doomed:
        call = download_pb2_grpc.DownloadServiceStub(doomed.channel).FetchArchive(
            D.FetchArchiveRequest(id=done.id), metadata=harness.admin
        )
        headers = dict(await call.initial_metadata())
        received = bytearray()
        with pytest.raises(grpc.RpcError) as broken:
            async for chunk in call:
                received += chunk.data
                if len(received) >= 8 * MIB and doomed.process.returncode is None:
                    await doomed.kill()
    assert broken.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
    assert 0 < len(received) < done.archive.size_bytes
    rest = await _fetch_all(harness.downloads, done.id, harness.admin, offset=len(received))
    whole = bytes(received) + rest
    assert len(whole) == int(headers["x-archive-size"]) == done.archive.size_bytes
    assert hashlib.sha256(whole).hexdigest() == headers["x-archive-sha256"] == done.archive.sha256


# --- a full disk ---------------------------------------------------------------------------------


async def _stop_servers(harness: Harness) -> None:
    """Before the tmpfs is unmounted: nothing may still write into it."""
    for server in harness.servers:
        await server.stop(grace=0)


async def _assert_refused_and_serving(harness: Harness, download_id: str) -> None:
    error = await rpc_error(
        harness.downloads.FetchArchive(D.FetchArchiveRequest(id=download_id), metadata=harness.admin).read()
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "ARCHIVE_NOT_READY"
    archives = harness.data_dir / "storage" / "archives"
    assert not list(archives.glob(f"{download_id}*")), "a half-written archive was left behind"
    assert await health_of(harness.channel) == SERVING
    listed = await harness.downloads.ListDownloads(D.ListDownloadsRequest(), metadata=harness.admin)
    assert download_id in {download.id for download in listed.downloads}


async def test_a_full_disk_during_the_download_fails_clearly_and_a_retry_after_freeing_space_succeeds(
    harness: Harness,
) -> None:
    """The tmpfs really runs out while DepotDownloader writes the item's files."""
    storage = harness.data_dir / "storage"
    with tmpfs(storage, 8 * MIB):
        await harness.start()
        await harness.add_account("mia_we", "pw-mia")
        harness.steam.add_item(ITEM, files={"project.json": b'{"title": "Full"}', "scene.pkg": 2 * MIB})
        ballast = fill(storage, leave_bytes=MIB)  # the item needs 2 MiB: it does not fit
        created = await harness.create(str(ITEM))
        done = await harness.wait_for(created.id)
        history = describe(await harness.watch(created.id))
        assert done.state == D.DOWNLOAD_STATE_FAILED, history
        assert D.FailureReason.Name(done.failure.reason) == "FAILURE_REASON_STORAGE_ERROR", history
        assert "disk is full" in done.failure.message, done.failure.message
        assert done.attempt == 1  # not retried by itself: the disk stays full until someone acts
        await _assert_refused_and_serving(harness, created.id)

        ballast.unlink()
        await harness.downloads.RetryDownload(D.RetryDownloadRequest(id=created.id), metadata=harness.admin)
        again = await harness.wait_for(created.id)
        assert again.state == D.DOWNLOAD_STATE_SUCCEEDED, describe(await harness.watch(created.id))
        data, _ = await harness.fetch(created.id)
        assert hashlib.sha256(data).hexdigest() == again.archive.sha256
        assert unzip(data) == harness.steam.expected_files(ITEM)
        await _stop_servers(harness)


async def test_a_full_disk_while_packing_the_zip_fails_clearly_and_leaves_no_partial_archive(
    harness: Harness,
) -> None:
    """The download fits, its zip does not (incompressible files are stored, so the zip is as big)."""
    storage = harness.data_dir / "storage"
    with tmpfs(storage, 10 * MIB):
        await harness.start()
        await harness.add_account("ned_we", "pw-ned")
        harness.steam.add_item(ITEM, files={"a.mp4": 2 * MIB, "b.mp4": 1 * MIB})
        ballast = fill(storage, leave_bytes=4 * MIB)  # 3 MiB of files fit; 3 more for the zip do not
        created = await harness.create(str(ITEM))
        done = await harness.wait_for(created.id)
        history = describe(await harness.watch(created.id))
        assert done.state == D.DOWNLOAD_STATE_FAILED, history
        assert "DOWNLOAD_STATE_ARCHIVING" in history  # it failed while packing, not before
        assert D.FailureReason.Name(done.failure.reason) == "FAILURE_REASON_STORAGE_ERROR", history
        assert "disk is full" in done.failure.message, done.failure.message
        await _assert_refused_and_serving(harness, created.id)

        ballast.unlink()
        await harness.downloads.RetryDownload(D.RetryDownloadRequest(id=created.id), metadata=harness.admin)
        again = await harness.wait_for(created.id)
        assert again.state == D.DOWNLOAD_STATE_SUCCEEDED, describe(await harness.watch(created.id))
        data, _ = await harness.fetch(created.id)
        assert hashlib.sha256(data).hexdigest() == again.archive.sha256
        assert unzip(data) == harness.steam.expected_files(ITEM)
        await _stop_servers(harness)


# --- PostgreSQL restarted under load --------------------------------------------------------------


async def _health_becomes(channel: object, wanted: int, limit: float) -> float:
    """Seconds until the server's health is `wanted`."""
    started = time.monotonic()
    while (status := await health_of(channel)) != wanted:  # type: ignore[arg-type]
        if time.monotonic() - started > limit:
            raise AssertionError(f"health stayed {status}, not {wanted}, for {limit} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.slow
async def test_postgresql_stopped_and_restarted_under_load_loses_no_job_and_runs_none_twice(
    tmp_path: Path,
) -> None:
    """A private cluster (the shared server is never touched) is stopped for a few seconds while
    jobs run and wait: health goes NOT_SERVING, then SERVING once it is back; every accepted job ends
    final, each DepotDownloader run belongs to one attempt, and no job ran twice."""
    with private_postgres() as cluster:
        harness = Harness(cluster.create_database("wallwhale"), tmp_path / "data", FakeSteam(tmp_path / "s"))
        harness.steam.set(time_scale=TIME_SCALE)
        await harness.prepare()
        try:
            # A lease longer than the outage: the instance keeps its jobs through it.
            await harness.start(job_lease_seconds=20.0)
            for name in ("ola_we", "pia_we", "rex_we"):
                await harness.add_account(name, f"pw-{name}")
            harness.steam.add_item(
                ITEM, files={f"f{i}.bin": 1000 for i in range(20)}, behaviour={"file_delay": seconds(0.1)}
            )
            jobs = [(await harness.create(str(ITEM), skip_cache=True)).id for _ in range(8)]
            await harness.wait_for_progress(jobs[0])
            assert await health_of(harness.channel) == SERVING

            await asyncio.to_thread(cluster.stop)
            went_down = await _health_becomes(harness.channel, NOT_SERVING, 10)
            await asyncio.sleep(3)
            await asyncio.to_thread(cluster.start)
            came_back = await _health_becomes(harness.channel, SERVING, 15)

            done = [await harness.wait_for(job, limit=60) for job in jobs]
            summary = [(D.DownloadState.Name(d.state), d.attempt, d.failure.message) for d in done]
            assert all(d.state == D.DOWNLOAD_STATE_SUCCEEDED for d in done), summary
            runs = [run for run in harness.steam.runs() if "-dir" in run["argv"]]
            per_job = {job: 0 for job in jobs}
            for run in runs:
                per_job[Path(run["argv"][run["argv"].index("-dir") + 1]).name] += 1
            attempts = {d.id: d.attempt for d in done}
            # A run the outage interrupted may be retried, but then as a new attempt, never alongside.
            assert all(per_job[job] == attempts[job] for job in jobs), (per_job, attempts)
            assert harness.steam.max_overlap() <= 3
            for job in jobs:
                history = await harness.watch(job)
                assert _states(history).count("DOWNLOAD_STATE_SUCCEEDED") == 1, describe(history)
            print(f"health: NOT_SERVING after {went_down:.2f} s, SERVING {came_back:.2f} s after the start")
        finally:
            await harness.close()
