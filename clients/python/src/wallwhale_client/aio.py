"""The asyncio client: every call of the high-level API is written once, here (Client runs it on a thread).

    async with AsyncClient("127.0.0.1:50051", api_key="ww_...") as client:
        path = await client.download("https://steamcommunity.com/sharedfiles/filedetails/?id=...", "out")

The raw stubs stay public (`client.downloads`, `.admin`, `.auth`, `.status`) for anything the wrapper does
not cover; pass `await client.metadata()` with them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import grpc
from google.protobuf.message import Message
from grpc import aio

from wallwhale_client._version import __version__
from wallwhale_client.errors import (
    BatchFailed,
    DownloadFailed,
    IntegrityError,
    Unauthenticated,
    Unavailable,
    WallWhaleError,
    from_rpc_error,
)
from wallwhale_client.retry import RetryPolicy
from wallwhale_client.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    download_pb2,
    download_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)

Metadata = tuple[tuple[str, str], ...]
FINAL_STATES = frozenset(
    {
        download_pb2.DOWNLOAD_STATE_SUCCEEDED,
        download_pb2.DOWNLOAD_STATE_FAILED,
        download_pb2.DOWNLOAD_STATE_CANCELLED,
    }
)


@dataclass(frozen=True)
class Tls:
    """TLS for the channel. Without root_certificates the system's trust store is used; a client
    certificate (certificate_chain + private_key, PEM) is for servers that ask for one."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    # Check the server's certificate against this name instead of the address's host.
    server_name: str | None = None


@dataclass(frozen=True)
class Progress:
    """What download() reports: the job as last known, then the bytes of the archive received."""

    download: download_pb2.Download
    # Archive bytes received so far, and the archive's size (0 until the fetch starts).
    fetched_bytes: int = 0
    archive_bytes: int = 0

    @property
    def state(self) -> str:
        """The job's state without its prefix: "QUEUED", "RUNNING", ..., "SUCCEEDED"."""
        return download_pb2.DownloadState.Name(self.download.state).removeprefix("DOWNLOAD_STATE_")


@dataclass(frozen=True)
class ArchiveInfo:
    """The initial metadata of FetchArchive."""

    size: int
    sha256: str
    filename: str


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class BatchProgress:
    """What download_batch() reports: the batch as created (final once its watch ends), each of its
    downloads as last known (by id; filled in by their events), then the bytes of the archive."""

    batch: download_pb2.Batch
    downloads: Mapping[str, download_pb2.Download] = field(default_factory=dict)
    fetched_bytes: int = 0
    archive_bytes: int = 0

    @property
    def final_count(self) -> int:
        """How many of the batch's downloads are final (succeeded, failed or cancelled)."""
        return sum(download.state in FINAL_STATES for download in self.downloads.values())


@dataclass(frozen=True)
class BatchArchiveInfo:
    """The initial metadata of FetchBatchArchive (no sha256: each zip entry carries its CRC-32)."""

    size: int
    # Names the set of item archives; a resumed fetch is only valid while it is unchanged.
    version: str
    filename: str
    # Workshop ids of succeeded items whose archives were removed, left out of the zip.
    missing: tuple[int, ...] = ()


@dataclass(frozen=True)
class BatchArchive:
    """What save_batch_archive() saved: where, what the server said of it, and the final batch."""

    path: Path
    info: BatchArchiveInfo
    batch: download_pb2.Batch


BatchProgressCallback = Callable[[BatchProgress], None]


