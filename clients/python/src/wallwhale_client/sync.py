"""The blocking client: AsyncClient run on a private event loop in a daemon thread.

Every method hands its coroutine to that loop and waits for the result, so the retries, resumption and
checks are AsyncClient's own and are not written twice. Callbacks (download's `progress`) run on the
client's thread. A Client may be used from several threads at once.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypedDict, TypeVar, Unpack

from grpc import aio

from wallwhale_client.aio import AsyncClient, BatchArchive, BatchProgressCallback, ProgressCallback, Tls
from wallwhale_client.retry import RetryPolicy
from wallwhale_client.v1 import admin_pb2, auth_pb2, download_pb2, status_pb2, watch_pb2, webhook_pb2

T = TypeVar("T")


class ClientOptions(TypedDict, total=False):
    """The keyword arguments of AsyncClient (see there)."""

    api_key: str | None
    email: str | None
    password: str | None
    tls: Tls | bool
    timeout: float | None
    retry: RetryPolicy | None
    interceptors: Sequence[aio.ClientInterceptor]
    channel_options: Sequence[tuple[str, Any]]


class Client:
    """A blocking WallWhale client; the options are AsyncClient's.

    with Client("127.0.0.1:50051", api_key="ww_...") as client:
        print(client.get_status().version)
    """

    def __init__(self, address: str, **options: Unpack[ClientOptions]):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="wallwhale-client", daemon=True)
        self._thread.start()

        async def make() -> AsyncClient:  # grpc.aio channels belong to the loop they are made in
            return AsyncClient(address, **options)

        self.aio = self._run(make())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _iterate(self, generator: AsyncIterator[T]) -> Iterator[T]:
        assert isinstance(generator, AsyncGenerator)

        async def step() -> tuple[T] | None:
            try:
                return (await anext(generator),)
            except StopAsyncIteration:
                return None

        try:
            while (item := self._run(step())) is not None:
                yield item[0]
        finally:
            self._run(generator.aclose())  # also when the caller stops early: the call is cancelled

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.aio.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Each method below is AsyncClient's, run on the loop; see there for what it does.

    def get_status(self) -> status_pb2.GetStatusResponse:
        return self._run(self.aio.get_status())

    def get_caller(self) -> auth_pb2.GetCallerResponse:
        return self._run(self.aio.get_caller())

    def create_download(
        self,
        url_or_id: str,
        *,
        request_id: str | None = None,
        app_id: int | None = None,
        priority: download_pb2.DownloadPriority.ValueType = download_pb2.DOWNLOAD_PRIORITY_UNSPECIFIED,
        skip_cache: bool = False,
    ) -> download_pb2.Download:
        return self._run(
            self.aio.create_download(
                url_or_id, request_id=request_id, app_id=app_id, priority=priority, skip_cache=skip_cache
            )
        )

    def get_download(self, download_id: str) -> download_pb2.Download:
        return self._run(self.aio.get_download(download_id))

    def list_downloads(
        self,
        *,
        states: Iterable[download_pb2.DownloadState.ValueType] = (),
        workshop_id: int = 0,
        limit: int = 50,
    ) -> list[download_pb2.Download]:
        return self._run(self.aio.list_downloads(states=states, workshop_id=workshop_id, limit=limit))

    def cancel_download(self, download_id: str) -> download_pb2.Download:
        return self._run(self.aio.cancel_download(download_id))

    def retry_download(self, download_id: str, *, request_id: str | None = None) -> download_pb2.Download:
        return self._run(self.aio.retry_download(download_id, request_id=request_id))

    def delete_download(self, download_id: str) -> None:
        self._run(self.aio.delete_download(download_id))

    def watch_download(
        self, download_id: str, *, after_sequence: int = 0, exclude_logs: bool = False
    ) -> Iterator[download_pb2.WatchDownloadResponse]:
        return self._iterate(
            self.aio.watch_download(download_id, after_sequence=after_sequence, exclude_logs=exclude_logs)
        )

    def save_archive(
        self,
        download_id: str,
        dest_dir: str | os.PathLike[str] = ".",
        *,
        expected: download_pb2.Archive | None = None,
        on_bytes: Callable[[int, int], None] | None = None,
    ) -> Path:
        return self._run(self.aio.save_archive(download_id, dest_dir, expected=expected, on_bytes=on_bytes))

    def archive_url(self, download_id: str) -> download_pb2.GetArchiveUrlResponse | None:
        return self._run(self.aio.archive_url(download_id))

    def download(
        self,
        url_or_id: str,
        dest_dir: str | os.PathLike[str] = ".",
        *,
        progress: ProgressCallback | None = None,
        request_id: str | None = None,
        app_id: int | None = None,
        priority: download_pb2.DownloadPriority.ValueType = download_pb2.DOWNLOAD_PRIORITY_UNSPECIFIED,
        skip_cache: bool = False,
    ) -> Path:
        return self._run(
            self.aio.download(
                url_or_id,
                dest_dir,
                progress=progress,
                request_id=request_id,
                app_id=app_id,
                priority=priority,
                skip_cache=skip_cache,
            )
        )

    def create_batch(
        self,
        urls_or_ids: Iterable[str],
        *,
        request_id: str | None = None,
        app_id: int | None = None,
        priority: download_pb2.DownloadPriority.ValueType = download_pb2.DOWNLOAD_PRIORITY_UNSPECIFIED,
        skip_cache: bool = False,
    ) -> download_pb2.Batch:
        return self._run(
            self.aio.create_batch(
                urls_or_ids, request_id=request_id, app_id=app_id, priority=priority, skip_cache=skip_cache
            )
        )

    def get_batch(self, batch_id: str) -> download_pb2.Batch:
        return self._run(self.aio.get_batch(batch_id))

    def list_batches(self, *, limit: int = 50) -> list[download_pb2.Batch]:
        return self._run(self.aio.list_batches(limit=limit))

    def cancel_batch(self, batch_id: str) -> download_pb2.Batch:
        return self._run(self.aio.cancel_batch(batch_id))

    def watch_batch(
        self, batch_id: str, *, exclude_logs: bool = False
    ) -> Iterator[download_pb2.WatchBatchResponse]:
        return self._iterate(self.aio.watch_batch(batch_id, exclude_logs=exclude_logs))

    def create_archive_link(
        self,
        *,
        download_id: str = "",
        batch_id: str = "",
        expires: timedelta | None = None,
        single_use: bool = False,
    ) -> download_pb2.CreateArchiveLinkResponse:
        return self._run(
            self.aio.create_archive_link(
                download_id=download_id, batch_id=batch_id, expires=expires, single_use=single_use
            )
        )

    def list_archive_links(
        self, *, download_id: str = "", batch_id: str = ""
    ) -> list[download_pb2.ArchiveLink]:
        return self._run(self.aio.list_archive_links(download_id=download_id, batch_id=batch_id))

    def revoke_archive_link(self, link_id: str) -> download_pb2.ArchiveLink:
        return self._run(self.aio.revoke_archive_link(link_id))

    def save_batch_archive(
        self,
        batch_id: str,
        dest_dir: str | os.PathLike[str] = ".",
        *,
        on_bytes: Callable[[int, int], None] | None = None,
    ) -> BatchArchive:
        return self._run(self.aio.save_batch_archive(batch_id, dest_dir, on_bytes=on_bytes))

    def download_batch(
        self,
        urls_or_ids: Iterable[str],
        dest_dir: str | os.PathLike[str] = ".",
        *,
        progress: BatchProgressCallback | None = None,
        request_id: str | None = None,
        app_id: int | None = None,
        priority: download_pb2.DownloadPriority.ValueType = download_pb2.DOWNLOAD_PRIORITY_UNSPECIFIED,
        skip_cache: bool = False,
    ) -> BatchArchive:
        return self._run(
            self.aio.download_batch(
                urls_or_ids,
                dest_dir,
                progress=progress,
                request_id=request_id,
                app_id=app_id,
                priority=priority,
                skip_cache=skip_cache,
            )
        )

    def create_watch(
        self, url_or_id: str, *, interval: timedelta | None = None, delete_removed_downloads: bool = False
    ) -> watch_pb2.Watch:
        return self._run(
            self.aio.create_watch(
                url_or_id, interval=interval, delete_removed_downloads=delete_removed_downloads
            )
        )

    def get_watch(self, watch_id: str) -> watch_pb2.Watch:
        return self._run(self.aio.get_watch(watch_id))

    def list_watches(self, *, limit: int = 50) -> list[watch_pb2.Watch]:
        return self._run(self.aio.list_watches(limit=limit))

    def update_watch(
        self,
        watch_id: str,
        *,
        paused: bool | None = None,
        interval: timedelta | None = None,
        delete_removed_downloads: bool | None = None,
    ) -> watch_pb2.Watch:
        return self._run(
            self.aio.update_watch(
                watch_id, paused=paused, interval=interval, delete_removed_downloads=delete_removed_downloads
            )
        )

    def pause_watch(self, watch_id: str) -> watch_pb2.Watch:
        return self._run(self.aio.pause_watch(watch_id))

    def resume_watch(self, watch_id: str) -> watch_pb2.Watch:
        return self._run(self.aio.resume_watch(watch_id))

    def set_watch_interval(self, watch_id: str, interval: timedelta) -> watch_pb2.Watch:
        return self._run(self.aio.set_watch_interval(watch_id, interval))

    def delete_watch(self, watch_id: str) -> None:
        self._run(self.aio.delete_watch(watch_id))

    def list_watch_versions(self, watch_id: str, *, limit: int = 50) -> list[watch_pb2.WatchVersion]:
        return self._run(self.aio.list_watch_versions(watch_id, limit=limit))

    def create_webhook(
        self, url: str, events: Iterable[str], *, description: str = "", active: bool = True
    ) -> webhook_pb2.CreateWebhookResponse:
        return self._run(self.aio.create_webhook(url, events, description=description, active=active))

    def get_webhook(self, webhook_id: str) -> webhook_pb2.Webhook:
        return self._run(self.aio.get_webhook(webhook_id))

    def list_webhooks(self, *, limit: int = 50) -> list[webhook_pb2.Webhook]:
        return self._run(self.aio.list_webhooks(limit=limit))

    def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        events: Iterable[str] | None = None,
        description: str | None = None,
        active: bool | None = None,
    ) -> webhook_pb2.Webhook:
        return self._run(
            self.aio.update_webhook(
                webhook_id, url=url, events=events, description=description, active=active
            )
        )

    def delete_webhook(self, webhook_id: str) -> None:
        self._run(self.aio.delete_webhook(webhook_id))

    def rotate_webhook_secret(
        self, webhook_id: str, *, grace_period: timedelta | None = None
    ) -> webhook_pb2.RotateWebhookSecretResponse:
        return self._run(self.aio.rotate_webhook_secret(webhook_id, grace_period=grace_period))

    def list_webhook_deliveries(
        self, webhook_id: str, *, limit: int = 50
    ) -> list[webhook_pb2.WebhookDelivery]:
        return self._run(self.aio.list_webhook_deliveries(webhook_id, limit=limit))

    def redeliver_webhook_delivery(self, webhook_id: str, delivery_id: str) -> webhook_pb2.WebhookDelivery:
        return self._run(self.aio.redeliver_webhook_delivery(webhook_id, delivery_id))

    def create_api_key(
        self,
        name: str,
        scopes: Iterable[str],
        *,
        owner_user_id: str = "",
        limits: admin_pb2.ApiKeyLimits | None = None,
        request_id: str | None = None,
    ) -> admin_pb2.CreateApiKeyResponse:
        return self._run(
            self.aio.create_api_key(
                name, scopes, owner_user_id=owner_user_id, limits=limits, request_id=request_id
            )
        )

    def list_api_keys(self, *, include_revoked: bool = False, limit: int = 500) -> list[admin_pb2.ApiKey]:
        return self._run(self.aio.list_api_keys(include_revoked=include_revoked, limit=limit))

    def revoke_api_key(self, api_key_id: str) -> admin_pb2.ApiKey:
        return self._run(self.aio.revoke_api_key(api_key_id))

    def create_steam_account(
        self,
        username: str,
        password: str = "",
        *,
        display_name: str = "",
        owned_app_ids: Iterable[int] = (),
        request_id: str | None = None,
    ) -> admin_pb2.SteamAccount:
        return self._run(
            self.aio.create_steam_account(
                username,
                password,
                display_name=display_name,
                owned_app_ids=owned_app_ids,
                request_id=request_id,
            )
        )

    def list_steam_accounts(self, *, limit: int = 500) -> list[admin_pb2.SteamAccount]:
        return self._run(self.aio.list_steam_accounts(limit=limit))

    def submit_steam_guard_code(self, steam_account_id: str, code: str) -> admin_pb2.SteamAccount:
        return self._run(self.aio.submit_steam_guard_code(steam_account_id, code))

    def start_qr_login(self, steam_account_id: str) -> Iterator[admin_pb2.StartQrLoginResponse]:
        return self._iterate(self.aio.start_qr_login(steam_account_id))

    def get_stats(self) -> admin_pb2.GetStatsResponse:
        return self._run(self.aio.get_stats())
