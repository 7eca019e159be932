"""Watches against the real server (both databases), the simulated Steam Web API (tests/fakes/webapi.py
answering from the fake Steam world) and the test DepotDownloader: an item updated on Steam is
downloaded again with its new content, a collection gains and loses items, an item goes private,
and Steam failing backs the checks off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from tests.fakes.webapi import DETAILS_PATH, FakeWebApi
from tests.support.database import add_key
from tests.support.harness import Harness, rpc_error, unzip
from tests.support.server import Metadata, error_info
from wallwhale.v1 import admin_pb2, download_pb2, watch_pb2, watch_pb2_grpc

W = watch_pb2
ITEM = 3100000001
COLLECTION = 3100000900
A, B, C = 3100000011, 3100000012, 3100000013


@pytest.fixture
def web(harness: Harness) -> Iterator[FakeWebApi]:
    with FakeWebApi(harness.steam) as server:
        yield server


@pytest.fixture
async def api(harness: Harness, web: FakeWebApi) -> AsyncIterator[watch_pb2_grpc.WatchServiceStub]:
    await start(harness, web)
    await harness.add_account("watcher", "pw")
    return watch_pb2_grpc.WatchServiceStub(harness.channel)


async def start(harness: Harness, web: FakeWebApi, **overrides: Any) -> None:
    settings: dict[str, Any] = {
        "steam_web_api_url": web.base_url,
        "steam_web_api_retry_seconds": 0,
        "watch_min_interval_seconds": 1,
        "watch_default_interval_seconds": 1,
        "watch_poll_interval_seconds": 0.1,
        "watch_retry_base_seconds": 0.5,
        "watch_keep_versions": 1,
    }
    await harness.start(**(settings | overrides))


async def create(
    api: watch_pb2_grpc.WatchServiceStub, harness: Harness, url_or_id: str, seconds: int = 1, **fields: Any
) -> W.Watch:
    response = await api.CreateWatch(
        W.CreateWatchRequest(url_or_id=url_or_id, interval=duration_pb2.Duration(seconds=seconds), **fields),
        metadata=harness.admin,
    )
    return response.watch


async def get(api: watch_pb2_grpc.WatchServiceStub, harness: Harness, watch_id: str) -> W.Watch:
    return (await api.GetWatch(W.GetWatchRequest(id=watch_id), metadata=harness.admin)).watch


async def versions(
    api: watch_pb2_grpc.WatchServiceStub, harness: Harness, watch_id: str
) -> list[W.WatchVersion]:
    response = await api.ListWatchVersions(
        W.ListWatchVersionsRequest(watch_id=watch_id), metadata=harness.admin
    )
    return list(reversed(response.versions))  # oldest first


async def until(
    api: watch_pb2_grpc.WatchServiceStub,
    harness: Harness,
    watch_id: str,
    predicate: Callable[[W.Watch], bool],
    limit: float = 30.0,
) -> W.Watch:
    deadline = time.monotonic() + limit
    watch = await get(api, harness, watch_id)
    while not predicate(watch):
        assert time.monotonic() < deadline, f"gave up waiting; the watch is {watch}"
        await asyncio.sleep(0.1)
        watch = await get(api, harness, watch_id)
    return watch


def changes(found: list[W.WatchVersion]) -> list[tuple[str, int]]:
    return [
        (W.WatchChange.Name(version.change).removeprefix("WATCH_CHANGE_"), version.workshop_id)
        for version in found
    ]


async def succeeded(harness: Harness, download_id: str) -> download_pb2.Download:
    download = await harness.wait_for(download_id)
    assert download.state == download_pb2.DOWNLOAD_STATE_SUCCEEDED, download
    return download


async def test_an_item_updated_on_steam_is_downloaded_again_with_its_new_content(
    harness: Harness, web: FakeWebApi, api: watch_pb2_grpc.WatchServiceStub
) -> None:
    harness.steam.add_item(ITEM, title="Old", files={"scene.json": b"version 1", "a.pkg": 5_000})
    watch = await create(api, harness, f"https://steamcommunity.com/sharedfiles/filedetails/?id={ITEM}")
    assert (watch.kind, watch.state, watch.title, watch.interval.seconds) == (
        W.WATCH_KIND_ITEM,
        W.WATCH_STATE_ACTIVE,
        "Old",
        1,
    )
    first = watch.items[0].download_id
    assert first
    assert watch.items[0].content_handle == harness.steam.manifest(ITEM)["id"]
    assert unzip((await harness.fetch((await succeeded(harness, first)).id))[0])["scene.json"] == b"version 1"
    checks_before = len(web.asked(DETAILS_PATH))

    harness.steam.add_item(ITEM, title="New", files={"scene.json": b"version 2", "a.pkg": 5_000})
    new_handle = harness.steam.manifest(ITEM)["id"]
    watch = await until(api, harness, watch.id, lambda found: found.items[0].download_id != first)
    second = watch.items[0].download_id
    assert (watch.items[0].content_handle, watch.items[0].title) == (new_handle, "New")
    assert (
        unzip((await harness.fetch((await succeeded(harness, second)).id))[0])["scene.json"] == b"version 2"
    )

    found = await versions(api, harness, watch.id)
    assert changes(found) == [("FIRST", ITEM), ("UPDATED", ITEM)]
    assert (found[1].download_id, found[1].content_handle, found[1].title) == (second, new_handle, "New")
    # The checks went on meanwhile, each one question about the item, and queued nothing more.
    await asyncio.sleep(1.5)
    assert len(web.asked(DETAILS_PATH)) > checks_before + 1
    assert changes(await versions(api, harness, watch.id)) == [("FIRST", ITEM), ("UPDATED", ITEM)]
    # watch_keep_versions=1: the first version's archive made room for the second.
    old = await harness.get(first)
    assert old.archive.state == download_pb2.ARCHIVE_STATE_EXPIRED, old
    assert (await harness.get(second)).archive.state == download_pb2.ARCHIVE_STATE_AVAILABLE


async def test_a_collection_gaining_and_losing_items(
    harness: Harness, api: watch_pb2_grpc.WatchServiceStub
) -> None:
    for item in (A, B, C):
        harness.steam.add_item(item, files={"f.txt": str(item).encode()})
    harness.steam.add_collection(COLLECTION, [A, B], title="Server mods")
    watch = await create(api, harness, str(COLLECTION), delete_removed_downloads=True)
    assert (watch.kind, watch.title, [item.workshop_id for item in watch.items]) == (
        W.WATCH_KIND_COLLECTION,
        "Server mods",
        [A, B],
    )
    made = {item.workshop_id: item.download_id for item in watch.items}
    for download_id in made.values():
        await succeeded(harness, download_id)

    harness.steam.add_collection(COLLECTION, [B, C], title="Server mods")
    watch = await until(
        api, harness, watch.id, lambda found: {item.workshop_id for item in found.items} == {B, C}
    )
    found = await versions(api, harness, watch.id)
    assert changes(found)[2:] == [("ADDED", C), ("REMOVED", A)]
    added, removed = found[2], found[3]
    assert unzip((await harness.fetch((await succeeded(harness, added.download_id)).id))[0]) == {
        "f.txt": str(C).encode()
    }
    assert "1 download(s)" in removed.detail
    error = await rpc_error(
        harness.downloads.GetDownload(download_pb2.GetDownloadRequest(id=made[A]), metadata=harness.admin)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND  # delete_removed_downloads: A's download went
    assert (await harness.get(made[B])).state == download_pb2.DOWNLOAD_STATE_SUCCEEDED  # B stays


async def test_an_item_going_private_marks_the_watch_and_does_not_spin(
    harness: Harness, web: FakeWebApi, api: watch_pb2_grpc.WatchServiceStub
) -> None:
    harness.steam.add_item(ITEM, files={"a.txt": b"a"})
    watch = await create(api, harness, str(ITEM))
    await succeeded(harness, watch.items[0].download_id)

    harness.steam.add_item(ITEM, files={"a.txt": b"a"}, web={"result": 9})
    watch = await until(api, harness, watch.id, lambda found: found.state == W.WATCH_STATE_UNAVAILABLE)
    assert "private" in watch.state_message
    assert not watch.items[0].available
    asked = len(web.asked(DETAILS_PATH))
    await asyncio.sleep(2.5)  # more checks at the interval, nothing recorded or queued again
    assert len(web.asked(DETAILS_PATH)) > asked
    assert changes(await versions(api, harness, watch.id)) == [("FIRST", ITEM), ("UNAVAILABLE", ITEM)]
    listed = await harness.downloads.ListDownloads(
        download_pb2.ListDownloadsRequest(), metadata=harness.admin
    )
    assert len(listed.downloads) == 1

    harness.steam.add_item(ITEM, files={"a.txt": b"a"})  # public again, the same content
    watch = await until(api, harness, watch.id, lambda found: found.state == W.WATCH_STATE_ACTIVE)
    assert watch.items[0].available
    assert watch.state_message == ""
    assert changes(await versions(api, harness, watch.id))[-1] == ("AVAILABLE", ITEM)


async def test_steam_failing_backs_the_checks_off(
    harness: Harness, web: FakeWebApi, api: watch_pb2_grpc.WatchServiceStub
) -> None:
    harness.steam.add_item(ITEM, files={"a.txt": b"a"})
    watch = await create(api, harness, str(ITEM), seconds=8)
    await succeeded(harness, watch.items[0].download_id)
    web.mode = "down"
    await pause(api, harness, watch.id, True)
    await pause(api, harness, watch.id, False)  # resumed: checked at once

    seen: list[W.Watch] = []
    for failures in (1, 2, 3):
        found = await until(api, harness, watch.id, lambda found, n=failures: found.consecutive_failures >= n)
        seen.append(found)
    for found in seen:
        waited = found.next_check_time.ToDatetime() - found.last_check_time.ToDatetime()
        # 0.5 s, doubled per failure before, never more than the interval; ±10 % jitter.
        expected = min(8.0, 0.5 * 2 ** (found.consecutive_failures - 1))
        assert waited.total_seconds() >= expected * 0.89, found
        assert "503" in found.last_error
    assert seen[-1].state == W.WATCH_STATE_ACTIVE  # Steam's trouble is not the item's
    web.mode = "ok"
    found = await until(api, harness, watch.id, lambda found: found.consecutive_failures == 0, limit=20)
    assert found.last_error == ""
    assert changes(await versions(api, harness, watch.id)) == [("FIRST", ITEM)]


async def pause(
    api: watch_pb2_grpc.WatchServiceStub, harness: Harness, watch_id: str, paused: bool
) -> W.Watch:
    response = await api.UpdateWatch(
        W.UpdateWatchRequest(
            watch=W.Watch(id=watch_id, paused=paused), update_mask=field_mask_pb2.FieldMask(paths=["paused"])
        ),
        metadata=harness.admin,
    )
    return response.watch


async def test_watches_are_their_owners_and_refuse_bad_input(
    harness: Harness, web: FakeWebApi, api: watch_pb2_grpc.WatchServiceStub
) -> None:
    harness.steam.add_item(ITEM, files={"a.txt": b"a"})
    watch = await create(api, harness, str(ITEM), seconds=60)
    other: Metadata = (("x-api-key", await add_key(harness.database_url, ["watch:*", "download:*"])),)
    reader: Metadata = (("x-api-key", await add_key(harness.database_url, ["download:*"])),)

    missing = await rpc_error(api.GetWatch(W.GetWatchRequest(id=watch.id), metadata=other))
    assert missing.code() == grpc.StatusCode.NOT_FOUND  # another user's watch does not exist for them
    listed = await api.ListWatches(W.ListWatchesRequest(), metadata=other)
    assert listed.total_size == 0
    denied = await rpc_error(api.ListWatches(W.ListWatchesRequest(), metadata=reader))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    # A watch queues downloads: watch:write alone does not make one.
    watch_only: Metadata = (("x-api-key", await add_key(harness.database_url, ["watch:*"])),)
    refused = await rpc_error(api.CreateWatch(W.CreateWatchRequest(url_or_id=str(ITEM)), metadata=watch_only))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "download:write" in (refused.details() or "")

    too_often = await rpc_error(
        api.CreateWatch(
            W.CreateWatchRequest(url_or_id=str(ITEM), interval=duration_pb2.Duration(nanos=500_000_000)),
            metadata=other,
        )
    )
    assert too_often.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "interval" in (too_often.details() or "")
    unknown = await rpc_error(api.CreateWatch(W.CreateWatchRequest(url_or_id="3100009999"), metadata=other))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(unknown).reason == "WORKSHOP_ITEM_UNAVAILABLE"
    bad = await rpc_error(
        api.CreateWatch(W.CreateWatchRequest(url_or_id="not a workshop url"), metadata=other)
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "url_or_id" in (bad.details() or "")
    mask = await rpc_error(
        api.UpdateWatch(
            W.UpdateWatchRequest(
                watch=W.Watch(id=watch.id), update_mask=field_mask_pb2.FieldMask(paths=["title"])
            ),
            metadata=harness.admin,
        )
    )
    assert mask.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "update_mask" in (mask.details() or "")

    longer = await api.UpdateWatch(
        W.UpdateWatchRequest(
            watch=W.Watch(id=watch.id, interval=duration_pb2.Duration(seconds=3600)),
            update_mask=field_mask_pb2.FieldMask(paths=["interval"]),
        ),
        metadata=harness.admin,
    )
    assert longer.watch.interval.seconds == 3600
    await api.DeleteWatch(W.DeleteWatchRequest(id=watch.id), metadata=harness.admin)
    gone = await rpc_error(api.GetWatch(W.GetWatchRequest(id=watch.id), metadata=harness.admin))
    assert gone.code() == grpc.StatusCode.NOT_FOUND


async def test_a_version_the_quota_refuses_is_tried_again_not_skipped(
    harness: Harness, api: watch_pb2_grpc.WatchServiceStub
) -> None:
    harness.steam.add_item(ITEM, files={"a.txt": b"1"})
    created = await harness.admin_api.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(
            api_key=admin_pb2.ApiKey(
                name="watcher",
                scopes=["watch:*", "download:*"],
                limits=admin_pb2.ApiKeyLimits(daily_download_quota=1),
            )
        ),
        metadata=harness.admin,
    )
    key: Metadata = (("x-api-key", created.plaintext_key),)
    watch = (
        await api.CreateWatch(
            W.CreateWatchRequest(url_or_id=str(ITEM), interval=duration_pb2.Duration(seconds=1)), metadata=key
        )
    ).watch
    first = watch.items[0].download_id
    await succeeded(harness, first)  # the key's one download of the day

    harness.steam.add_item(ITEM, files={"a.txt": b"2"})
    refused = await until(api, harness, watch.id, lambda found: found.consecutive_failures >= 2)
    assert "quota" in refused.last_error
    assert refused.items[0].download_id == first  # still the old version: the next check tries again
    assert changes(await versions(api, harness, watch.id)) == [("FIRST", ITEM)]

    await harness.admin_api.UpdateApiKey(
        admin_pb2.UpdateApiKeyRequest(
            api_key=admin_pb2.ApiKey(id=created.api_key.id, limits=admin_pb2.ApiKeyLimits()),
            update_mask=field_mask_pb2.FieldMask(paths=["limits"]),
        ),
        metadata=harness.admin,
    )
    watch = await until(api, harness, watch.id, lambda found: found.items[0].download_id != first)
    assert (watch.consecutive_failures, watch.last_error) == (0, "")
    assert changes(await versions(api, harness, watch.id)) == [("FIRST", ITEM), ("UPDATED", ITEM)]
    assert unzip((await harness.fetch((await succeeded(harness, watch.items[0].download_id)).id))[0]) == {
        "a.txt": b"2"
    }
