"""A download served from the cache does not name another user's download (issue 15, item 12)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.webapi import FakeWebApi
from tests.support.harness import Harness
from wallwhale.v1 import download_pb2 as D

ITEM = 3001234599


@pytest.fixture
def web(harness: Harness) -> Iterator[FakeWebApi]:
    with FakeWebApi(harness.steam) as server:
        yield server


async def test_a_cache_hit_does_not_reveal_the_earlier_download(harness: Harness, web: FakeWebApi) -> None:
    await harness.start(steam_web_api_url=web.base_url, steam_web_api_retry_seconds=0)
    await harness.add_account("alice_we", "pw")
    harness.steam.add_item(ITEM, files={"scene.pkg": 50_000})
    first = await harness.wait_for((await harness.create(str(ITEM))).id)
    assert first.state == D.DOWNLOAD_STATE_SUCCEEDED

    other = await harness.add_key(["download:read", "download:write"])
    cached = (
        await harness.downloads.CreateDownload(D.CreateDownloadRequest(url_or_id=str(ITEM)), metadata=other)
    ).download
    assert cached.from_cache
    events = [
        event
        async for event in harness.downloads.WatchDownload(
            D.WatchDownloadRequest(id=cached.id), metadata=other
        )
    ]
    assert any("served from the cache" in event.log_line.line for event in events)
    seen = b"".join(event.SerializeToString() for event in events)
    seen += (
        await harness.downloads.GetDownload(D.GetDownloadRequest(id=cached.id), metadata=other)
    ).SerializeToString()
    assert first.id.encode() not in seen
