"""Item details from Steam's Web API before a job is queued, and the archive cache by content handle.

The server asks tests/fakes/webapi.py (a real HTTP server answering in Steam's format from the fake
Steam world, where an item's content handle is its manifest id) and runs the test DepotDownloader.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from tests.fakes.webapi import FakeWebApi
from tests.support.harness import Harness, describe, rpc_error, unzip
from tests.support.server import error_info
from wallwhale.v1 import download_pb2, status_pb2, status_pb2_grpc

D = download_pb2
ITEM = 3001234567
OTHER_APP = 250900  # The Binding of Isaac: Rebirth, an app with a workshop


@pytest.fixture
def web(harness: Harness) -> AsyncIterator[FakeWebApi]:
    with FakeWebApi(harness.steam) as server:
        yield server


async def start(harness: Harness, web: FakeWebApi, **overrides: Any) -> None:
    await harness.start(steam_web_api_url=web.base_url, steam_web_api_retry_seconds=0, **overrides)


def downloader_runs(harness: Harness) -> list[dict[str, Any]]:
    return [run for run in harness.steam.runs() if "-pubfile" in run["argv"]]


def cache_hits() -> float:
    return REGISTRY.get_sample_value("wallwhale_archive_cache_lookups_total", {"result": "hit"}) or 0.0


async def test_a_download_records_what_steam_says_about_its_item(harness: Harness, web: FakeWebApi) -> None:
    await start(harness, web)
    await harness.add_account("alice_we", "pw", owns=[OTHER_APP])
    harness.steam.add_item(
        ITEM, app_id=OTHER_APP, title="Neon Rain", files={"mod.xml": b"<mod/>", "a.png": 900}
    )
    created = await harness.create(str(ITEM))  # no app_id: Steam's consumer_app_id is used
    manifest = harness.steam.manifest(ITEM)
    assert created.app_id == OTHER_APP
    assert created.item.title == "Neon Rain"
    assert created.item.app_id == OTHER_APP
    assert created.item.content_handle == manifest["id"]
    assert created.item.file_size == 906
    assert created.item.update_time.seconds == manifest["created"]
    assert created.item.preview_url.startswith("https://")
    done = await harness.wait_for(created.id)
    assert done.state == D.DOWNLOAD_STATE_SUCCEEDED, describe(await harness.watch(created.id))
    [run] = downloader_runs(harness)
    assert run["argv"][run["argv"].index("-app") + 1] == str(OTHER_APP)
    assert done.archive.filename == f"{ITEM}-neon-rain.zip"
    assert web.asked() == [ITEM]

    # An app that contradicts Steam is refused, naming the field.
    error = await rpc_error(
        harness.downloads.CreateDownload(
            D.CreateDownloadRequest(url_or_id=str(ITEM), app_id=431960), metadata=harness.admin
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "app_id" in (error.details() or "")
    assert str(OTHER_APP) in (error.details() or "")


@pytest.mark.parametrize(
    ("case", "setup", "code", "reason", "words"),
    [
        ("unknown", {}, grpc.StatusCode.NOT_FOUND, "WORKSHOP_ITEM_UNAVAILABLE", "no public workshop item"),
        (
            "private",
            {"web": {"result": 9}},
            grpc.StatusCode.NOT_FOUND,
            "WORKSHOP_ITEM_UNAVAILABLE",
            "private",
        ),
        (
            "banned",
            {"web": {"banned": 1, "ban_reason": "Copyright claim"}},
            grpc.StatusCode.FAILED_PRECONDITION,
            "WORKSHOP_ITEM_UNAVAILABLE",
            "banned on Steam: Copyright claim",
        ),
        (
            "friends only",
            {"web": {"visibility": 1}},
            grpc.StatusCode.FAILED_PRECONDITION,
            "WORKSHOP_ITEM_UNAVAILABLE",
            "friends-only",
        ),
        ("collection", {}, grpc.StatusCode.FAILED_PRECONDITION, "WORKSHOP_ITEM_IS_COLLECTION", "CreateBatch"),
    ],
    ids=lambda value: value if isinstance(value, str) and " " not in value else None,
)
async def test_items_that_cannot_be_downloaded_are_refused_before_anything_is_spent(
    harness: Harness,
    web: FakeWebApi,
    case: str,
    setup: dict[str, Any],
    code: grpc.StatusCode,
    reason: str,
    words: str,
) -> None:
    await start(harness, web)
    await harness.add_account("alice_we", "pw")
    key = await harness.add_key(["download:read", "download:write"], daily_download_quota=5)
    if case == "collection":
        harness.steam.add_item(ITEM + 1)
        harness.steam.add_collection(ITEM, [ITEM + 1])
    elif case != "unknown":
        harness.steam.add_item(ITEM, **setup)
    error = await rpc_error(
        harness.downloads.CreateDownload(D.CreateDownloadRequest(url_or_id=str(ITEM)), metadata=key)
    )
    assert error.code() == code, error.details()
    assert error_info(error).reason == reason
    assert words in (error.details() or "")
    listed = await harness.downloads.ListDownloads(D.ListDownloadsRequest(), metadata=harness.admin)
    assert listed.total_size == 0
    assert downloader_runs(harness) == []


async def test_without_the_web_api_jobs_run_and_details_come_before_the_run(
    harness: Harness, web: FakeWebApi
) -> None:
    # This instance queues but runs nothing, so the jobs wait while Steam's Web API is down.
    await start(harness, web, max_concurrent_downloads=0)
    await harness.add_account("alice_we", "pw")
    harness.steam.add_item(ITEM, title="Storm")
    web.mode = "down"
    kept = await harness.create(str(ITEM))
    gone = await harness.create(str(ITEM + 99))  # Steam does not know it: found out later
    assert not kept.HasField("item")
    assert kept.app_id == 431960
    status = await status_pb2_grpc.StatusServiceStub(harness.channel).GetStatus(
        status_pb2.GetStatusRequest(), metadata=harness.admin
    )
    assert not status.steam_web_api.reachable
    assert "503" in status.steam_web_api.error

    web.mode = "ok"
    await start(harness, web)  # a second instance that runs jobs
    done = await harness.wait_for(kept.id)
    assert done.state == D.DOWNLOAD_STATE_SUCCEEDED, describe(await harness.watch(kept.id))
    assert done.item.title == "Storm"
    assert done.item.content_handle == harness.steam.manifest(ITEM)["id"]
    failed = await harness.wait_for(gone.id)
    assert failed.state == D.DOWNLOAD_STATE_FAILED
    assert failed.failure.reason == D.FAILURE_REASON_ITEM_NOT_FOUND
    assert not failed.failure.retryable
    assert [run["argv"][run["argv"].index("-pubfile") + 1] for run in downloader_runs(harness)] == [str(ITEM)]
    status = await status_pb2_grpc.StatusServiceStub(harness.channel).GetStatus(
        status_pb2.GetStatusRequest(), metadata=harness.admin
    )
    assert status.steam_web_api.reachable
    assert status.steam_web_api.last_success_time.seconds > 0


async def test_the_same_content_is_served_from_the_cache_without_a_run(
    harness: Harness, web: FakeWebApi
) -> None:
    await start(harness, web)
    await harness.add_account("alice_we", "pw")
    harness.steam.add_item(ITEM, files={"scene.pkg": 200_000, "project.json": b"{}"})
    first = await harness.wait_for((await harness.create(str(ITEM))).id)
    assert first.state == D.DOWNLOAD_STATE_SUCCEEDED
    original, _ = await harness.fetch(first.id)
    hits = cache_hits()

    # Another client, same content: finished at once, no DepotDownloader, the same bytes.
    other = await harness.add_key(["download:read", "download:write"])
    cached = (
        await harness.downloads.CreateDownload(D.CreateDownloadRequest(url_or_id=str(ITEM)), metadata=other)
    ).download
    assert cached.state == D.DOWNLOAD_STATE_SUCCEEDED
    assert cached.from_cache
    assert cached.archive.sha256 == first.archive.sha256
    assert len(downloader_runs(harness)) == 1
    assert cache_hits() == hits + 1
    call = harness.downloads.FetchArchive(D.FetchArchiveRequest(id=cached.id), metadata=other)
    assert b"".join([chunk.data async for chunk in call]) == original
    events = await harness.watch(cached.id)
    assert events[-1].HasField("finished")
    assert any("served from the cache" in event.log_line.line for event in events)

    # skip_cache downloads again.
    fresh = await harness.wait_for((await harness.create(str(ITEM), skip_cache=True)).id)
    assert fresh.state == D.DOWNLOAD_STATE_SUCCEEDED
    assert not fresh.from_cache
    assert len(downloader_runs(harness)) == 2

    # A changed item has a new content handle: it is downloaded, and the zip holds the new files.
    harness.steam.add_item(ITEM, files={"scene.pkg": 210_000, "project.json": b'{"v": 2}'})
    changed = await harness.create(str(ITEM))
    assert changed.state == D.DOWNLOAD_STATE_QUEUED
    assert changed.item.content_handle != first.item.content_handle
    changed = await harness.wait_for(changed.id)
    assert not changed.from_cache
    data, _ = await harness.fetch(changed.id)
    assert unzip(data) == harness.steam.expected_files(ITEM)
    assert len(downloader_runs(harness)) == 3


async def test_a_shared_archive_stays_until_its_last_download_goes(harness: Harness, web: FakeWebApi) -> None:
    await start(harness, web)
    await harness.add_account("alice_we", "pw")
    harness.steam.add_item(ITEM)
    first = await harness.wait_for((await harness.create(str(ITEM))).id)
    copy = await harness.create(str(ITEM))
    assert copy.from_cache
    storage = harness.data_dir / "storage"
    archives = {path for path in storage.rglob("*.zip")}
    assert len(archives) == 1

    await harness.downloads.DeleteDownload(D.DeleteDownloadRequest(id=first.id), metadata=harness.admin)
    assert {path for path in storage.rglob("*.zip")} == archives
    data, headers = await harness.fetch(copy.id)
    assert hashlib.sha256(data).hexdigest() == copy.archive.sha256 == headers["x-archive-sha256"]

    await harness.downloads.DeleteDownload(D.DeleteDownloadRequest(id=copy.id), metadata=harness.admin)
    assert not any(storage.rglob("*.zip"))


async def test_a_job_queued_behind_the_same_item_is_served_by_its_archive(
    harness: Harness, web: FakeWebApi
) -> None:
    await start(harness, web)
    await harness.add_account("alice_we", "pw")  # one account: one DepotDownloader session at a time
    harness.steam.add_item(ITEM, files={"scene.pkg": 400_000})
    first = await harness.create(str(ITEM))
    second = await harness.create(str(ITEM))  # no archive yet: queued, not cached
    assert second.state == D.DOWNLOAD_STATE_QUEUED
    first, second = await harness.wait_for(first.id), await harness.wait_for(second.id)
    assert first.state == second.state == D.DOWNLOAD_STATE_SUCCEEDED
    assert not first.from_cache
    assert second.from_cache, describe(await harness.watch(second.id))
    assert second.archive.sha256 == first.archive.sha256
    assert len(downloader_runs(harness)) == 1


async def test_an_updated_item_is_downloaded_incrementally_in_its_folder(
    harness: Harness, web: FakeWebApi
) -> None:
    await start(harness, web)
    await harness.add_account("alice_we", "pw")
    harness.steam.add_item(ITEM, files={"big.pkg": 3_000_000, "project.json": b"v1", "old.txt": b"gone"})
    first = await harness.wait_for((await harness.create(str(ITEM))).id)
    assert first.state == D.DOWNLOAD_STATE_SUCCEEDED
    first_zip, _ = await harness.fetch(first.id)

    harness.steam.add_item(ITEM, files={"big.pkg": 3_000_000, "project.json": b"v2"})
    second = await harness.wait_for((await harness.create(str(ITEM))).id)
    assert second.state == D.DOWNLOAD_STATE_SUCCEEDED
    assert not second.from_cache
    data, _ = await harness.fetch(second.id)
    assert (
        unzip(data)
        == harness.steam.expected_files(ITEM)
        == {
            "big.pkg": unzip(first_zip)["big.pkg"],
            "project.json": b"v2",
        }
    )
    # Only the changed file was fetched, the removed one deleted, both runs in the item's folder.
    lines = [event.log_line.line for event in await harness.watch(second.id) if event.HasField("log_line")]
    [fetched] = [line for line in lines if line.startswith(f"Depot {431960} - Downloaded ")]
    assert int(fetched.split()[4]) < 1000, fetched
    assert any(line.startswith("Deleted ") and line.endswith("old.txt") for line in lines)
    dirs = {run["argv"][run["argv"].index("-dir") + 1] for run in downloader_runs(harness)}
    assert len(dirs) == 1
    # The first download's zip is its own: still the first version.
    again, _ = await harness.fetch(first.id)
    assert again == first_zip

    # The folder goes with the item's last download.
    for download in (first, second):
        await harness.downloads.DeleteDownload(
            D.DeleteDownloadRequest(id=download.id), metadata=harness.admin
        )
    assert not Path(dirs.pop()).exists()  # noqa: ASYNC240
