"""HIGH priority jumps the shared queue, so it is reserved for admins (issue 15, item 15)."""

from __future__ import annotations

import grpc

from tests.support.harness import Harness, rpc_error
from wallwhale.v1 import download_pb2 as D

ITEM = 2831234581


async def test_only_admins_queue_at_high_priority(harness: Harness) -> None:
    await harness.start(max_concurrent_downloads=0)  # this instance only queues
    harness.steam.add_item(ITEM, files={"a.bin": 100})
    key = await harness.add_key(["download:read", "download:write"])
    high = D.DOWNLOAD_PRIORITY_HIGH
    for call in (
        harness.downloads.CreateDownload(
            D.CreateDownloadRequest(url_or_id=str(ITEM), priority=high), metadata=key
        ),
        harness.downloads.CreateBatch(
            D.CreateBatchRequest(urls_or_ids=[str(ITEM)], priority=high), metadata=key
        ),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "HIGH is reserved for admins" in (error.details() or "")
    normal = await harness.create(str(ITEM), key, priority=D.DOWNLOAD_PRIORITY_NORMAL)
    assert normal.state == D.DOWNLOAD_STATE_QUEUED
    admin = await harness.create(str(ITEM), priority=high)
    assert admin.priority == high
