"""The batch RPCs of DownloadService (core.batches), mixed into DownloadServicer, whose parts they share.

WatchBatch follows every download of the batch with one watcher of the event hub: first the history
(in the order it was written), then live events; whatever the live feed missed (a full buffer, events
written by another instance) is read per download after the last sequence sent. It ends with the
batch once every download is final.

FetchBatchArchive streams a zip assembled from the items' zips (storage.bundle) while it is sent:
nothing is copied on disk, and the layout, hence x-archive-size, is known before the first byte. The
same items give the same bytes, so offset/length resume works; x-archive-version names the set of
item archives, and a client resuming checks that it did not change. There is no x-archive-sha256
(it would need a full pass first); each entry carries its CRC-32, which zip readers check.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from google.api import httpbody_pb2
from grpc import aio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core import batches, downloads, watching
from wallwhale.core.batches import BatchInput
from wallwhale.core.catalog import Catalog
from wallwhale.core.downloads import JobLimits
from wallwhale.core.events import EventHub, StoredEvent
from wallwhale.core.identity import Principal
from wallwhale.core.watching import Heartbeat
from wallwhale.db.models import Batch
from wallwhale.log import get_logger
from wallwhale.rpc import convert
from wallwhale.rpc.calls import current_call
from wallwhale.rpc.servicers.streams import check_range, encoded_in_batch, range_end, send_batch_archive
from wallwhale.storage.archives import Storage
from wallwhale.v1 import download_pb2
from wallwhale.worker.dispatcher import Dispatcher

_log = get_logger("wallwhale.batches")


class _Options(Protocol):
    @property
    def max_attempts(self) -> int: ...
    @property
    def heartbeat_seconds(self) -> float: ...
    @property
    def cancel_wait_seconds(self) -> float: ...


def _audit(batch_id: str) -> None:
    current_call().audit_resource = f"batches/{batch_id}"


class BatchMethods:
    """CreateBatch, GetBatch, ListBatches, CancelBatch, WatchBatch and FetchBatchArchive."""

    _sessions: async_sessionmaker[AsyncSession]
    _readers: async_sessionmaker[AsyncSession]
    _clock: Callable[[], datetime]
    _worker: Dispatcher
    _hub: EventHub
    _storage: Storage
    _catalog: Catalog
    _options: _Options
    _limits: Callable[[AsyncSession, Principal], Awaitable[JobLimits]]

    async def _batch_message(self, session: AsyncSession, row: Batch) -> download_pb2.Batch:
        found = await batches.members(session, [row.id])
        return convert.batch(row, found[row.id])

    async def CreateBatch(
        self, request: download_pb2.CreateBatchRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.CreateBatchResponse:
        principal = current_call().caller()
        checked = batches.check(
            BatchInput(
                urls_or_ids=list(request.urls_or_ids),
                app_id=request.app_id if request.HasField("app_id") else None,
                priority=request.priority or downloads.PRIORITY_NORMAL,
                request_id=request.request_id,
                skip_cache=request.skip_cache,
            )
        )
        async with self._readers() as session:  # a repeated request needs no question to Steam
            earlier = await batches.replay(session, principal, checked)
            if earlier is not None:
                _audit(earlier.id)
                current_call().audit_details.update(replayed=True)
                return download_pb2.CreateBatchResponse(batch=await self._batch_message(session, earlier))
        expansion = await batches.expand(self._catalog.api, checked.workshop_ids)
        now = self._clock()
        async with self._sessions.begin() as session:
            limits = await self._limits(session, principal)
            created = await batches.create(session, principal, checked, expansion, limits, now)
            message = await self._batch_message(session, created.batch)
        _audit(created.batch.id)
        current_call().audit_details.update(
            items=message.total_count, collection_id=message.collection_id, replayed=created.replayed
        )
        return download_pb2.CreateBatchResponse(batch=message)

    async def GetBatch(
        self, request: download_pb2.GetBatchRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.GetBatchResponse:
        async with self._readers() as session:
            row = await batches.get_visible(session, current_call().caller(), request.id)
            return download_pb2.GetBatchResponse(batch=await self._batch_message(session, row))

    async def ListBatches(
        self, request: download_pb2.ListBatchesRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.ListBatchesResponse:
        async with self._readers() as session:
            rows, total, token = await batches.list_visible(
                session, current_call().caller(), request.page_size, request.page_token
            )
            found = await batches.members(session, [row.id for row in rows])
        return download_pb2.ListBatchesResponse(
            batches=[convert.batch(row, found[row.id]) for row in rows],
            next_page_token=token,
            total_size=total,
        )

    async def CancelBatch(
        self, request: download_pb2.CancelBatchRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.CancelBatchResponse:
        principal = current_call().caller()
        _audit(request.id)
        active = await batches.cancel(self._sessions, principal, request.id, self._clock)
        # Jobs running here are stopped now; the answer waits (bounded) until they are cancelled.
        await asyncio.gather(
            *(
                self._worker.cancel_local(download_id, self._options.cancel_wait_seconds)
                for download_id in active
            )
        )
        async with self._readers() as session:
            row = await batches.get_visible(session, principal, request.id)
            return download_pb2.CancelBatchResponse(batch=await self._batch_message(session, row))

    async def WatchBatch(
        self, request: download_pb2.WatchBatchRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[download_pb2.WatchBatchResponse | bytes]:
        async for item in watching.watch_batch(
            self._readers,
            self._hub,
            current_call().caller(),
            request.id,
            request.exclude_logs,
            self._options.heartbeat_seconds,
        ):
            if isinstance(item, StoredEvent):
                yield encoded_in_batch(item)
            elif isinstance(item, Heartbeat):
                yield download_pb2.WatchBatchResponse(heartbeat=download_pb2.HeartbeatEvent())
            else:
                yield download_pb2.WatchBatchResponse(finished=convert.batch(item.batch, item.members))

    async def FetchBatchArchive(
        self, request: download_pb2.FetchBatchArchiveRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        check_range(request.offset, request.length)
        # Everything that can go wrong is found before the first byte (HTTP clients see no trailers).
        plan = await batches.plan_archive(self._readers, current_call().caller(), request.id, self._storage)
        end = range_end(request.offset, request.length, plan.bundle.size)
        async for body in send_batch_archive(plan, request.id, request.offset, end):
            yield body
