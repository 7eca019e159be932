"""GetStatus tells the truth: the configured concurrency, and "unknown" before the Web API was asked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.webapi import FakeWebApi
from tests.support.harness import Harness
from wallwhale.v1 import status_pb2, status_pb2_grpc

ITEM = 3001234567


@pytest.fixture
def web(harness: Harness) -> Iterator[FakeWebApi]:
    with FakeWebApi(harness.steam) as server:
        yield server


async def status(harness: Harness) -> status_pb2.GetStatusResponse:
    stub = status_pb2_grpc.StatusServiceStub(harness.channel)
    response: status_pb2.GetStatusResponse = await stub.GetStatus(
        status_pb2.GetStatusRequest(), metadata=harness.admin
    )
    return response


async def test_concurrency_limit_is_the_configured_one(harness: Harness) -> None:
    await harness.start(max_concurrent_downloads=3)
    assert (await status(harness)).queue.concurrency_limit == 3


async def test_the_web_api_is_unknown_until_asked_then_reachable_or_not(
    harness: Harness, web: FakeWebApi
) -> None:
    await harness.start(
        steam_web_api_url=web.base_url, steam_web_api_retry_seconds=0, max_concurrent_downloads=0
    )
    before = (await status(harness)).steam_web_api
    assert before.state == status_pb2.WEB_API_REACHABILITY_UNKNOWN
    assert not before.reachable

    harness.steam.add_item(ITEM, title="Storm")
    await harness.create(str(ITEM))
    after = (await status(harness)).steam_web_api
    assert after.state == status_pb2.WEB_API_REACHABILITY_REACHABLE
    assert after.reachable

    web.mode = "down"
    await harness.create(str(ITEM + 1))
    down = (await status(harness)).steam_web_api
    assert down.state == status_pb2.WEB_API_REACHABILITY_UNREACHABLE
    assert not down.reachable
    assert "503" in down.error


async def test_archive_bytes_is_the_space_archives_take(harness: Harness) -> None:
    await harness.start()
    assert (await status(harness)).storage.archive_bytes == 0
    await harness.add_account("alice_we", "pw")
    harness.steam.add_item(ITEM, files={"scene.pkg": 200_000, "project.json": b"{}"})
    first = await harness.wait_for((await harness.create(str(ITEM))).id)
    second = await harness.wait_for((await harness.create(str(ITEM))).id)
    assert first.archive.size_bytes > 0
    # A copy served from the cache shares its file, which is counted once.
    expected = first.archive.size_bytes + (0 if second.from_cache else second.archive.size_bytes)
    assert (await status(harness)).storage.archive_bytes == expected
