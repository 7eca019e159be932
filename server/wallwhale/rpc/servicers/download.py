"""DownloadService: jobs (core.downloads), their event streams (core.events) and archives (storage).

The batch RPCs are in servicers/batch.py, the share links in servicers/links.py, mixed into the same
servicer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from google.api import httpbody_pb2
from grpc import aio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core import archives, downloads, watching
from wallwhale.core.catalog import Catalog
from wallwhale.core.downloads import CreateInput, JobLimits, ListFilter
from wallwhale.core.events import EventHub, StoredEvent
from wallwhale.core.identity import Principal
from wallwhale.core.snapshots import DownloadSnapshot
from wallwhale.core.watching import Heartbeat
from wallwhale.db.engine import ConnectionRunner
from wallwhale.db.models import Download, DownloadState
from wallwhale.errors import InvalidArgument
from wallwhale.rpc import convert
from wallwhale.rpc.calls import current_call
from wallwhale.rpc.servicers.batch import BatchMethods
from wallwhale.rpc.servicers.links import LinkMethods, LinkOptions
from wallwhale.rpc.servicers.streams import check_range, encoded, range_end, send_archive
from wallwhale.steam.workshop import MAX_WORKSHOP_ID, parse_workshop_id
from wallwhale.storage.archives import Storage
from wallwhale.v1 import download_pb2, download_pb2_grpc
from wallwhale.worker.dispatcher import Dispatcher

_STATES = {
    value: DownloadState(name.removeprefix("DOWNLOAD_STATE_"))
    for name, value in download_pb2.DownloadState.items()
    if value
}


@dataclass(frozen=True)
class DownloadOptions:
    max_attempts: int
    heartbeat_seconds: float
    # A running job cancelled on this instance: how long CancelDownload waits to answer CANCELLED.
    cancel_wait_seconds: float
    # How long GetArchiveUrl's presigned URLs work.
    archive_url_seconds: int = 300


def _principal() -> Principal:
    return current_call().caller()


def _audit(download_id: str) -> None:
    current_call().audit_resource = f"downloads/{download_id}"


# WatchBatch, like WatchDownload, yields events encoded once (streams.encoded): unlike the stub says.
class DownloadServicer(BatchMethods, LinkMethods, download_pb2_grpc.DownloadServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        readers: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime],
        worker: Dispatcher,
        hub: EventHub,
        storage: Storage,
        options: DownloadOptions,
        catalog: Catalog,
        connections: ConnectionRunner,
        links: LinkOptions,
    ):
        self._sessions = sessions
        self._readers = readers
        self._clock = clock
        self._worker = worker
        self._hub = hub
        self._storage = storage
        self._options = options
        self._archive_url_seconds = options.archive_url_seconds
        self._catalog = catalog
        self._connections = connections
        self._links = links

    async def _limits(self, session: AsyncSession, principal: Principal) -> JobLimits:
        return await downloads.job_limits(session, principal, self._options.max_attempts)

    async def _message(self, session: AsyncSession, row: Download) -> download_pb2.Download:
        position = await downloads.queue_position(session, row, self._clock())
        return convert.download(DownloadSnapshot.of(row), position)

    async def CreateDownload(
        self, request: download_pb2.CreateDownloadRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.CreateDownloadResponse:
        principal = _principal()
        data = CreateInput(
            url_or_id=request.url_or_id,
            app_id=request.app_id if request.HasField("app_id") else None,
            priority=request.priority or downloads.PRIORITY_NORMAL,
            request_id=request.request_id,
            steam_account_id=request.steam_account_id,
            skip_cache=request.skip_cache,
        )
        # Asked before the transaction: an HTTP round trip must not hold the database's write lock.
        item = await self._catalog.downloadable(parse_workshop_id(data.url_or_id))
        now = self._clock()
        async with self._sessions.begin() as session:
            created = await downloads.create(
                session, principal, data, await self._limits(session, principal), now, item
            )
            message = await self._message(session, created.download)
        _audit(created.download.id)
        current_call().audit_details.update(
            workshop_id=created.download.workshop_id, replayed=created.replayed
        )
        return download_pb2.CreateDownloadResponse(download=message)

    async def GetDownload(
        self, request: download_pb2.GetDownloadRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.GetDownloadResponse:
        principal, now = _principal(), self._clock()
        values, position = await self._connections.read(
            lambda connection: downloads.read_visible(connection, principal, request.id, now)
        )
        return download_pb2.GetDownloadResponse(download=convert.download(values, position))

    async def ListDownloads(
        self, request: download_pb2.ListDownloadsRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.ListDownloadsResponse:
        unknown = [value for value in request.states if value not in _STATES]
        if unknown:
            raise InvalidArgument.field("states", f"unknown state {unknown[0]}")
        if request.workshop_id > MAX_WORKSHOP_ID:
            raise InvalidArgument.field("workshop_id", f"must be at most {MAX_WORKSHOP_ID}")
        filters = ListFilter(
            states=tuple(_STATES[value] for value in request.states),
            workshop_id=request.workshop_id,
            create_time_after=convert.requested_time(request, "create_time_after"),
            create_time_before=convert.requested_time(request, "create_time_before"),
            batch_id=request.batch_id,
            owner_user_id=request.owner_user_id,
        )
        async with self._readers() as session:
            rows, total, token = await downloads.list_visible(
                session, _principal(), filters, request.page_size, request.page_token
            )
            messages = [await self._message(session, row) for row in rows]
        return download_pb2.ListDownloadsResponse(downloads=messages, next_page_token=token, total_size=total)

    async def CancelDownload(
        self, request: download_pb2.CancelDownloadRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.CancelDownloadResponse:
        principal = _principal()
        _audit(request.id)
        async with self._sessions.begin() as session:
            await downloads.cancel(session, principal, request.id, self._clock())
        # Running here: stop it now and answer with the final state. Running elsewhere: that
        # instance sees the request at its next lease renewal.
        await self._worker.cancel_local(request.id, self._options.cancel_wait_seconds)
        async with self._readers() as session:
            row = await downloads.get_visible(session, principal, request.id)
            return download_pb2.CancelDownloadResponse(download=await self._message(session, row))

    async def RetryDownload(
        self, request: download_pb2.RetryDownloadRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.RetryDownloadResponse:
        principal = _principal()
        _audit(request.id)
        async with self._sessions.begin() as session:
            limits = await self._limits(session, principal)
            row = await downloads.retry(
                session, principal, request.id, request.request_id, limits, self._clock()
            )
            message = await self._message(session, row)
        return download_pb2.RetryDownloadResponse(download=message)

    async def DeleteDownload(
        self, request: download_pb2.DeleteDownloadRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.DeleteDownloadResponse:
        _audit(request.id)
        async with self._sessions.begin() as session:
            await downloads.delete(session, _principal(), request.id, self._clock())
        return download_pb2.DeleteDownloadResponse()

    async def WatchDownload(  # type: ignore[override]  # events go out encoded once (streams.encoded)
        self, request: download_pb2.WatchDownloadRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[download_pb2.WatchDownloadResponse | bytes]:
        async for item in watching.watch_download(
            self._readers,
            self._hub,
            _principal(),
            request.id,
            request.after_sequence,
            request.exclude_logs,
            self._options.heartbeat_seconds,
        ):
            if isinstance(item, StoredEvent):
                yield encoded(item)
            elif isinstance(item, Heartbeat):
                yield download_pb2.WatchDownloadResponse(
                    sequence=item.sequence,
                    event_time=convert.timestamp(self._clock()),
                    download_id=request.id,
                    heartbeat=download_pb2.HeartbeatEvent(),
                )
            else:
                yield download_pb2.WatchDownloadResponse(
                    sequence=item.sequence,
                    event_time=convert.timestamp(self._clock()),
                    download_id=request.id,
                    finished=download_pb2.FinishedEvent(download=convert.download(item.download)),
                )

    async def FetchArchive(
        self, request: download_pb2.FetchArchiveRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        check_range(request.offset, request.length)
        async with self._readers() as session:
            row = await downloads.get_visible(session, _principal(), request.id)
        opened = await asyncio.to_thread(archives.open_for_fetch, row, self._storage)
        try:
            end = range_end(request.offset, request.length, opened.size)
        except InvalidArgument:
            opened.file.close()
            raise
        async for body in send_archive(opened, request.offset, end):
            yield body

    async def GetArchiveUrl(
        self, request: download_pb2.GetArchiveUrlRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.GetArchiveUrlResponse:
        async with self._readers() as session:
            row = await downloads.get_visible(session, _principal(), request.id)
        seconds = self._archive_url_seconds
        url = await asyncio.to_thread(archives.direct_url, row, self._storage, seconds)
        return download_pb2.GetArchiveUrlResponse(
            url=url,
            expire_time=convert.timestamp(self._clock() + timedelta(seconds=seconds)) if url else None,
            size_bytes=row.archive_size or 0,
            sha256=row.archive_sha256 or "",
            filename=archives.filename_of(row),
        )
