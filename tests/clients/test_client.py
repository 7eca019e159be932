"""The Python client against the real server and the test DepotDownloader.

Streams are broken the way networks break them: the client talks to the server through a TCP relay
(CutProxy) that the test cuts, and a recording interceptor shows what the client asked for next.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from grpc import aio

from tests.support.client import FAST_RETRY, CutProxy, Recorder, key_of
from tests.support.harness import Harness, seconds, unzip
from wallwhale.db.types import utcnow
from wallwhale.rpc.servicers.streams import ARCHIVE_CHUNK
from wallwhale_client import (
    AlreadyExists,
    AsyncClient,
    Client,
    DownloadFailed,
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Progress,
    QuotaExceeded,
    RateLimited,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
    WallWhaleError,
)
from wallwhale_client.v1 import admin_pb2, download_pb2

ITEM = 2831234567
D = download_pb2


@pytest_asyncio.fixture
async def proxy(harness: Harness) -> AsyncIterator[CutProxy]:
    server = await harness.start()
    relay = await CutProxy(server.port).start()
    yield relay
    await relay.close()


async def test_the_blocking_client_downloads_an_item_and_reports_progress(
    harness: Harness, proxy: CutProxy, tmp_path: Path
) -> None:
    await harness.add_account("alice_we", "correct horse")
    harness.steam.add_item(ITEM, files={"project.json": b'{"title": "Rain"}', "scene.pkg": 300_000})
    updates: list[Progress] = []

    def run() -> tuple[Path, list[D.WatchDownloadResponse], D.WatchDownloadResponse]:
        with Client(proxy.address, api_key=key_of(harness)) as client:
            path = client.download(
                f"https://steamcommunity.com/sharedfiles/filedetails/?id={ITEM}",
                tmp_path / "out",
                progress=updates.append,
            )
            job = client.list_downloads(limit=1)[0]
            events = list(client.watch_download(job.id))
            first = next(iter(client.watch_download(job.id)))  # left early: the stream is cancelled
            return path, events, first

    path, events, first = await asyncio.to_thread(run)
    assert events[-1].finished.download.state == D.DOWNLOAD_STATE_SUCCEEDED
    assert first == events[0]
    done = (
        await harness.downloads.ListDownloads(D.ListDownloadsRequest(), metadata=harness.admin)
    ).downloads[0]
    assert path == tmp_path / "out" / done.archive.filename
    data = path.read_bytes()
    assert unzip(data) == harness.steam.expected_files(ITEM)
    assert hashlib.sha256(data).hexdigest() == done.archive.sha256
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left behind
    states = [update.state for update in updates]
    assert states[0] == "QUEUED"
    assert "RUNNING" in states
    assert states[-1] == "SUCCEEDED"
    assert updates[-1].fetched_bytes == updates[-1].archive_bytes == len(data)
    fetched = [update.fetched_bytes for update in updates]
    assert fetched == sorted(fetched)


async def test_a_watch_stream_cut_mid_way_resumes_after_the_last_event_seen(
    harness: Harness, proxy: CutProxy
) -> None:
    await harness.add_account("alice_we", "correct horse")
    harness.steam.add_item(
        ITEM, files={f"f{i}.bin": 1000 for i in range(8)}, behaviour={"file_delay": seconds(0.1)}
    )
    recorder = Recorder()
    async with AsyncClient(
        proxy.address, api_key=key_of(harness), interceptors=[recorder], retry=FAST_RETRY
    ) as client:
        created = await client.create_download(str(ITEM))
        seen: list[D.WatchDownloadResponse] = []
        async for event in client.watch_download(created.id):
            seen.append(event)
            if len(seen) == 3:
                proxy.cut()
    history = await harness.watch(created.id)
    numbered = [e.sequence for e in seen if e.WhichOneof("event") not in ("heartbeat", "finished")]
    recorded = [e.sequence for e in history if e.WhichOneof("event") not in ("heartbeat", "finished")]
    # The server may record a last log line after the final state (and its `finished` event).
    assert numbered == recorded[: len(numbered)]
    assert numbered == list(range(1, len(numbered) + 1))  # nothing lost, nothing twice
    assert seen[-1].finished.download.state == D.DOWNLOAD_STATE_SUCCEEDED
    watches = recorder.of("WatchDownload")
    assert len(watches) >= 2
    assert watches[0].after_sequence == 0
    assert watches[1].after_sequence >= 3  # resumed after what it had, not from the start
    assert proxy.connections >= 2


async def test_an_archive_stream_cut_mid_way_resumes_from_the_bytes_received(
    harness: Harness, proxy: CutProxy, tmp_path: Path
) -> None:
    await harness.add_account("alice_we", "correct horse")
    # Pseudo-random bytes do not compress: the zip is about 8 MB, eight chunks, cut in the third.
    harness.steam.add_item(ITEM, files={"scene.pkg": 8 * ARCHIVE_CHUNK, "project.json": b"{}"})
    recorder = Recorder()
    armed = False

    def on_progress(update: Progress) -> None:
        nonlocal armed
        if update.state == "SUCCEEDED" and not armed:  # the job is done; the fetch comes next
            armed = True
            proxy.cut_after(int(2.7 * ARCHIVE_CHUNK))

    async with AsyncClient(
        proxy.address, api_key=key_of(harness), interceptors=[recorder], retry=FAST_RETRY
    ) as client:
        path = await client.download(str(ITEM), tmp_path, progress=on_progress)
    done = (
        await harness.downloads.ListDownloads(D.ListDownloadsRequest(), metadata=harness.admin)
    ).downloads[0]
    data = path.read_bytes()
    assert len(data) == done.archive.size_bytes > 8 * ARCHIVE_CHUNK
    assert hashlib.sha256(data).hexdigest() == done.archive.sha256
    assert unzip(data) == harness.steam.expected_files(ITEM)
    offsets = [request.offset for request in recorder.of("FetchArchive")]
    assert len(offsets) == 2, offsets
    assert offsets[0] == 0
    assert 0 < offsets[1] < 2.7 * ARCHIVE_CHUNK
    assert offsets[1] % ARCHIVE_CHUNK == 0  # whole chunks received before the cut


async def test_an_archive_that_does_not_match_its_sha256_is_refused_and_not_kept(
    harness: Harness, tmp_path: Path
) -> None:
    server = await harness.start()
    await harness.add_account("alice_we", "correct horse")
    harness.steam.add_item(ITEM, files={"scene.pkg": 10_000})
    async with AsyncClient(f"127.0.0.1:{server.port}", api_key=key_of(harness)) as client:
        created = await client.create_download(str(ITEM))
        done = await harness.wait_for(created.id)
        [archive] = (harness.data_dir / "storage" / "archives").glob("*.zip")
        tampered = bytearray(archive.read_bytes())
        tampered[100] ^= 0xFF  # same size, other bytes
        archive.write_bytes(bytes(tampered))
        with pytest.raises(IntegrityError, match="sha256"):
            await client.save_archive(done.id, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


async def test_a_failed_download_raises_download_failed_with_the_reason(
    harness: Harness, tmp_path: Path
) -> None:
    server = await harness.start()
    await harness.add_account("alice_we", "correct horse")
    harness.steam.add_item(ITEM, behaviour={"missing": True})
    async with AsyncClient(f"127.0.0.1:{server.port}", api_key=key_of(harness)) as client:
        with pytest.raises(DownloadFailed) as failed:
            await client.download(str(ITEM), tmp_path)
    assert failed.value.reason == "ITEM_NOT_FOUND"
    assert failed.value.download.state == D.DOWNLOAD_STATE_FAILED
    assert not failed.value.retryable


async def expect(error_type: type[WallWhaleError], call: Any) -> WallWhaleError:
    with pytest.raises(error_type) as raised:
        await call
    assert type(raised.value) is error_type
    return raised.value


async def test_each_error_class_is_a_typed_exception_with_its_reason(harness: Harness) -> None:
    server = await harness.start()
    address = f"127.0.0.1:{server.port}"
    reader = dict(await harness.add_key(["download:read"]))["x-api-key"]
    no_quota = dict(await harness.add_key(["download:*"], daily_download_quota=0))["x-api-key"]
    async with (
        AsyncClient(address, api_key=key_of(harness)) as client,
        AsyncClient(address, api_key=reader) as read_only,
        AsyncClient(address, api_key="ww_not_a_real_key") as stranger,
        AsyncClient(address, api_key=no_quota) as over_quota,
    ):
        error = await expect(InvalidArgument, client.create_download("https://example.com/?id=1"))
        assert isinstance(error, InvalidArgument)
        assert error.reason == "INVALID_WORKSHOP_ITEM"
        assert [v.field for v in error.field_violations] == ["url_or_id"]
        assert error.request_id  # the server's x-request-id, to find the call in its log

        error = await expect(NotFound, client.get_download("0193aaaa-0000-7000-8000-000000000000"))
        assert error.reason == "NOT_FOUND"

        queued = await client.create_download(str(ITEM), request_id="same-id")
        error = await expect(AlreadyExists, client.create_download("5", request_id="same-id"))
        assert error.reason == "REQUEST_ID_REUSED"
        assert (await client.create_download(str(ITEM), request_id="same-id")).id == queued.id

        error = await expect(FailedPrecondition, client.save_archive(queued.id))
        assert error.reason == "ARCHIVE_NOT_READY"

        error = await expect(Unauthenticated, stranger.get_status())
        assert error.reason == "CREDENTIALS_INVALID"

        error = await expect(PermissionDenied, read_only.create_download(str(ITEM)))
        assert error.reason == "SCOPE_MISSING"

        started = time.monotonic()
        error = await expect(QuotaExceeded, over_quota.create_download(str(ITEM)))
        assert time.monotonic() - started < 2  # a wait until midnight is not waited for
        assert isinstance(error, QuotaExceeded)
        assert error.reason == "DAILY_QUOTA_EXCEEDED"
        assert error.retry_after is not None
        assert error.retry_after > 60
        assert error.violations[0].subject.startswith("api-keys/")

    async with AsyncClient("127.0.0.1:1", retry=RetryPolicy(attempts=2, initial_backoff=0.01)) as nowhere:
        await expect(Unavailable, nowhere.get_status())


async def test_a_qr_login_streams_the_code_then_the_outcome_and_refuses_a_busy_account(
    harness: Harness,
) -> None:
    server = await harness.start()
    harness.steam.add_account("qr_only", "phone-only")
    async with AsyncClient(f"127.0.0.1:{server.port}", api_key=key_of(harness)) as client:
        account = await client.create_steam_account("qr_only")
        harness.steam.scan_qr("qr_only")  # taken by the first poll after the code is shown
        events = [event async for event in client.start_qr_login(account.id)]
        kinds = [event.WhichOneof("event") for event in events if event.WhichOneof("event") != "heartbeat"]
        assert kinds == ["qr_code", "succeeded"]
        assert events[-1].succeeded.has_remembered_login

        waiting = client.start_qr_login(account.id)
        assert (await anext(waiting)).WhichOneof("event") == "qr_code"
        error = await expect(FailedPrecondition, anext(client.start_qr_login(account.id)))
        assert error.reason == "STEAM_ACCOUNT_BUSY"
        await waiting.aclose()  # cancels the call: the server stops DepotDownloader


async def test_rate_limits_are_retried_after_retry_info_or_raised_when_retries_are_off(
    harness: Harness,
) -> None:
    server = await harness.start()
    address = f"127.0.0.1:{server.port}"
    # One call per 10 s: the second call is refused however slow the machine is.
    strict = dict(await harness.add_key(["download:read"], requests_per_minute=6, burst=1))["x-api-key"]
    async with AsyncClient(address, api_key=strict, retry=RetryPolicy(attempts=1)) as impatient:
        await impatient.get_status()
        error = await expect(RateLimited, impatient.get_status())
        assert isinstance(error, RateLimited)
        assert error.reason == "RATE_LIMITED"
        assert error.retry_after is not None
        assert 0 < error.retry_after <= 10
    paced = dict(await harness.add_key(["download:read"], requests_per_minute=300, burst=1))["x-api-key"]
    async with AsyncClient(address, api_key=paced) as patient:
        started = time.monotonic()
        for _ in range(3):  # one call every 0.2 s: the 2nd and 3rd wait for RetryInfo's delay
            await patient.get_status()
        assert time.monotonic() - started >= 0.3


async def test_people_log_in_with_email_and_password_and_expired_tokens_are_refreshed(
    harness: Harness,
) -> None:
    # Logged in an hour ago on the server's clock, so the access token (15 minutes) expires when the
    # clock is put right (tokens issued in the future are refused as not valid, so not the other way).
    offset = timedelta(hours=-1)
    server = await harness.start(clock=lambda: utcnow() + offset)
    await harness.admin_api.CreateUser(
        admin_pb2.CreateUserRequest(
            user=admin_pb2.User(email="erin@example.test", role=admin_pb2.USER_ROLE_USER),
            password="a long enough password",
        ),
        metadata=harness.admin,
    )
    calls: list[str] = []
    recorder = _UnaryRecorder(calls)
    async with AsyncClient(
        f"127.0.0.1:{server.port}",
        email="erin@example.test",
        password="a long enough password",
        interceptors=[recorder],
    ) as client:
        assert (await client.get_caller()).user.email == "erin@example.test"
        offset = timedelta()
        assert (await client.get_caller()).user.email == "erin@example.test"
    assert calls == ["Login", "GetCaller", "GetCaller", "Refresh", "GetCaller"]
    with pytest.raises(ValueError, match="not both"):
        AsyncClient("127.0.0.1:1", api_key="ww_x", email="a@b.c", password="p")


class _UnaryRecorder(aio.UnaryUnaryClientInterceptor):
    def __init__(self, calls: list[str]):
        self.calls = calls

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        self.calls.append(method.rsplit("/", 1)[-1])
        return await continuation(details, request)
