"""Batches end to end: a real server on SQLite and PostgreSQL, the test DepotDownloader, and the fake of
Steam's Web API (a real HTTP server) that knows the fake Steam's items and collections."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest_asyncio
import structlog.testing
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.fakes.webapi import COLLECTION_PATH, FakeWebApi
from tests.support.harness import Harness, alive, rpc_error, seconds
from tests.support.server import Metadata, error_info
from wallwhale.v1 import admin_pb2, download_pb2

D = download_pb2
COLLECTION = 3_000_000_001
A, B, C = 2_900_000_001, 2_900_000_002, 2_900_000_003


@pytest_asyncio.fixture
async def web(harness: Harness) -> AsyncIterator[FakeWebApi]:
    with FakeWebApi(harness.steam) as api:
        yield api


async def _start(harness: Harness, web: FakeWebApi, **settings: Any) -> None:
    await harness.start(steam_web_api_url=web.base_url, **settings)


async def _create(
    harness: Harness, *urls_or_ids: str, metadata: Metadata | None = None, **fields: Any
) -> D.Batch:
    response = await harness.downloads.CreateBatch(
        D.CreateBatchRequest(urls_or_ids=list(urls_or_ids), **fields), metadata=metadata or harness.admin
    )
    return response.batch


async def _watch(harness: Harness, batch_id: str, **fields: Any) -> list[D.WatchBatchResponse]:
    call = harness.downloads.WatchBatch(D.WatchBatchRequest(id=batch_id, **fields), metadata=harness.admin)
    return [event async for event in call]


async def _fetch(
    harness: Harness, batch_id: str, offset: int = 0, length: int = 0
) -> tuple[bytes, dict[str, str]]:
    call = harness.downloads.FetchBatchArchive(
        D.FetchBatchArchiveRequest(id=batch_id, offset=offset, length=length), metadata=harness.admin
    )
    data = b"".join([chunk.data async for chunk in call])
    return data, dict(await call.initial_metadata())


async def _workshop_ids(harness: Harness, batch: D.Batch) -> list[int]:
    return [(await harness.get(download_id)).workshop_id for download_id in batch.download_ids]


def _field(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            return request.field_violations[0].field
    raise AssertionError(f"no BadRequest in {error}")


async def test_a_collection_of_three_with_one_failing_partly_succeeds(
    harness: Harness, web: FakeWebApi
) -> None:
    await _start(harness, web, max_attempts=1)
    await harness.add_account("batch_we", "pw-batch")
    harness.steam.add_item(A, files={"project.json": b'{"title": "A"}', "scene.pkg": 200_000})
    harness.steam.add_item(B, files={"project.json": b'{"title": "B"}', "media/clip.mp4": 150_000})
    harness.steam.add_item(C, behaviour={"depot_key_denied": True})
    harness.steam.add_collection(COLLECTION, [A, B, C], title="Rainy Days")

    batch = await _create(harness, f"https://steamcommunity.com/sharedfiles/filedetails/?id={COLLECTION}")
    assert batch.title == "Rainy Days"
    assert batch.collection_id == COLLECTION
    assert batch.total_count == 3
    assert batch.state == D.BATCH_STATE_ACTIVE
    assert await _workshop_ids(harness, batch) == [A, B, C]  # the collection's order
    assert (await harness.get(batch.download_ids[0])).item.title == f"Wallpaper {A}"  # from the Web API

    events = await _watch(harness, batch.id)
    finished = events[-1]
    assert finished.HasField("finished"), events[-1]
    assert all(not event.HasField("finished") for event in events[:-1])
    done = finished.finished
    assert done.state == D.BATCH_STATE_PARTIALLY_SUCCEEDED
    assert (done.succeeded_count, done.failed_count, done.cancelled_count, done.total_count) == (2, 1, 0, 3)
    assert done.HasField("end_time")
    # Each job's events are in the stream, in order, ending in its final state.
    for download_id in batch.download_ids:
        own = [e.download_event for e in events if e.download_event.download_id == download_id]
        assert [e.sequence for e in own] == list(range(1, len(own) + 1))
        states = [e.state_changed.download.state for e in own if e.HasField("state_changed")]
        assert states[0] == D.DOWNLOAD_STATE_QUEUED
        assert states[-1] in (D.DOWNLOAD_STATE_SUCCEEDED, D.DOWNLOAD_STATE_FAILED)
    assert any(e.download_event.HasField("log_line") for e in events)
    failed = await harness.get(batch.download_ids[2])
    assert failed.state == D.DOWNLOAD_STATE_FAILED
    assert failed.batch_id == batch.id

    stored = (await harness.downloads.GetBatch(D.GetBatchRequest(id=batch.id), metadata=harness.admin)).batch
    assert stored == done
    listed = await harness.downloads.ListDownloads(
        D.ListDownloadsRequest(batch_id=batch.id), metadata=harness.admin
    )
    assert sorted(d.id for d in listed.downloads) == sorted(batch.download_ids)

    data, headers = await _fetch(harness, batch.id)
    assert int(headers["x-archive-size"]) == len(data)
    assert headers["x-archive-filename"] == f"{COLLECTION}-rainy-days.zip"
    expected = {f"{A}/{name}": body for name, body in harness.steam.expected_files(A).items()}
    expected |= {f"{B}/{name}": body for name, body in harness.steam.expected_files(B).items()}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert {info.filename: archive.read(info) for info in archive.infolist()} == expected
    # Resumable: the same bytes each time, from any offset.
    rest, again = await _fetch(harness, batch.id, offset=1234)
    assert rest == data[1234:]
    assert again["x-archive-version"] == headers["x-archive-version"]
    part, _ = await _fetch(harness, batch.id, offset=100, length=70_000)
    assert part == data[100:70_100]
    # A watch that starts after the end replays everything and finishes at once.
    replayed = await _watch(harness, batch.id, exclude_logs=True)
    assert replayed[-1].finished == done
    assert not any(e.download_event.HasField("log_line") for e in replayed)


async def test_a_list_of_ids_nested_collections_and_duplicates(harness: Harness, web: FakeWebApi) -> None:
    await _start(harness, web)
    outer, inner = COLLECTION, COLLECTION + 1
    harness.steam.add_collection(outer, [A, inner, B], title="Outer")
    harness.steam.add_collection(inner, [C, A, outer], title="Inner")  # a duplicate and a cycle
    D4 = 2_900_000_004

    batch = await _create(harness, str(outer), str(D4), f"steam://url/CommunityFilePage/{A}")
    assert await _workshop_ids(harness, batch) == [A, B, C, D4]
    assert batch.title == "4 items"
    assert batch.collection_id == 0

    nested = await _create(harness, str(inner))
    assert await _workshop_ids(harness, nested) == [C, A, B]
    assert (nested.title, nested.collection_id) == ("Inner", inner)

    plain = await _create(harness, str(A), str(B), str(A))
    assert await _workshop_ids(harness, plain) == [A, B]
    assert plain.title == "2 items"

    listed = await harness.downloads.ListBatches(D.ListBatchesRequest(page_size=2), metadata=harness.admin)
    assert [b.id for b in listed.batches] == [plain.id, nested.id]  # newest first
    assert listed.total_size == 3
    following = await harness.downloads.ListBatches(
        D.ListBatchesRequest(page_size=2, page_token=listed.next_page_token), metadata=harness.admin
    )
    assert [b.id for b in following.batches] == [batch.id]


async def test_bad_requests_name_the_field(harness: Harness, web: FakeWebApi) -> None:
    await _start(harness, web)
    cases = [
        ([], "urls_or_ids"),
        ([str(n) for n in range(1, 1002)], "urls_or_ids"),
        (["1", "2", "https://example.com/?id=3"], "urls_or_ids[2]"),
        (["1", "0"], "urls_or_ids[1]"),
    ]
    for urls, field in cases:
        error = await rpc_error(
            harness.downloads.CreateBatch(D.CreateBatchRequest(urls_or_ids=urls), metadata=harness.admin)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, urls[:3]
        assert _field(error) == field
    harness.steam.add_collection(COLLECTION, range(5_000_000, 5_001_001))  # 1001 items
    error = await rpc_error(
        harness.downloads.CreateBatch(
            D.CreateBatchRequest(urls_or_ids=[str(COLLECTION)]), metadata=harness.admin
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _field(error) == "urls_or_ids"
    assert "1001" in (error.details() or "")
    listed = await harness.downloads.ListDownloads(D.ListDownloadsRequest(), metadata=harness.admin)
    assert list(listed.downloads) == []


async def test_request_id_makes_create_batch_idempotent(harness: Harness, web: FakeWebApi) -> None:
    await _start(harness, web)
    harness.steam.add_collection(COLLECTION, [A, B])
    first = await _create(harness, str(COLLECTION), request_id="batch-1")
    asked = len(web.asked(COLLECTION_PATH))
    again = await _create(harness, str(COLLECTION), request_id="batch-1")
    assert again.id == first.id
    assert list(again.download_ids) == list(first.download_ids)
    assert len(web.asked(COLLECTION_PATH)) == asked  # a replay asks Steam nothing
    error = await rpc_error(
        harness.downloads.CreateBatch(
            D.CreateBatchRequest(urls_or_ids=[str(A)], request_id="batch-1"), metadata=harness.admin
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(error).reason == "REQUEST_ID_REUSED"
    listed = await harness.downloads.ListBatches(D.ListBatchesRequest(), metadata=harness.admin)
    assert [b.id for b in listed.batches] == [first.id]


async def test_cancel_batch_stops_running_jobs(harness: Harness, web: FakeWebApi) -> None:
    await _start(harness, web)
    await harness.add_account("cancel_we", "pw-cancel")
    for item in (A, B, C):
        harness.steam.add_item(
            item, files={f"f{i}.bin": 1000 for i in range(40)}, behaviour={"file_delay": seconds(0.2)}
        )
    batch = await _create(harness, str(A), str(B), str(C))
    running = await harness.wait_for_progress(batch.download_ids[0])  # DepotDownloader runs
    error = await rpc_error(
        harness.downloads.FetchBatchArchive(
            D.FetchBatchArchiveRequest(id=batch.id), metadata=harness.admin
        ).read()
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION  # still active

    cancelled = (
        await harness.downloads.CancelBatch(D.CancelBatchRequest(id=batch.id), metadata=harness.admin)
    ).batch
    assert cancelled.state == D.BATCH_STATE_CANCELLED
    assert cancelled.cancelled_count == 3
    assert cancelled.HasField("end_time")
    assert (await harness.get(running.id)).state == D.DOWNLOAD_STATE_CANCELLED
    [run] = harness.steam.runs()
    assert not alive(run["pid"])  # the running DepotDownloader was stopped
    again = (
        await harness.downloads.CancelBatch(D.CancelBatchRequest(id=batch.id), metadata=harness.admin)
    ).batch
    assert again.state == D.BATCH_STATE_CANCELLED  # cancelling twice is no error
    events = await _watch(harness, batch.id)
    assert events[-1].finished.state == D.BATCH_STATE_CANCELLED
    error = await rpc_error(
        harness.downloads.FetchBatchArchive(
            D.FetchBatchArchiveRequest(id=batch.id), metadata=harness.admin
        ).read()
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION  # nothing succeeded


async def test_only_the_owner_and_admins_see_a_batch(harness: Harness, web: FakeWebApi) -> None:
    await _start(harness, web)
    mine = await _create(harness, str(A))
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
        harness.downloads.GetBatch(D.GetBatchRequest(id=mine.id), metadata=other),
        harness.downloads.CancelBatch(D.CancelBatchRequest(id=mine.id), metadata=other),
        harness.downloads.WatchBatch(D.WatchBatchRequest(id=mine.id), metadata=other).read(),
        harness.downloads.FetchBatchArchive(D.FetchBatchArchiveRequest(id=mine.id), metadata=other).read(),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
    assert list((await harness.downloads.ListBatches(D.ListBatchesRequest(), metadata=other)).batches) == []
    theirs = await _create(harness, str(B), metadata=other)
    listed = await harness.downloads.ListBatches(D.ListBatchesRequest(), metadata=other)
    assert [b.id for b in listed.batches] == [theirs.id]
    everything = await harness.downloads.ListBatches(D.ListBatchesRequest(), metadata=harness.admin)
    assert {b.id for b in everything.batches} == {mine.id, theirs.id}


async def test_a_batch_larger_than_the_quota_left_creates_nothing(harness: Harness, web: FakeWebApi) -> None:
    await _start(harness, web)
    for item in (A, B, C):
        harness.steam.add_item(item)
    key = await harness.add_key(["download:*"], daily_download_quota=3)
    await harness.create(str(A), metadata=key)
    error = await rpc_error(
        harness.downloads.CreateBatch(D.CreateBatchRequest(urls_or_ids=[str(B), str(C), "7"]), metadata=key)
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(error).reason == "DAILY_QUOTA_EXCEEDED"
    assert list((await harness.downloads.ListBatches(D.ListBatchesRequest(), metadata=key)).batches) == []
    listed = await harness.downloads.ListDownloads(D.ListDownloadsRequest(), metadata=key)
    assert [d.workshop_id for d in listed.downloads] == [A]
    fits = await _create(harness, str(B), str(C), metadata=key)  # exactly what is left
    assert fits.total_count == 2


async def test_without_the_web_api_ids_are_taken_for_items(harness: Harness, web: FakeWebApi) -> None:
    await _start(harness, web)
    harness.steam.add_collection(COLLECTION, [A, B])
    web.mode = "down"
    batch = await _create(harness, str(COLLECTION))
    assert await _workshop_ids(harness, batch) == [COLLECTION]
    assert (batch.title, batch.collection_id) == ("1 item", 0)
    events = await harness.watch(batch.download_ids[0])
    lines = [e.log_line.line for e in events if e.HasField("log_line")]
    assert any("could not be reached" in line and "collection" in line for line in lines), lines


async def test_clients_leaving_a_batch_archive_stream_leave_no_error(
    harness: Harness, web: FakeWebApi
) -> None:
    """A client that goes away mid-stream cancels the wait for the next chunk, not its read: the
    stream's chunk generator must not be closed while that read still runs in its thread."""
    await _start(harness, web)
    await harness.add_account("batch_leave", "pw-leave")
    harness.steam.add_item(A, files={"scene.pkg": 3_000_000})
    harness.steam.add_item(B, files={"clip.mp4": 3_000_000})
    batch = await _create(harness, str(A), str(B))
    assert (await _watch(harness, batch.id))[-1].finished.succeeded_count == 2
    with structlog.testing.capture_logs() as logged:
        for _ in range(20):
            call = harness.downloads.FetchBatchArchive(
                D.FetchBatchArchiveRequest(id=batch.id), metadata=harness.admin
            )
            await call.read()
            call.cancel()
        await asyncio.sleep(0.5)  # the server's side of the last calls ends (a read takes milliseconds)
    assert [entry for entry in logged if entry["log_level"] in ("error", "critical")] == []
    data, _ = await _fetch(harness, batch.id)  # and the server still serves it whole
    assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None
