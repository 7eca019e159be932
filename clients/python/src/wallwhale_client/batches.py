"""Batches: several items (or a collection) queued together and saved as one zip with a folder per
item (AsyncClient's batch methods)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from google.api import httpbody_pb2

from wallwhale_client.archives import BatchArchiveInfo, batch_archive_info, fetch_into, file_name, part_file
from wallwhale_client.downloads import FINAL_STATES, apply_event
from wallwhale_client.errors import BatchFailed, IntegrityError
from wallwhale_client.streams import follow_batch
from wallwhale_client.transport import Metadata, StreamCall, Streaming, Transport, Unary, new_request_id
from wallwhale_client.v1 import download_pb2, download_pb2_grpc


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
class BatchArchive:
    """What save_batch_archive() saved: where, what the server said of it, and the final batch."""

    path: Path
    info: BatchArchiveInfo
    batch: download_pb2.Batch


BatchProgressCallback = Callable[[BatchProgress], None]


class _BatchRpcs(Protocol):
    CreateBatch: Unary[download_pb2.CreateBatchRequest, download_pb2.CreateBatchResponse]
    GetBatch: Unary[download_pb2.GetBatchRequest, download_pb2.GetBatchResponse]
    ListBatches: Unary[download_pb2.ListBatchesRequest, download_pb2.ListBatchesResponse]
    CancelBatch: Unary[download_pb2.CancelBatchRequest, download_pb2.CancelBatchResponse]
    WatchBatch: Streaming[download_pb2.WatchBatchRequest, download_pb2.WatchBatchResponse]
    FetchBatchArchive: Streaming[download_pb2.FetchBatchArchiveRequest, httpbody_pb2.HttpBody]


class BatchesApi:
    """AsyncClient's calls for batches."""

    _transport: Transport
    downloads: download_pb2_grpc.DownloadServiceStub

    @property
    def _batch_rpcs(self) -> _BatchRpcs:
        return self.downloads

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
            request_id=request_id or new_request_id(),
            skip_cache=skip_cache,
        )
        response = await self._transport.unary(self._batch_rpcs.CreateBatch, request)
        return response.batch

    async def get_batch(self, batch_id: str) -> download_pb2.Batch:
        request = download_pb2.GetBatchRequest(id=batch_id)
        response = await self._transport.unary(self._batch_rpcs.GetBatch, request)
        return response.batch

    async def list_batches(self, *, limit: int = 50) -> list[download_pb2.Batch]:
        """Up to `limit` batches, newest first (the caller's own; every one for admins)."""
        found: list[download_pb2.Batch] = []
        token = ""
        while len(found) < limit:
            request = download_pb2.ListBatchesRequest(
                page_size=min(500, limit - len(found)), page_token=token
            )
            page = await self._transport.unary(self._batch_rpcs.ListBatches, request)
            found += page.batches
            token = page.next_page_token
            if not token:
                break
        return found[:limit]

    async def cancel_batch(self, batch_id: str) -> download_pb2.Batch:
        request = download_pb2.CancelBatchRequest(id=batch_id)
        response = await self._transport.unary(self._batch_rpcs.CancelBatch, request)
        return response.batch

    def watch_batch(
        self, batch_id: str, *, exclude_logs: bool = False
    ) -> AsyncIterator[download_pb2.WatchBatchResponse]:
        """The events of every download of the batch (its history first), ending with `finished`.
        A broken stream is opened again; what its replay repeats is skipped (see streams.follow_batch)."""

        def watch(metadata: Metadata) -> StreamCall[download_pb2.WatchBatchResponse]:
            request = download_pb2.WatchBatchRequest(id=batch_id, exclude_logs=exclude_logs)
            return self._batch_rpcs.WatchBatch(request, metadata=metadata)

        return follow_batch(self._transport, watch, batch_id)

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

        def fetch(offset: int, metadata: Metadata) -> StreamCall[httpbody_pb2.HttpBody]:
            request = download_pb2.FetchBatchArchiveRequest(id=batch_id, offset=offset)
            return self._batch_rpcs.FetchBatchArchive(request, metadata=metadata)

        def same_archive(first: BatchArchiveInfo, now: BatchArchiveInfo) -> bool:
            if now.version != first.version:
                return False  # other item archives: start again
            if now.size != first.size:
                raise IntegrityError(f"the archive of batch {batch_id} changed size but not version")
            return True

        directory = Path(dest_dir)
        async with part_file(directory) as part:
            info = await fetch_into(
                self._transport,
                part,
                what=batch_id,
                subject=f"the archive of batch {batch_id}",
                rpc="FetchBatchArchive",
                fetch=fetch,
                read_headers=batch_archive_info,
                same_archive=same_archive,
                on_bytes=on_bytes,
            )
            if part.size != info.size:
                raise IntegrityError(
                    f"archive of batch {batch_id}: size is {part.size}, the server said {info.size}"
                )
            await asyncio.to_thread(part.check_zip, f"archive of batch {batch_id}")
            batch = await self.get_batch(batch_id)
            path = await asyncio.to_thread(part.commit, directory / file_name(info.filename, batch_id))
            return BatchArchive(path=path, info=info, batch=batch)

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
                jobs[inner.download_id] = apply_event(before, inner)
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
