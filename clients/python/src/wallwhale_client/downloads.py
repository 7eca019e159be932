"""Downloads: queue a Workshop item, follow its job, fetch its zip (AsyncClient's download methods)."""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from google.api import httpbody_pb2

from wallwhale_client.archives import ArchiveInfo, PartFile, archive_info, fetch_into, file_name, part_file
from wallwhale_client.errors import DownloadFailed, IntegrityError, Unimplemented
from wallwhale_client.streams import follow_download
from wallwhale_client.transport import Metadata, StreamCall, Streaming, Transport, Unary, new_request_id
from wallwhale_client.v1 import download_pb2, download_pb2_grpc

FINAL_STATES = frozenset(
    {
        download_pb2.DOWNLOAD_STATE_SUCCEEDED,
        download_pb2.DOWNLOAD_STATE_FAILED,
        download_pb2.DOWNLOAD_STATE_CANCELLED,
    }
)


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


ProgressCallback = Callable[[Progress], None]


class _DownloadRpcs(Protocol):
    CreateDownload: Unary[download_pb2.CreateDownloadRequest, download_pb2.CreateDownloadResponse]
    GetDownload: Unary[download_pb2.GetDownloadRequest, download_pb2.GetDownloadResponse]
    ListDownloads: Unary[download_pb2.ListDownloadsRequest, download_pb2.ListDownloadsResponse]
    CancelDownload: Unary[download_pb2.CancelDownloadRequest, download_pb2.CancelDownloadResponse]
    RetryDownload: Unary[download_pb2.RetryDownloadRequest, download_pb2.RetryDownloadResponse]
    DeleteDownload: Unary[download_pb2.DeleteDownloadRequest, download_pb2.DeleteDownloadResponse]
    WatchDownload: Streaming[download_pb2.WatchDownloadRequest, download_pb2.WatchDownloadResponse]
    FetchArchive: Streaming[download_pb2.FetchArchiveRequest, httpbody_pb2.HttpBody]
    GetArchiveUrl: Unary[download_pb2.GetArchiveUrlRequest, download_pb2.GetArchiveUrlResponse]