class AsyncClient:
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
        options = [("grpc.primary_user_agent", f"wallwhale-client-python/{__version__}"), *channel_options]
        if tls:
            settings = tls if isinstance(tls, Tls) else Tls()
            if settings.server_name:
                options.append(("grpc.ssl_target_name_override", settings.server_name))
            credentials = grpc.ssl_channel_credentials(
                settings.root_certificates, settings.private_key, settings.certificate_chain
            )
            self._channel = aio.secure_channel(address, credentials, options, interceptors=interceptors)
        else:
            self._channel = aio.insecure_channel(address, options, interceptors=interceptors)
        self.address = address
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.downloads = download_pb2_grpc.DownloadServiceStub(self._channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self.auth = auth_pb2_grpc.AuthServiceStub(self._channel)
        self.status = status_pb2_grpc.StatusServiceStub(self._channel)
        self._api_key = api_key
        self._login = (email, password) if email is not None and password is not None else None
        self._tokens: auth_pb2.TokenPair | None = None
        self._token_lock = asyncio.Lock()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    # -- credentials and calls -----------------------------------------------------------------------

    async def metadata(self) -> Metadata:
        """The credentials for one call (logging in first if needed)."""
        if self._api_key:
            return (("x-api-key", self._api_key),)
        if self._login is None:
            return ()
        async with self._token_lock:
            if self._tokens is None:
                email, password = self._login
                response: auth_pb2.LoginResponse = await self._call(
                    self.auth.Login, auth_pb2.LoginRequest(email=email, password=password), anonymous=True
                )
                self._tokens = response.tokens
            return (("authorization", f"Bearer {self._tokens.access_token}"),)

    async def _renew(self, expired: Metadata) -> None:
        """New tokens after the access token in `expired` was refused as expired: Refresh, or a fresh
        login if the refresh token is no good either. Concurrent callers renew once."""
        async with self._token_lock:
            if self._tokens is None or (("authorization", f"Bearer {self._tokens.access_token}"),) != expired:
                return  # another call renewed them already
            try:
                refreshed: auth_pb2.RefreshResponse = await self._call(
                    self.auth.Refresh,
                    auth_pb2.RefreshRequest(refresh_token=self._tokens.refresh_token),
                    anonymous=True,
                )
                self._tokens = refreshed.tokens
            except Unauthenticated:
                self._tokens = None  # metadata() logs in again

    def _may_renew(self, error: WallWhaleError, metadata: Metadata) -> bool:
        return isinstance(error, Unauthenticated) and error.reason == "TOKEN_EXPIRED" and bool(metadata)

    async def _recover_stream(self, error: WallWhaleError, metadata: Metadata, failures: int) -> int:
        """After a broken stream: renew an expired token (not counted as a failure), or wait the
        back-off for this failure, or raise when no more attempts are allowed. Returns the count."""
        if self._may_renew(error, metadata):
            await self._renew(metadata)
            return failures
        failures += 1
        delay = self.retry.delay(error, failures, stream=True)
        if delay is None:
            raise error
        await asyncio.sleep(delay)
        return failures

    async def _call(self, method: Any, request: Message, *, anonymous: bool = False) -> Any:
        """One unary call with credentials, deadline, error mapping and retries."""
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            metadata = () if anonymous else await self.metadata()
            try:
                return await method(request, metadata=metadata, timeout=self.timeout)
            except grpc.RpcError as raw:
                error = from_rpc_error(raw)
            if self._may_renew(error, metadata) and not renewed:
                renewed = True
                await self._renew(metadata)
                continue
            delay = self.retry.delay(error, attempt)
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    # -- status and identity -------------------------------------------------------------------------

    async def get_status(self) -> status_pb2.GetStatusResponse:
        response: status_pb2.GetStatusResponse = await self._call(
            self.status.GetStatus, status_pb2.GetStatusRequest()
        )
        return response

    async def get_caller(self) -> auth_pb2.GetCallerResponse:
        response: auth_pb2.GetCallerResponse = await self._call(
            self.auth.GetCaller, auth_pb2.GetCallerRequest()
        )
        return response

    # -- downloads -----------------------------------------------------------------------------------

    async def create_download(
        self,
        url_or_id: str,
        *,
        request_id: str | None = None,
        app_id: int | None = None,
        priority: download_pb2.DownloadPriority.ValueType = download_pb2.DOWNLOAD_PRIORITY_UNSPECIFIED,
        skip_cache: bool = False,
    ) -> download_pb2.Download:
        """Queues the item. A request_id is made up when none is given, so retries are idempotent."""
        request = download_pb2.CreateDownloadRequest(
            url_or_id=url_or_id,
            app_id=app_id,
            priority=priority,
            request_id=request_id or _request_id(),
            skip_cache=skip_cache,
        )
        response: download_pb2.CreateDownloadResponse = await self._call(
            self.downloads.CreateDownload, request
        )
        return response.download

    async def get_download(self, download_id: str) -> download_pb2.Download:
        response: download_pb2.GetDownloadResponse = await self._call(
            self.downloads.GetDownload, download_pb2.GetDownloadRequest(id=download_id)
        )
        return response.download

    async def list_downloads(
        self,
        *,
        states: Iterable[download_pb2.DownloadState.ValueType] = (),
        workshop_id: int = 0,
        limit: int = 50,
    ) -> list[download_pb2.Download]:
        """Up to `limit` downloads, newest first (the caller's own; every one for admins)."""
        found: list[download_pb2.Download] = []
        token = ""
        while len(found) < limit:
            request = download_pb2.ListDownloadsRequest(
                page_size=min(500, limit - len(found)),
                page_token=token,
                states=states,
                workshop_id=workshop_id,
            )
            page: download_pb2.ListDownloadsResponse = await self._call(self.downloads.ListDownloads, request)
            found += page.downloads
            token = page.next_page_token
            if not token:
                break
        return found[:limit]

    async def cancel_download(self, download_id: str) -> download_pb2.Download:
        response: download_pb2.CancelDownloadResponse = await self._call(
            self.downloads.CancelDownload, download_pb2.CancelDownloadRequest(id=download_id)
        )
        return response.download

    async def retry_download(
        self, download_id: str, *, request_id: str | None = None
    ) -> download_pb2.Download:
        response: download_pb2.RetryDownloadResponse = await self._call(
            self.downloads.RetryDownload,
            download_pb2.RetryDownloadRequest(id=download_id, request_id=request_id or _request_id()),
        )
        return response.download

    async def delete_download(self, download_id: str) -> None:
        await self._call(self.downloads.DeleteDownload, download_pb2.DeleteDownloadRequest(id=download_id))

    async def watch_download(
        self, download_id: str, *, after_sequence: int = 0, exclude_logs: bool = False
    ) -> AsyncIterator[download_pb2.WatchDownloadResponse]:
        """The download's events after `after_sequence`, ending with its `finished` event. A broken
        stream is opened again after the last sequence number seen, so no state change, log line or
        final event is lost or repeated (a live stream may pass over progress that a newer one replaced)."""
        failures = 0
        while True:
            request = download_pb2.WatchDownloadRequest(
                id=download_id, after_sequence=after_sequence, exclude_logs=exclude_logs
            )
            metadata = await self.metadata()
            call = self.downloads.WatchDownload(request, metadata=metadata)
            try:
                async for event in call:
                    failures = 0
                    after_sequence = max(after_sequence, event.sequence)
                    yield event
                    if event.HasField("finished"):
                        return
                # The stream ended without its final event: a proxy or a stopping server cut it.
                error: WallWhaleError = _cut(download_id)
            except grpc.RpcError as raw:
                error = from_rpc_error(raw)
            finally:
                call.cancel()
            failures = await self._recover_stream(error, metadata, failures)

    async def save_archive(
        self,
        download_id: str,
        dest_dir: str | os.PathLike[str] = ".",
        *,
        expected: download_pb2.Archive | None = None,
        on_bytes: Callable[[int, int], None] | None = None,
    ) -> Path:
        """Fetches the download's zip into dest_dir under its server-given name and returns the path.

        A broken stream is resumed from the bytes already written; the whole file is checked against
        the size and sha256 the server announced (and `expected`, if given) before it is renamed into
        place, so the path never holds a partial or corrupt archive. `on_bytes(received, size)`."""
        directory = Path(dest_dir)
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        part = await asyncio.to_thread(_PartFile, directory)
        try:
            info = await self._fetch_into(download_id, part, on_bytes)
            wanted = [("size", info.size, part.size), ("sha256", info.sha256, part.sha256.hexdigest())]
            if expected is not None:
                wanted += [
                    ("size", expected.size_bytes, part.size),
                    ("sha256", expected.sha256, part.sha256.hexdigest()),
                ]
            for name, want, got in wanted:
                if want != got:
                    raise IntegrityError(f"archive of {download_id}: {name} is {got}, the server said {want}")
            return await asyncio.to_thread(part.commit, directory / _file_name(info.filename, download_id))
        finally:
            await asyncio.to_thread(part.discard)

    async def _fetch_into(
        self, download_id: str, part: _PartFile, on_bytes: Callable[[int, int], None] | None
    ) -> ArchiveInfo:
        info: ArchiveInfo | None = None
        failures = 0
        while info is None or part.size < info.size:
            request = download_pb2.FetchArchiveRequest(id=download_id, offset=part.size)
            metadata = await self.metadata()
            call = self.downloads.FetchArchive(request, metadata=metadata)
            try:
                headers = _archive_info(await call.initial_metadata())
                if info is not None and headers is not None and headers != info:
                    raise IntegrityError(f"the archive of {download_id} changed while it was being fetched")
                info = info or headers
                async for chunk in call:
                    if info is None:
                        raise IntegrityError("FetchArchive sent data without x-archive-size")
                    await asyncio.to_thread(part.write, chunk.data)
                    failures = 0
                    if on_bytes is not None:
                        on_bytes(part.size, info.size)
                if info is None or part.size < info.size:
                    error: WallWhaleError = _cut(download_id)
                else:
                    break
            except grpc.RpcError as raw:
                error = from_rpc_error(raw)
            finally:
                call.cancel()
            failures = await self._recover_stream(error, metadata, failures)
        return info

    async def download(
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
        """Downloads one Workshop item into dest_dir and returns the zip's path.

        Creates the job (idempotent: a retried create with the same request_id finds the same job),
        follows its events until it is final, then saves its archive (see save_archive). Raises
        DownloadFailed if the job fails or is cancelled. `progress` is called with each change."""
        download = await self.create_download(
            url_or_id, request_id=request_id, app_id=app_id, priority=priority, skip_cache=skip_cache
        )
        report = progress or (lambda _: None)
        report(Progress(download))
        async for event in self.watch_download(download.id, exclude_logs=True):
            download = _apply(download, event)
            report(Progress(download))
        if download.state != download_pb2.DOWNLOAD_STATE_SUCCEEDED:
            raise DownloadFailed(download)
        final = download
        return await self.save_archive(
            download.id,
            dest_dir,
            expected=download.archive,
            on_bytes=lambda received, size: report(Progress(final, received, size)),
        )

    # -- batches -------------------------------------------------------------------------------------

    async def create_batch(
        self,
        urls_or_ids: Iterable[str],
        *,
        request_id: str | None = None,
        app_id: int | None = None,
        priority: download_pb2.DownloadPriority.ValueType = download_pb2.DOWNLOAD_PRIORITY_UNSPECIFIED,
        skip_cache: bool = False,
    ) -> download_pb2.Batch:
        """Queues every item (a collection expands into its items). A request_id is made up when
        none is given, so a retried create never queues the batch twice."""
        request = download_pb2.CreateBatchRequest(
            urls_or_ids=list(urls_or_ids),
            app_id=app_id,
            priority=priority,
            request_id=request_id or _request_id(),
            skip_cache=skip_cache,
        )
        response: download_pb2.CreateBatchResponse = await self._call(self.downloads.CreateBatch, request)
        return response.batch

    async def get_batch(self, batch_id: str) -> download_pb2.Batch:
        response: download_pb2.GetBatchResponse = await self._call(
            self.downloads.GetBatch, download_pb2.GetBatchRequest(id=batch_id)
        )
        return response.batch

    async def list_batches(self, *, limit: int = 50) -> list[download_pb2.Batch]:
        """Up to `limit` batches, newest first (the caller's own; every one for admins)."""
        found: list[download_pb2.Batch] = []
        token = ""
        while len(found) < limit:
            request = download_pb2.ListBatchesRequest(
                page_size=min(500, limit - len(found)), page_token=token
            )
            page: download_pb2.ListBatchesResponse = await self._call(self.downloads.ListBatches, request)
            found += page.batches
            token = page.next_page_token
            if not token:
                break
        return found[:limit]

    async def cancel_batch(self, batch_id: str) -> download_pb2.Batch:
        response: download_pb2.CancelBatchResponse = await self._call(
            self.downloads.CancelBatch, download_pb2.CancelBatchRequest(id=batch_id)
        )
        return response.batch

    async def watch_batch(
        self, batch_id: str, *, exclude_logs: bool = False
    ) -> AsyncIterator[download_pb2.WatchBatchResponse]:
        """The events of every download of the batch (its history first), ending with `finished`.

        WatchBatch has no after_sequence: a broken stream is opened again and the server replays the
        batch's history from the start. Events already yielded are skipped (each download's sequence
        numbers tell which), so none is lost or repeated; a reconnect costs one replay."""
        seen: dict[str, int] = {}
        failures = 0
        while True:
            metadata = await self.metadata()
            call = self.downloads.WatchBatch(
                download_pb2.WatchBatchRequest(id=batch_id, exclude_logs=exclude_logs), metadata=metadata
            )
            try:
                async for event in call:
                    failures = 0
                    if event.HasField("download_event"):
                        inner = event.download_event
                        if inner.sequence and inner.sequence <= seen.get(inner.download_id, 0):
                            continue  # replayed after a reconnect
                        seen[inner.download_id] = max(seen.get(inner.download_id, 0), inner.sequence)
                    yield event
                    if event.HasField("finished"):
                        return
                error: WallWhaleError = _cut(batch_id)
            except grpc.RpcError as raw:
                error = from_rpc_error(raw)
            finally:
                call.cancel()
            failures = await self._recover_stream(error, metadata, failures)

    async def save_batch_archive(
        self,
        batch_id: str,
        dest_dir: str | os.PathLike[str] = ".",
        *,
        on_bytes: Callable[[int, int], None] | None = None,
    ) -> BatchArchive:
        """Fetches the zip of the batch's succeeded items into dest_dir under its server-given name.

        A broken stream is resumed from the bytes already written while x-archive-version is the
        same; when it changed (an item's archive was removed meanwhile) the fetch starts again. There
        is no sha256, so the finished file must have the announced size and pass zipfile's testzip()
        (every entry's CRC-32) before it is renamed into place. `info.missing` names the items left
        out; `batch` is the batch as it is now (its counts tell which items failed)."""
        directory = Path(dest_dir)
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        part = await asyncio.to_thread(_PartFile, directory)
        try:
            info = await self._fetch_batch_into(batch_id, part, on_bytes)
            if part.size != info.size:
                raise IntegrityError(
                    f"archive of batch {batch_id}: size is {part.size}, the server said {info.size}"
                )
            await asyncio.to_thread(part.check_zip, f"archive of batch {batch_id}")
            batch = await self.get_batch(batch_id)
            path = await asyncio.to_thread(part.commit, directory / _file_name(info.filename, batch_id))
            return BatchArchive(path=path, info=info, batch=batch)
        finally:
            await asyncio.to_thread(part.discard)

    async def _fetch_batch_into(
        self, batch_id: str, part: _PartFile, on_bytes: Callable[[int, int], None] | None
    ) -> BatchArchiveInfo:
        info: BatchArchiveInfo | None = None
        failures = 0
        restarts = 0
        while info is None or part.size < info.size:
            request = download_pb2.FetchBatchArchiveRequest(id=batch_id, offset=part.size)
            metadata = await self.metadata()
            call = self.downloads.FetchBatchArchive(request, metadata=metadata)
            try:
                headers = _batch_archive_info(await call.initial_metadata())
                if headers is None:
                    # An error status carries no headers: the loop below raises it.
                    async for _ in call:
                        raise IntegrityError("FetchBatchArchive sent data without x-archive-size")
                    raise IntegrityError("FetchBatchArchive answered without x-archive-size")
                if info is not None and headers.version != info.version:
                    # Other item archives, other bytes: what was received is of no use.
                    restarts += 1
                    if restarts > self.retry.attempts:
                        raise IntegrityError(f"the archive of batch {batch_id} kept changing while fetched")
                    await asyncio.to_thread(part.reset)
                    info = headers
                    if request.offset:
                        continue  # asked again from byte 0 (the finally cancels this call)
                elif info is not None and headers.size != info.size:
                    raise IntegrityError(f"the archive of batch {batch_id} changed size but not version")
                info = headers
                async for chunk in call:
                    await asyncio.to_thread(part.write, chunk.data)
                    failures = 0
                    if on_bytes is not None:
                        on_bytes(part.size, info.size)
                if part.size < info.size:
                    error: WallWhaleError = _cut(batch_id)
                else:
                    break
            except grpc.RpcError as raw:
                error = from_rpc_error(raw)
            finally:
                call.cancel()
            failures = await self._recover_stream(error, metadata, failures)
        return info

    async def download_batch(
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
        """Downloads several items (or a collection) into one zip in dest_dir (a folder per item).

        Creates the batch (idempotent by request_id), follows its events until every download is
        final, then saves its archive (see save_batch_archive). Raises BatchFailed when no item
        succeeded; a partly succeeded batch is returned, its counts in `batch`. `progress` is called
        with each change."""
        batch = await self.create_batch(
            urls_or_ids, request_id=request_id, app_id=app_id, priority=priority, skip_cache=skip_cache
        )
        report = progress or (lambda _: None)
        jobs: dict[str, download_pb2.Download] = {}
        report(BatchProgress(batch, dict(jobs)))
        async for event in self.watch_batch(batch.id, exclude_logs=True):
            if event.HasField("finished"):
                batch = event.finished
            elif event.HasField("download_event"):
                inner = event.download_event
                before = jobs.get(inner.download_id, download_pb2.Download(id=inner.download_id))
                jobs[inner.download_id] = _apply(before, inner)
            else:
                continue  # a heartbeat
            report(BatchProgress(batch, dict(jobs)))
        if batch.succeeded_count == 0:
            raise BatchFailed(batch)
        final = batch
        return await self.save_batch_archive(
            batch.id,
            dest_dir,
            on_bytes=lambda received, size: report(BatchProgress(final, dict(jobs), received, size)),
        )

    # -- administration ------------------------------------------------------------------------------

    async def create_api_key(
        self,
        name: str,
        scopes: Iterable[str],
        *,
        owner_user_id: str = "",
        limits: admin_pb2.ApiKeyLimits | None = None,
        request_id: str | None = None,
    ) -> admin_pb2.CreateApiKeyResponse:
        """A new API key; `plaintext_key` in the response is the key itself, shown only this once.

        A retry after a lost answer (same request_id) gets the key the first attempt made, with
        `repeated_request` set and no `plaintext_key`: revoke that key and create another."""
        request = admin_pb2.CreateApiKeyRequest(
            api_key=admin_pb2.ApiKey(name=name, scopes=scopes, owner_user_id=owner_user_id, limits=limits),
            request_id=request_id or _request_id(),
        )
        response: admin_pb2.CreateApiKeyResponse = await self._call(self.admin.CreateApiKey, request)
        return response

    async def list_api_keys(
        self, *, include_revoked: bool = False, limit: int = 500
    ) -> list[admin_pb2.ApiKey]:
        request = admin_pb2.ListApiKeysRequest(page_size=min(limit, 500), include_revoked=include_revoked)
        response: admin_pb2.ListApiKeysResponse = await self._call(self.admin.ListApiKeys, request)
        return list(response.api_keys)

    async def revoke_api_key(self, api_key_id: str) -> admin_pb2.ApiKey:
        response: admin_pb2.RevokeApiKeyResponse = await self._call(
            self.admin.RevokeApiKey, admin_pb2.RevokeApiKeyRequest(id=api_key_id)
        )
        return response.api_key

    async def create_steam_account(
        self,
        username: str,
        password: str = "",
        *,
        display_name: str = "",
        owned_app_ids: Iterable[int] = (),
        request_id: str | None = None,
    ) -> admin_pb2.SteamAccount:
        request = admin_pb2.CreateSteamAccountRequest(
            steam_account=admin_pb2.SteamAccount(
                username=username, display_name=display_name, owned_app_ids=owned_app_ids
            ),
            password=password,
            request_id=request_id or _request_id(),
        )
        response: admin_pb2.CreateSteamAccountResponse = await self._call(
            self.admin.CreateSteamAccount, request
        )
        return response.steam_account

    async def list_steam_accounts(self, *, limit: int = 500) -> list[admin_pb2.SteamAccount]:
        response: admin_pb2.ListSteamAccountsResponse = await self._call(
            self.admin.ListSteamAccounts, admin_pb2.ListSteamAccountsRequest(page_size=min(limit, 500))
        )
        return list(response.steam_accounts)

    async def submit_steam_guard_code(self, steam_account_id: str, code: str) -> admin_pb2.SteamAccount:
        response: admin_pb2.SubmitSteamGuardCodeResponse = await self._call(
            self.admin.SubmitSteamGuardCode,
            admin_pb2.SubmitSteamGuardCodeRequest(id=steam_account_id, code=code),
        )
        return response.steam_account

    async def start_qr_login(self, steam_account_id: str) -> AsyncIterator[admin_pb2.StartQrLoginResponse]:
        """QR codes to scan, then the outcome. Not retried: each call starts a new login."""
        call = self.admin.StartQrLogin(
            admin_pb2.StartQrLoginRequest(id=steam_account_id), metadata=await self.metadata()
        )
        try:
            async for event in call:
                yield event
        except grpc.RpcError as raw:
            raise from_rpc_error(raw) from None
        finally:
            call.cancel()

    async def get_stats(self) -> admin_pb2.GetStatsResponse:
        response: admin_pb2.GetStatsResponse = await self._call(
            self.admin.GetStats, admin_pb2.GetStatsRequest()
        )
        return response


def _request_id() -> str:
    return uuid.uuid4().hex


def _cut(download_id: str) -> WallWhaleError:
    return Unavailable(f"the stream of {download_id} ended early", code=grpc.StatusCode.UNAVAILABLE)


def _apply(
    download: download_pb2.Download, event: download_pb2.WatchDownloadResponse
) -> download_pb2.Download:
    """The download as it is after `event` (state changes carry it whole, progress only its part)."""
    kind = event.WhichOneof("event")
    if kind == "state_changed":
        return event.state_changed.download
    if kind == "finished":
        return event.finished.download
    if kind == "progress":
        updated = download_pb2.Download()
        updated.CopyFrom(download)
        updated.progress.CopyFrom(event.progress)
        return updated
    return download


def _archive_info(metadata: Any) -> ArchiveInfo | None:
    headers = {key: value for key, value in metadata or ()}
    if "x-archive-size" not in headers:
        return None
    return ArchiveInfo(
        size=int(headers["x-archive-size"]),
        sha256=str(headers.get("x-archive-sha256", "")),
        filename=str(headers.get("x-archive-filename", "")),
    )


def _batch_archive_info(metadata: Any) -> BatchArchiveInfo | None:
    headers = {key: value for key, value in metadata or ()}
    if "x-archive-size" not in headers:
        return None
    missing = str(headers.get("x-archive-missing", ""))
    return BatchArchiveInfo(
        size=int(headers["x-archive-size"]),
        version=str(headers.get("x-archive-version", "")),
        filename=str(headers.get("x-archive-filename", "")),
        missing=tuple(int(item) for item in missing.split(",") if item.strip()),
    )


def _file_name(suggested: str, download_id: str) -> str:
    """The server's name for the file, kept inside the destination directory."""
    name = Path(suggested.replace("\\", "/")).name
    return name if name not in ("", ".", "..") else f"{download_id}.zip"


class _PartFile:
    """An archive being received: a hidden temporary file beside the destination, hashed as it is
    written, renamed into place whole (os.replace is atomic within a directory)."""

    def __init__(self, directory: Path):
        handle, name = tempfile.mkstemp(dir=directory, prefix=".wallwhale-", suffix=".part")
        self.path = Path(name)
        self.file: BinaryIO = os.fdopen(handle, "wb")
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.sha256.update(data)
        self.size += len(data)

    def reset(self) -> None:
        """Empty again (to start over when the bytes received belong to another archive)."""
        self.file.seek(0)
        self.file.truncate()
        self.size = 0
        self.sha256 = hashlib.sha256()

    def check_zip(self, what: str) -> None:
        """Reads the zip whole: its directory, and each entry against its CRC-32."""
        self.file.flush()
        try:
            with zipfile.ZipFile(self.path) as archive:
                bad = archive.testzip()  # BadZipFile (a bad CRC-32) is caught inside, the name returned
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise IntegrityError(f"{what} is not a readable zip: {exc}") from None
        if bad is not None:
            raise IntegrityError(f"{what}: entry {bad} does not match its CRC-32")

    def commit(self, target: Path) -> Path:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.path.chmod(0o644)  # mkstemp makes it 0600
        os.replace(self.path, target)
        return target

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.path.unlink(missing_ok=True)
