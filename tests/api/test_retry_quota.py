"""RetryDownload costs a unit of the caller's quota like a new download (issue 15, item 11)."""

from __future__ import annotations

import grpc

from tests.support.harness import Harness, rpc_error
from wallwhale.v1 import download_pb2 as D

ITEM = 2831234577


async def test_a_retry_is_counted_against_the_daily_quota(harness: Harness) -> None:
    await harness.start(max_attempts=1)
    await harness.add_account("dave_we", "pw-dave")
    harness.steam.add_item(ITEM, behaviour={"missing": True})
    key = await harness.add_key(["download:read", "download:write"], daily_download_quota=2)
    created = await harness.downloads.CreateDownload(
        D.CreateDownloadRequest(url_or_id=str(ITEM)), metadata=key
    )
    failed = await harness.wait_for(created.download.id)
    assert failed.state == D.DOWNLOAD_STATE_FAILED

    retried = await harness.downloads.RetryDownload(D.RetryDownloadRequest(id=failed.id), metadata=key)
    assert retried.download.state == D.DOWNLOAD_STATE_QUEUED  # the second unit
    again = await harness.wait_for(failed.id)
    assert again.state == D.DOWNLOAD_STATE_FAILED

    error = await rpc_error(
        harness.downloads.RetryDownload(D.RetryDownloadRequest(id=failed.id), metadata=key)
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "quota" in (error.details() or "")
    still = await harness.downloads.GetDownload(D.GetDownloadRequest(id=failed.id), metadata=key)
    assert still.download.state == D.DOWNLOAD_STATE_FAILED  # the refused retry left nothing behind