def apply_event(
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


class DownloadsApi:
    """AsyncClient's calls for single downloads."""

    _transport: Transport
    downloads: download_pb2_grpc.DownloadServiceStub

    @property
    def _download_rpcs(self) -> _DownloadRpcs:
        return self.downloads

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
            request_id=request_id or new_request_id(),
            skip_cache=skip_cache,
        )
        response = await self._transport.unary(self._download_rpcs.CreateDownload, request)
        return response.download

    async def get_download(self, download_id: str) -> download_pb2.Download:
        request = download_pb2.GetDownloadRequest(id=download_id)
        response = await self._transport.unary(self._download_rpcs.GetDownload, request)
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
            page = await self._transport.unary(self._download_rpcs.ListDownloads, request)
            found += page.downloads
            token = page.next_page_token
            if not token:
                break
        return found[:limit]

    async def cancel_download(self, download_id: str) -> download_pb2.Download:
        request = download_pb2.CancelDownloadRequest(id=download_id)
        response = await self._transport.unary(self._download_rpcs.CancelDownload, request)
        return response.download

    async def retry_download(
        self, download_id: str, *, request_id: str | None = None
    ) -> download_pb2.Download:
        request = download_pb2.RetryDownloadRequest(id=download_id, request_id=request_id or new_request_id())
        response = await self._transport.unary(self._download_rpcs.RetryDownload, request)
        return response.download

    async def delete_download(self, download_id: str) -> None:
        request = download_pb2.DeleteDownloadRequest(id=download_id)
        await self._transport.unary(self._download_rpcs.DeleteDownload, request)

    def watch_download(
        self, download_id: str, *, after_sequence: int = 0, exclude_logs: bool = False
    ) -> AsyncIterator[download_pb2.WatchDownloadResponse]:
        """The download's events after `after_sequence`, ending with its `finished` event. A broken
        stream is opened again after the last sequence number seen (see streams.follow_download)."""

        def watch(after: int, metadata: Metadata) -> StreamCall[download_pb2.WatchDownloadResponse]:
            request = download_pb2.WatchDownloadRequest(
                id=download_id, after_sequence=after, exclude_logs=exclude_logs
            )
            return self._download_rpcs.WatchDownload(request, metadata=metadata)

        return follow_download(self._transport, watch, download_id, after_sequence)

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

        def fetch(offset: int, metadata: Metadata) -> StreamCall[httpbody_pb2.HttpBody]:
            request = download_pb2.FetchArchiveRequest(id=download_id, offset=offset)
            return self._download_rpcs.FetchArchive(request, metadata=metadata)

        def same_archive(first: ArchiveInfo, now: ArchiveInfo) -> bool:
            if now != first:
                raise IntegrityError(f"the archive of {download_id} changed while it was being fetched")
            return True

        directory = Path(dest_dir)
        async with part_file(directory) as part:
            direct = await self.archive_url(download_id)
            if direct is not None and await _fetch_direct(direct, part, expected, on_bytes):
                name = file_name(direct.filename, download_id)
                return await asyncio.to_thread(part.commit, directory / name)
            info = await fetch_into(
                self._transport,
                part,
                what=download_id,
                subject=f"the archive of {download_id}",
                rpc="FetchArchive",
                fetch=fetch,
                read_headers=archive_info,
                same_archive=same_archive,
                on_bytes=on_bytes,
            )
            wanted = [("size", info.size, part.size), ("sha256", info.sha256, part.sha256.hexdigest())]
            if expected is not None:
                wanted += [
                    ("size", expected.size_bytes, part.size),
                    ("sha256", expected.sha256, part.sha256.hexdigest()),
                ]
            for name, want, got in wanted:
                if want != got:
                    raise IntegrityError(f"archive of {download_id}: {name} is {got}, the server said {want}")
            return await asyncio.to_thread(part.commit, directory / file_name(info.filename, download_id))

    async def archive_url(self, download_id: str) -> download_pb2.GetArchiveUrlResponse | None:
        """A short-lived URL that fetches the archive straight from the server's object store, or
        None where the server offers none (archives on its own disk, or a server without it)."""
        request = download_pb2.GetArchiveUrlRequest(id=download_id)
        try:
            response = await self._transport.unary(self._download_rpcs.GetArchiveUrl, request)
        except Unimplemented:
            return None
        return response if response.url else None

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
            download = apply_event(download, event)
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


_DIRECT_BLOCK = 1024 * 1024


async def _fetch_direct(
    direct: download_pb2.GetArchiveUrlResponse,
    part: PartFile,
    expected: download_pb2.Archive | None,
    on_bytes: Callable[[int, int], None] | None,
) -> bool:
    """Fetches the archive by its presigned URL into `part`; True when it arrived whole with the size
    and sha256 announced. Anything else empties `part` again (the caller falls back to FetchArchive)."""
    size, sha256 = direct.size_bytes, direct.sha256
    if not direct.url.startswith(("https://", "http://")):
        return False
    try:
        request = urllib.request.Request(direct.url, headers={"accept-encoding": "identity"})  # noqa: S310
        reply = await asyncio.to_thread(urllib.request.urlopen, request, timeout=30)
        try:
            while block := await asyncio.to_thread(reply.read, _DIRECT_BLOCK):
                await asyncio.to_thread(part.write, block)
                if on_bytes is not None:
                    on_bytes(part.size, size)
        finally:
            reply.close()
    except (OSError, urllib.error.URLError, ValueError):
        await asyncio.to_thread(part.reset)
        return False
    wanted = {(size, sha256)} | ({(expected.size_bytes, expected.sha256)} if expected is not None else set())
    if wanted != {(part.size, part.sha256.hexdigest())}:
        await asyncio.to_thread(part.reset)
        return False
    return True
