"""The download engine end to end: real server, real database, the test DepotDownloader as the binary.

Each failure class of docs/depotdownloader-reference.md is produced by the fake the way the real
tool produces it (output, prompts, exit code), and the job must end in the right state and reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_status import rpc_status

from tests.support.harness import Harness, alive, describe, rpc_error, seconds, unzip
from tests.support.server import error_info
from wallwhale.v1 import (
    admin_pb2,
    download_pb2,
    status_pb2,
    status_pb2_grpc,
)

ITEM = 2831234567
D = download_pb2


async def test_bad_workshop_references_are_invalid_argument_naming_the_field(harness: Harness) -> None:
    await harness.start()
    for bad in ("", "not a url", "https://example.com/?id=1", "0", str(2**64)):
        error = await rpc_error(
            harness.downloads.CreateDownload(D.CreateDownloadRequest(url_or_id=bad), metadata=harness.admin)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        status = rpc_status.from_call(error)
        assert status is not None
        assert "url_or_id" in (error.details() or "")
    error = await rpc_error(
        harness.downloads.CreateDownload(
            D.CreateDownloadRequest(url_or_id="1", app_id=0), metadata=harness.admin
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "app_id" in (error.details() or "")


async def test_request_id_makes_create_idempotent(harness: Harness) -> None:
    await harness.start()
    url = f"https://steamcommunity.com/sharedfiles/filedetails/?id={ITEM}"
    first = await harness.create(url, request_id="create-1")
    again = await harness.create(str(ITEM), request_id="create-1")  # the same item, another spelling
    assert again.id == first.id
    assert first.workshop_id == ITEM
    assert first.app_id == 431960
    error = await rpc_error(
        harness.downloads.CreateDownload(
            D.CreateDownloadRequest(url_or_id="5", request_id="create-1"), metadata=harness.admin
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(error).reason == "REQUEST_ID_REUSED"


async def test_a_download_succeeds_and_its_zip_holds_the_exact_files(harness: Harness) -> None:
    await harness.start()
    account_id = await harness.add_account("alice_we", "correct horse")
    harness.steam.add_item(
        ITEM, files={"project.json": b'{"title": "Rain"}', "scene.pkg": 300_000, "preview.gif": 50_000}
    )
    created = await harness.create(f"steam://url/CommunityFilePage/{ITEM}")
    assert created.state == D.DOWNLOAD_STATE_QUEUED
    done = await harness.wait_for(created.id)
    assert done.state == D.DOWNLOAD_STATE_SUCCEEDED, done
    assert done.steam_account_id == account_id
    assert done.attempt == 1
    assert done.archive.state == D.ARCHIVE_STATE_AVAILABLE
    assert done.archive.file_count == 3
    assert done.progress.percent == 100.0

    data, headers = await harness.fetch(created.id)
    assert unzip(data) == harness.steam.expected_files(ITEM)
    assert headers["x-archive-sha256"] == hashlib.sha256(data).hexdigest() == done.archive.sha256
    assert int(headers["x-archive-size"]) == len(data) == done.archive.size_bytes
    assert done.archive.filename.startswith(str(ITEM))
    # Resuming from an offset gives the rest, byte for byte.
    rest, _ = await harness.fetch(created.id, offset=1000)
    assert rest == data[1000:]
    part, _ = await harness.fetch(created.id, offset=10, length=20)
    assert part == data[10:30]
    # The item's folder stays, DepotDownloader's manifest with it, so that an update is incremental.
    item_dir = harness.data_dir / "storage" / "work" / "431960" / str(ITEM)
    assert (item_dir / ".DepotDownloader").is_dir()

    [run] = harness.steam.runs()
    argv = run["argv"]
    assert argv[argv.index("-app") + 1] == "431960"
    assert argv[argv.index("-pubfile") + 1] == str(ITEM)
    assert argv[argv.index("-username") + 1] == "alice_we"
    assert "-remember-password" in argv
    assert "-loginid" in argv
    assert "-password" not in argv
    assert "correct horse" not in " ".join(argv)
    assert Path(argv[argv.index("-dir") + 1]) == item_dir.resolve()
    assert not any(name.startswith("WALLWHALE") for name in run["env_names"])

    # A late watcher gets the whole history, in order, then the outcome.
    events = await harness.watch(created.id)
    states = [e.state_changed.download.state for e in events if e.HasField("state_changed")]
    assert states == [
        D.DOWNLOAD_STATE_QUEUED,
        D.DOWNLOAD_STATE_RUNNING,
        D.DOWNLOAD_STATE_ARCHIVING,
        D.DOWNLOAD_STATE_SUCCEEDED,
    ]
    sequences = [e.sequence for e in events[:-1]]
    assert sequences == list(range(1, len(sequences) + 1))
    percents = [e.progress.percent for e in events if e.HasField("progress")]
    assert percents
    assert percents == sorted(percents)
    assert any("Total downloaded" in e.log_line.line for e in events if e.HasField("log_line"))
    assert events[-1].HasField("finished")
    assert events[-1].finished.download.state == D.DOWNLOAD_STATE_SUCCEEDED
    # Resuming the stream after the last event gives only the final event.
    tail = await harness.watch(created.id, after=sequences[-1])
    assert [event.WhichOneof("event") for event in tail] == ["finished"]

    # The account's login is remembered: a second download needs no password prompt.
    second = await harness.create(str(ITEM), skip_cache=True)
    assert (await harness.wait_for(second.id)).state == D.DOWNLOAD_STATE_SUCCEEDED
    account = await harness.admin_api.GetSteamAccount(
        admin_pb2.GetSteamAccountRequest(id=account_id), metadata=harness.admin
    )
    assert account.steam_account.has_remembered_login
    assert 431960 in account.steam_account.owned_app_ids


FAILURES: list[tuple[str, dict[str, Any], dict[str, Any], int, str]] = [
    # (case, account options, item behaviour, final state, failure reason)
    (
        "wrong password",
        {"login_result": "InvalidPassword"},
        {},
        D.DOWNLOAD_STATE_FAILED,
        "INVALID_CREDENTIALS",
    ),
    ("app not owned", {"owns": ()}, {}, D.DOWNLOAD_STATE_FAILED, "APP_NOT_OWNED"),
    ("item not found, exit 0", {}, {"missing": True}, D.DOWNLOAD_STATE_FAILED, "ITEM_NOT_FOUND"),
    ("depot key refused, 0 depots", {}, {"depot_key_denied": True}, D.DOWNLOAD_STATE_FAILED, "ACCESS_DENIED"),
    ("depot not available, 0 depots", {}, {"zero_depots": True}, D.DOWNLOAD_STATE_FAILED, "APP_NOT_OWNED"),
    ("success without files", {}, {"no_files": True}, D.DOWNLOAD_STATE_FAILED, "NO_FILES"),
    ("disk full", {}, {"disk_full": True}, D.DOWNLOAD_STATE_FAILED, "STORAGE_ERROR"),
    (
        "private item, details crash",
        {},
        {"file_details_access_denied": True},
        D.DOWNLOAD_STATE_FAILED,
        "ITEM_NOT_FOUND",
    ),
    ("manifest refused", {}, {"manifest_401": True}, D.DOWNLOAD_STATE_FAILED, "ACCESS_DENIED"),
]


@pytest.mark.parametrize(
    ("case", "account", "behaviour", "state", "reason"), FAILURES, ids=[f[0] for f in FAILURES]
)
async def test_permanent_failures_end_the_job_with_their_reason(
    harness: Harness, case: str, account: dict[str, Any], behaviour: dict[str, Any], state: int, reason: str
) -> None:
    await harness.start()
    account_id = await harness.add_account("bob_we", "hunter22", **account)
    harness.steam.add_item(ITEM, behaviour=behaviour)
    created = await harness.create(str(ITEM))
    done = await harness.wait_for(created.id)
    history = describe(await harness.watch(created.id))
    assert done.state == state, history
    assert D.FailureReason.Name(done.failure.reason) == f"FAILURE_REASON_{reason}", history
    assert done.failure.message
    assert done.attempt == 1, history  # permanent: not retried automatically
    assert "hunter22" not in done.failure.message
    error = await rpc_error(
        harness.downloads.FetchArchive(D.FetchArchiveRequest(id=created.id), metadata=harness.admin).read()
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "ARCHIVE_NOT_READY"
    accounts = await harness.admin_api.GetSteamAccount(
        admin_pb2.GetSteamAccountRequest(id=account_id), metadata=harness.admin
    )
    if reason == "INVALID_CREDENTIALS":
        assert accounts.steam_account.status == admin_pb2.STEAM_ACCOUNT_STATUS_DISABLED
    if reason == "APP_NOT_OWNED":
        assert 431960 in accounts.steam_account.not_owned_app_ids


TRANSIENT: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("rate limited", {"login_result": "RateLimitExceeded"}, {}, "STEAM_RATE_LIMITED"),
    ("crash", {}, {"crash": True}, "PROCESS_CRASHED"),
    ("endless chunk errors", {}, {"chunk_errors": True}, "STALLED"),
]


@pytest.mark.parametrize(("case", "account", "behaviour", "reason"), TRANSIENT, ids=[f[0] for f in TRANSIENT])
async def test_transient_failures_are_retried_with_back_off_then_fail(
    harness: Harness, case: str, account: dict[str, Any], behaviour: dict[str, Any], reason: str
) -> None:
    await harness.start(max_attempts=2, chunk_error_limit=5)
    await harness.add_account("carol_we", "pw-carol", **account)
    harness.steam.add_item(ITEM, behaviour=behaviour)
    created = await harness.create(str(ITEM))
    done = await harness.wait_for(created.id)
    assert done.state == D.DOWNLOAD_STATE_FAILED, done
    assert D.FailureReason.Name(done.failure.reason) == f"FAILURE_REASON_{reason}"
    assert done.failure.retryable
    assert done.attempt == 2
    assert len(harness.steam.runs()) == 2
    events = await harness.watch(created.id)
    assert any("retrying in" in e.log_line.line for e in events if e.HasField("log_line"))


async def test_a_hanging_downloader_is_stopped_by_the_inactivity_limit(harness: Harness) -> None:
    await harness.start(inactivity_timeout_seconds=1.0, max_attempts=1)
    await harness.add_account("dave_we", "pw-dave")
    harness.steam.add_item(ITEM, behaviour={"hang": "progress"})
    done = await harness.wait_for((await harness.create(str(ITEM))).id)
    assert D.FailureReason.Name(done.failure.reason) == "FAILURE_REASON_STALLED"
    [run] = harness.steam.runs()
    assert not alive(run["pid"])


async def test_the_keys_runtime_limit_stops_a_slow_download(harness: Harness) -> None:
    await harness.start(max_attempts=1)
    await harness.add_account("erin_we", "pw-erin")
    key = await harness.add_key(["download:*"], max_runtime=duration_pb2.Duration(seconds=1))
    harness.steam.add_item(
        ITEM, files={f"f{i}.bin": 1000 for i in range(20)}, behaviour={"file_delay": seconds(0.3)}
    )
    created = await harness.create(str(ITEM), metadata=key)
    done = await harness.wait_for(created.id)
    assert D.FailureReason.Name(done.failure.reason) == "FAILURE_REASON_TIMEOUT"
    [run] = harness.steam.runs()
    assert not alive(run["pid"])


async def test_cancel_works_queued_and_running_and_leaves_no_process(harness: Harness) -> None:
    await harness.start()
    await harness.add_account("frank_we", "pw-frank")
    harness.steam.add_item(
        ITEM, files={f"f{i}.bin": 1000 for i in range(50)}, behaviour={"file_delay": seconds(0.2)}
    )
    running = await harness.create(str(ITEM))
    waiting = await harness.create(str(ITEM), skip_cache=True)  # the only account is busy: it waits
    await harness.wait_for_progress(running.id)
    assert (await harness.get(waiting.id)).state == D.DOWNLOAD_STATE_QUEUED

    response = await harness.downloads.CancelDownload(
        D.CancelDownloadRequest(id=waiting.id), metadata=harness.admin
    )
    assert response.download.state == D.DOWNLOAD_STATE_CANCELLED
    response = await harness.downloads.CancelDownload(
        D.CancelDownloadRequest(id=running.id), metadata=harness.admin
    )
    assert response.download.state == D.DOWNLOAD_STATE_CANCELLED
    [run] = harness.steam.runs()
    assert not alive(run["pid"])
    assert run["exit_code"] in (143, -15, -9)
    # Cancelling again is harmless; a cancelled download can be retried.
    again = await harness.downloads.CancelDownload(
        D.CancelDownloadRequest(id=running.id), metadata=harness.admin
    )
    assert again.download.state == D.DOWNLOAD_STATE_CANCELLED
    harness.steam.add_item(ITEM, files={"a.txt": b"quick"})
    retried = await harness.downloads.RetryDownload(
        D.RetryDownloadRequest(id=running.id), metadata=harness.admin
    )
    assert retried.download.state == D.DOWNLOAD_STATE_QUEUED
    done = await harness.wait_for(running.id)
    assert done.state == D.DOWNLOAD_STATE_SUCCEEDED
    assert done.attempt == 2


async def test_per_key_and_per_account_concurrency(harness: Harness) -> None:
    await harness.start()
    await harness.add_account("gina_we", "pw-gina")
    await harness.add_account("hank_we", "pw-hank")
    harness.steam.add_item(
        ITEM, files={f"f{i}.bin": 100 for i in range(4)}, behaviour={"file_delay": seconds(0.2)}
    )
    limited = await harness.add_key(["download:*"], max_concurrent_downloads=1)
    jobs = [await harness.create(str(ITEM), metadata=limited, skip_cache=True) for _ in range(3)]
    await asyncio.sleep(0.5)
    states = [(await harness.get(job.id)).state for job in jobs]
    assert states.count(D.DOWNLOAD_STATE_QUEUED) >= 2  # waiting, not failed
    for job in jobs:
        assert (await harness.wait_for(job.id)).state == D.DOWNLOAD_STATE_SUCCEEDED
    assert harness.steam.max_overlap() == 1

    # Without a key limit two accounts run two jobs at once, but never two on one account. (Other
    # items: jobs of one item run one after the other, in the item's folder.)
    for number in range(1, 5):
        harness.steam.add_item(
            ITEM + number, files={f"f{i}.bin": 100 for i in range(4)}, behaviour={"file_delay": seconds(0.2)}
        )
    free = [await harness.create(str(ITEM + number), skip_cache=True) for number in range(1, 5)]
    for job in free:
        assert (await harness.wait_for(job.id)).state == D.DOWNLOAD_STATE_SUCCEEDED
    assert harness.steam.max_overlap() == 2
    assert harness.steam.max_overlap(username="gina_we") == 1
    assert harness.steam.max_overlap(username="hank_we") == 1
    login_ids = {run["argv"][run["argv"].index("-loginid") + 1] for run in harness.steam.runs()}
    assert len(login_ids) == 2  # one -loginid per account


async def test_a_live_watcher_sees_progress_before_the_end(harness: Harness) -> None:
    await harness.start()
    await harness.add_account("ivy_we", "pw-ivy")
    harness.steam.add_item(
        ITEM, files={f"f{i}.bin": 1000 for i in range(10)}, behaviour={"file_delay": seconds(0.15)}
    )
    created = await harness.create(str(ITEM))
    stream = harness.downloads.WatchDownload(
        D.WatchDownloadRequest(id=created.id, exclude_logs=True), metadata=harness.admin
    )
    seen_progress_while_running = False
    kinds = []
    async for event in stream:
        kinds.append(event.WhichOneof("event"))
        if event.HasField("progress") and 0 < event.progress.percent < 100:
            current = await harness.get(created.id)
            seen_progress_while_running |= current.state == D.DOWNLOAD_STATE_RUNNING
    assert seen_progress_while_running
    assert "log_line" not in kinds
    assert kinds[-1] == "finished"


async def test_users_see_and_cancel_only_their_own_downloads(harness: Harness) -> None:
    await harness.start()
    mine = await harness.create(str(ITEM))
    user = await harness.admin_api.CreateUser(
        admin_pb2.CreateUserRequest(
            user=admin_pb2.User(email="other@example.test"), password="a long password 1"
        ),
        metadata=harness.admin,
    )
    key = await harness.admin_api.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(
            api_key=admin_pb2.ApiKey(name="other", owner_user_id=user.user.id, scopes=["download:*"])
        ),
        metadata=harness.admin,
    )
    other = (("x-api-key", key.plaintext_key),)
    for call in (
        harness.downloads.GetDownload(D.GetDownloadRequest(id=mine.id), metadata=other),
        harness.downloads.CancelDownload(D.CancelDownloadRequest(id=mine.id), metadata=other),
        harness.downloads.RetryDownload(D.RetryDownloadRequest(id=mine.id), metadata=other),
        harness.downloads.DeleteDownload(D.DeleteDownloadRequest(id=mine.id), metadata=other),
        harness.downloads.FetchArchive(D.FetchArchiveRequest(id=mine.id), metadata=other).read(),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND  # the same answer as for an unknown id
    listed = await harness.downloads.ListDownloads(D.ListDownloadsRequest(), metadata=other)
    assert list(listed.downloads) == []
    own = await harness.create(str(ITEM), metadata=other)
    listed = await harness.downloads.ListDownloads(D.ListDownloadsRequest(), metadata=other)
    assert [download.id for download in listed.downloads] == [own.id]
    everything = await harness.downloads.ListDownloads(D.ListDownloadsRequest(), metadata=harness.admin)
    assert {download.id for download in everything.downloads} >= {mine.id, own.id}
    assert (await harness.get(mine.id)).state != D.DOWNLOAD_STATE_CANCELLED  # untouched
    error = await rpc_error(
        harness.downloads.CreateDownload(
            D.CreateDownloadRequest(url_or_id="1", steam_account_id="01jd3x5k8q2m7n4p6r9s0t1v2w"),
            metadata=other,
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_missing_binary_fails_the_job_clearly_and_status_says_so(
    harness: Harness, tmp_path: Path
) -> None:
    await harness.start(depotdownloader_path=tmp_path / "no-such-DepotDownloader", max_attempts=1)
    await harness.add_account("jack_we", "pw-jack")
    done = await harness.wait_for((await harness.create(str(ITEM))).id)
    assert D.FailureReason.Name(done.failure.reason) == "FAILURE_REASON_DOWNLOADER_UNAVAILABLE"
    assert "not found" in done.failure.message
    assert str(tmp_path) not in done.failure.message  # server paths stay on the server
    status = await status_pb2_grpc.StatusServiceStub(harness.channel).GetStatus(
        status_pb2.GetStatusRequest(), metadata=harness.admin
    )
    assert not status.downloader.available


async def test_no_account_at_all_fails_with_a_clear_reason(harness: Harness) -> None:
    await harness.start()
    done = await harness.wait_for((await harness.create(str(ITEM))).id)
    assert D.FailureReason.Name(done.failure.reason) == "FAILURE_REASON_NO_ACCOUNT_AVAILABLE"
    assert done.failure.retryable


async def test_retention_removes_old_archives_and_fetch_says_why(harness: Harness) -> None:
    now = [datetime.now(UTC)]
    server = await harness.start(archive_max_age_hours=1.0, clock=lambda: now[0])
    await harness.add_account("kim_we", "pw-kim")
    harness.steam.add_item(ITEM, files={"a.txt": b"a"})
    created = await harness.create(str(ITEM))
    done = await harness.wait_for(created.id)
    assert done.archive.expire_time.ToDatetime(tzinfo=UTC) > now[0]
    assert await server.worker.apply_retention() == 0
    now[0] += timedelta(hours=2)
    assert await server.worker.apply_retention() == 1
    error = await rpc_error(
        harness.downloads.FetchArchive(D.FetchArchiveRequest(id=created.id), metadata=harness.admin).read()
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "retention" in (error.details() or "")
    assert (await harness.get(created.id)).archive.state == D.ARCHIVE_STATE_EXPIRED
    assert not list((harness.data_dir / "storage" / "archives").glob("*.zip"))


async def test_a_graceful_stop_hands_running_jobs_back(harness: Harness) -> None:
    server = await harness.start()
    await harness.add_account("lee_we", "pw-lee")
    harness.steam.add_item(
        ITEM, files={f"f{i}.bin": 1000 for i in range(30)}, behaviour={"file_delay": seconds(0.2)}
    )
    created = await harness.create(str(ITEM))
    await harness.wait_for(created.id, {D.DOWNLOAD_STATE_RUNNING})
    await asyncio.sleep(0.5)
    await server.stop(grace=0)
    harness.servers.remove(server)
    await harness.start()
    harness.steam.add_item(ITEM, files={"a.txt": b"quick"})
    done = await harness.wait_for(created.id)
    assert done.state == D.DOWNLOAD_STATE_SUCCEEDED
    assert done.attempt == 1  # the interrupted attempt did not count
    runs = harness.steam.runs()
    assert len(runs) == 2
    assert runs[0]["end"] <= runs[1]["start"]
    # The item changed in between: the zip holds the new version only, none of the first run's
    # pre-allocated (zero-filled) files.
    data, _ = await harness.fetch(created.id)
    assert unzip(data) == {"a.txt": b"quick"}


@pytest.mark.slow
async def test_a_killed_server_loses_nothing_and_the_job_runs_once(harness: Harness, tmp_path: Path) -> None:
    """kill -9 of the instance mid-job: its DepotDownloader dies with it, another instance takes the
    job after the lease expires, and it completes once."""
    await harness.start()  # the admin API for setting up; its engine has nothing to claim yet
    await harness.add_account("max_we", "pw-max")
    harness.steam.add_item(
        ITEM, files={f"f{i}.bin": 1000 for i in range(40)}, behaviour={"file_delay": seconds(0.2)}
    )
    await harness.servers[0].worker.stop()  # this instance must not take the job
    port_file = tmp_path / "port"
    env = {
        **os.environ,
        "WALLWHALE_DATABASE_URL": harness.database_url.replace("+aiosqlite", "").replace("+psycopg", ""),
        "WALLWHALE_DATA_DIR": str(harness.data_dir),
        "WALLWHALE_GRPC_PORT": "0",
        "WALLWHALE_METRICS_PORT": "-1",
        "WALLWHALE_DEPOTDOWNLOADER_PATH": str(harness.steam.executable),
        "WALLWHALE_JOB_LEASE_SECONDS": "2",
        "WALLWHALE_QUEUE_POLL_INTERVAL_SECONDS": "0.1",
        "WALLWHALE_MIGRATE_ON_START": "false",
        "WALLWHALE_STEAM_WEB_API_URL": "",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wallwhale.cli",
        "serve",
        "--port-file",
        str(port_file),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        created = await harness.create(str(ITEM))
        await harness.wait_for_progress(created.id)
        process.send_signal(signal.SIGKILL)
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    [first] = harness.steam.runs()
    for _ in range(50):
        if not alive(first["pid"]):
            break
        await asyncio.sleep(0.05)
    assert not alive(first["pid"]), "DepotDownloader outlived its server"
    await harness.start()  # a new instance: it takes the job once the lease has expired
    harness.steam.add_item(ITEM, files={f"f{i}.bin": 1000 for i in range(40)})  # same item, no delay
    done = await harness.wait_for(created.id, limit=30)
    assert done.state == D.DOWNLOAD_STATE_SUCCEEDED
    assert done.attempt == 2
    assert len(harness.steam.runs()) == 2  # the first died before the second started (checked above)
    data, _ = await harness.fetch(created.id)
    assert unzip(data) == harness.steam.expected_files(ITEM)


async def test_quotas_count_created_downloads_and_reset_at_the_utc_day(harness: Harness) -> None:
    now = [datetime(2026, 11, 24, 23, 59, 58, tzinfo=UTC)]
    await harness.start(clock=lambda: now[0])
    key = await harness.add_key(["download:*"], daily_download_quota=2)
    first = await harness.create("1", metadata=key, request_id="q-1")
    await harness.create("2", metadata=key)
    replay = await harness.create("1", metadata=key, request_id="q-1")  # a replay creates nothing
    assert replay.id == first.id
    error = await rpc_error(
        harness.downloads.CreateDownload(D.CreateDownloadRequest(url_or_id="3"), metadata=key)
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(error).reason == "DAILY_QUOTA_EXCEEDED"
    status = rpc_status.from_call(error)
    assert status is not None
    kinds = {detail.type_url.rsplit("/", 1)[1] for detail in status.details}
    assert {"google.rpc.QuotaFailure", "google.rpc.RetryInfo"} <= kinds
    listed = await harness.downloads.ListDownloads(
        D.ListDownloadsRequest(workshop_id=3), metadata=harness.admin
    )
    assert list(listed.downloads) == []  # the refused download was not kept
    now[0] = datetime(2026, 11, 25, 0, 0, 0, tzinfo=UTC)  # a new UTC day
    assert (await harness.create("3", metadata=key)).workshop_id == 3


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_instances_on_postgresql_hear_each_other_at_once(harness: Harness) -> None:
    """A job created on B starts on A without waiting for A's poll; B's watcher sees A's progress
    live; a cancel sent to B stops A's process. Polls and heartbeats are set to a minute, so only
    LISTEN/NOTIFY can explain answers within seconds."""
    slow = {"queue_poll_interval_seconds": 60.0, "watch_heartbeat_seconds": 60.0}
    worker = await harness.start(**slow)
    await harness.add_account("nina_we", "pw-nina")
    harness.steam.add_item(
        ITEM, files={f"f{i}.bin": 1000 for i in range(30)}, behaviour={"file_delay": seconds(0.2)}
    )
    await harness.start(max_concurrent_downloads=0, **slow)  # B: answers calls, runs no jobs
    created = await harness.create(str(ITEM))
    assert (await harness.wait_for_progress(created.id, limit=10)).steam_account_id
    assert worker.worker.jobs  # it runs on A

    stream = harness.downloads.WatchDownload(
        D.WatchDownloadRequest(
            id=created.id, after_sequence=(await harness.get(created.id)).last_event_sequence
        ),
        metadata=harness.admin,
    )
    live = 0
    async for event in stream:
        live += event.HasField("progress")
        if live == 3:
            break
    stream.cancel()
    response = await harness.downloads.CancelDownload(
        D.CancelDownloadRequest(id=created.id), metadata=harness.admin
    )
    assert response.download.state in (D.DOWNLOAD_STATE_RUNNING, D.DOWNLOAD_STATE_CANCELLED)
    done = await harness.wait_for(created.id, limit=10)
    assert done.state == D.DOWNLOAD_STATE_CANCELLED
    [run] = harness.steam.runs()
    assert not alive(run["pid"])


async def test_steam_guard_codes_are_answered_through_the_api(harness: Harness) -> None:
    await harness.start()
    account_id = await harness.add_account("olga_we", "pw-olga", guard="email", guard_code="G7K2Q")
    harness.steam.add_item(ITEM, files={"a.txt": b"guarded"})
    nothing = await rpc_error(
        harness.admin_api.SubmitSteamGuardCode(
            admin_pb2.SubmitSteamGuardCodeRequest(id=account_id, code="G7K2Q"), metadata=harness.admin
        )
    )
    assert nothing.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(nothing).reason == "NO_STEAM_GUARD_PENDING"

    created = await harness.create(str(ITEM))
    waiting = await harness.wait_for(created.id, {D.DOWNLOAD_STATE_WAITING_FOR_STEAM_GUARD})
    assert waiting.steam_guard.kind == D.STEAM_GUARD_KIND_EMAIL_CODE
    assert waiting.steam_guard.email_hint == "a***@example.com"
    assert waiting.steam_guard.steam_account_id == account_id
    assert not waiting.steam_guard.previous_code_rejected

    async def submit(code: str) -> None:
        await harness.admin_api.SubmitSteamGuardCode(
            admin_pb2.SubmitSteamGuardCodeRequest(id=account_id, code=code), metadata=harness.admin
        )

    bad = await rpc_error(
        harness.admin_api.SubmitSteamGuardCode(
            admin_pb2.SubmitSteamGuardCodeRequest(id=account_id, code="no!"), metadata=harness.admin
        )
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    await submit("WRONG1")
    again = await harness.wait_until(created.id, lambda d: d.steam_guard.previous_code_rejected, 10)
    assert again.state == D.DOWNLOAD_STATE_WAITING_FOR_STEAM_GUARD
    await submit("G7K2Q")
    done = await harness.wait_for(created.id)
    assert done.state == D.DOWNLOAD_STATE_SUCCEEDED, describe(await harness.watch(created.id))
    history = describe(await harness.watch(created.id))
    assert "G7K2Q" not in history
    assert "WRONG1" not in history
    assert "WAITING_FOR_STEAM_GUARD" in history
    assert history.count("Steam Guard accepted") == 1  # not after the rejected code


async def test_an_unanswered_steam_guard_prompt_times_out(harness: Harness) -> None:
    await harness.start(steam_guard_timeout_seconds=1.0, max_attempts=1)
    await harness.add_account("pete_we", "pw-pete", guard="authenticator")
    done = await harness.wait_for((await harness.create(str(ITEM))).id)
    assert D.FailureReason.Name(done.failure.reason) == "FAILURE_REASON_STEAM_GUARD_TIMEOUT"
    [run] = harness.steam.runs()
    assert not alive(run["pid"])


async def test_a_mobile_confirmation_waits_for_the_phone(harness: Harness) -> None:
    await harness.start()
    await harness.add_account("quin_we", "pw-quin", guard="mobile")
    harness.steam.add_item(ITEM, files={"a.txt": b"approved"})
    created = await harness.create(str(ITEM))
    waiting = await harness.wait_for(created.id, {D.DOWNLOAD_STATE_WAITING_FOR_STEAM_GUARD})
    assert waiting.steam_guard.kind == D.STEAM_GUARD_KIND_MOBILE_CONFIRMATION
    harness.steam.approve("quin_we")
    assert (await harness.wait_for(created.id)).state == D.DOWNLOAD_STATE_SUCCEEDED


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_steam_guard_code_sent_to_another_instance_reaches_the_prompt(harness: Harness) -> None:
    worker = await harness.start()
    account_id = await harness.add_account("rosa_we", "pw-rosa", guard="authenticator", guard_code="M3N4P")
    harness.steam.add_item(ITEM, files={"a.txt": b"remote"})
    await harness.start(max_concurrent_downloads=0)  # B: the admin talks to it; the job runs on A
    created = await harness.create(str(ITEM))
    await harness.wait_for(created.id, {D.DOWNLOAD_STATE_WAITING_FOR_STEAM_GUARD})
    assert worker.worker.jobs
    await harness.admin_api.SubmitSteamGuardCode(
        admin_pb2.SubmitSteamGuardCodeRequest(id=account_id, code="M3N4P"), metadata=harness.admin
    )
    assert (await harness.wait_for(created.id, limit=10)).state == D.DOWNLOAD_STATE_SUCCEEDED


async def test_a_downloader_killed_from_outside_counts_as_a_crash(harness: Harness) -> None:
    await harness.start(max_attempts=1)
    await harness.add_account("sam_we", "pw-sam")
    harness.steam.add_item(
        ITEM, files={f"f{i}.bin": 1000 for i in range(30)}, behaviour={"file_delay": seconds(0.2)}
    )
    created = await harness.create(str(ITEM))
    await harness.wait_for_progress(created.id)
    [run] = harness.steam.runs()
    os.kill(run["pid"], signal.SIGTERM)  # not us: an operator, the OOM killer
    done = await harness.wait_for(created.id)
    assert D.FailureReason.Name(done.failure.reason) == "FAILURE_REASON_PROCESS_CRASHED"
    assert "143" in done.failure.message
    assert done.failure.retryable


async def test_a_clock_step_does_not_make_an_instance_run_its_own_job_twice(harness: Harness) -> None:
    offset = [timedelta()]
    await harness.start(clock=lambda: datetime.now(UTC) + offset[0])
    await harness.add_account("tina_we", "pw-tina")
    harness.steam.add_item(
        ITEM, files={f"f{i}.bin": 1000 for i in range(20)}, behaviour={"file_delay": seconds(0.1)}
    )
    created = await harness.create(str(ITEM))
    await harness.wait_for_progress(created.id)
    offset[0] = timedelta(minutes=2)  # every lease this instance wrote now looks expired to it
    done = await harness.wait_for(created.id)
    assert done.state == D.DOWNLOAD_STATE_SUCCEEDED, describe(await harness.watch(created.id))
    assert done.attempt == 1
    assert harness.steam.max_overlap() == 1
    assert len(harness.steam.runs()) == 1


async def test_watching_past_the_newest_event_is_refused_before_any_message(harness: Harness) -> None:
    await harness.start()
    created = await harness.create(str(ITEM))
    stream = harness.downloads.WatchDownload(
        D.WatchDownloadRequest(id=created.id, after_sequence=created.last_event_sequence + 100),
        metadata=harness.admin,
    )
    error = await rpc_error(stream.read())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "after_sequence" in (error.details() or "")
