"""The asyncio client: every call of the high-level API is written once, here (Client runs it on a thread).

    async with AsyncClient("127.0.0.1:50051", api_key="ww_...") as client:
        path = await client.download("https://steamcommunity.com/sharedfiles/filedetails/?id=...", "out")

AsyncClient gathers the service areas (downloads.py, batches.py, links.py, watches.py, webhooks.py,
admin.py, auth.py, status.py) over one Transport (transport.py: credentials, deadlines, retries);
event streams and archive fetches resume through streams.py and archives.py. The raw stubs stay public
(`client.downloads`, `.admin`, `.auth`, `.status`, `.watches`, `.webhooks`) for anything the wrapper
does not cover; pass `await client.metadata()` with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grpc import aio

from wallwhale_client.admin import AdminApi
from wallwhale_client.archives import ArchiveInfo, BatchArchiveInfo
from wallwhale_client.auth import AuthApi, PasswordLogin
from wallwhale_client.batches import BatchArchive, BatchesApi, BatchProgress, BatchProgressCallback
from wallwhale_client.downloads import FINAL_STATES, DownloadsApi, Progress, ProgressCallback
from wallwhale_client.links import LinksApi
from wallwhale_client.retry import RetryPolicy
from wallwhale_client.status import StatusApi
from wallwhale_client.transport import ApiKeyCredentials, Metadata, Tls, Transport, open_channel
from wallwhale_client.v1 import (
    admin_pb2_grpc,
    auth_pb2_grpc,
    download_pb2_grpc,
    status_pb2_grpc,
    watch_pb2_grpc,
    webhook_pb2_grpc,
)
from wallwhale_client.watches import WatchesApi
from wallwhale_client.webhooks import WebhooksApi

__all__ = [
    "FINAL_STATES",
    "ArchiveInfo",
    "AsyncClient",
    "BatchArchive",
    "BatchArchiveInfo",
    "BatchProgress",
    "BatchProgressCallback",
    "Metadata",
    "Progress",
    "ProgressCallback",
    "Tls",
]


class AsyncClient(DownloadsApi, BatchesApi, LinksApi, WatchesApi, WebhooksApi, AdminApi, AuthApi, StatusApi):
    """A WallWhale client for asyncio code.

    Credentials: an API key, or a person's e-mail and password (logged in on the first call, the
    access token refreshed when it expires). `timeout` bounds each unary call (streams run as long
    as the download does). Calls answered UNAVAILABLE or RESOURCE_EXHAUSTED (with a RetryInfo delay
    up to `retry.max_retry_after`) are retried with `retry`; creations carry a request_id, so a
    retried CreateDownload never queues the item twice.
    """

    def __init__(
        self,
        address: str,
        *,
        api_key: str | None = None,
        email: str | None = None,
        password: str | None = None,
        tls: Tls | bool = False,
        timeout: float | None = 30.0,
        retry: RetryPolicy | None = None,
        interceptors: Sequence[aio.ClientInterceptor] = (),
        channel_options: Sequence[tuple[str, Any]] = (),
    ):
        if api_key and (email or password):
            raise ValueError("give an API key or an e-mail and password, not both")
        if (email is None) != (password is None):
            raise ValueError("an e-mail needs its password (and a password its e-mail)")
        self._channel = open_channel(address, tls, interceptors, channel_options)
        self._transport = Transport(self._channel, timeout=timeout, retry=retry or RetryPolicy())
        self.address = address
        self.downloads = download_pb2_grpc.DownloadServiceStub(self._channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self.auth = auth_pb2_grpc.AuthServiceStub(self._channel)
        self.status = status_pb2_grpc.StatusServiceStub(self._channel)
        self.watches = watch_pb2_grpc.WatchServiceStub(self._channel)
        self.webhooks = webhook_pb2_grpc.WebhookServiceStub(self._channel)
        if api_key:
            self._transport.credentials = ApiKeyCredentials(api_key)
        elif email is not None and password is not None:
            self._transport.credentials = PasswordLogin(self._transport, self.auth, email, password)

    @property
    def timeout(self) -> float | None:
        """Each unary call's deadline in seconds (None: none)."""
        return self._transport.timeout

    @timeout.setter
    def timeout(self, seconds: float | None) -> None:
        self._transport.timeout = seconds

    @property
    def retry(self) -> RetryPolicy:
        return self._transport.retry

    @retry.setter
    def retry(self, policy: RetryPolicy) -> None:
        self._transport.retry = policy

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def metadata(self) -> Metadata:
        """The credentials for one call (logging in first if needed)."""
        return await self._transport.metadata()
