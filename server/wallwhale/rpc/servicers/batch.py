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
import hashlib
import re
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from google.api import httpbody_pb2
from grpc import aio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core import batches, downloads, events
from wallwhale.core.batches import BatchInput, Member
from wallwhale.core.catalog import Catalog
from wallwhale.core.downloads import JobLimits
from wallwhale.core.events import EventHub, EventKind, StoredEvent
from wallwhale.core.identity import Principal
from wallwhale.db.models import Batch, BatchState, Download, DownloadEvent, DownloadState
from wallwhale.errors import FailedPrecondition, InvalidArgument, NotFound
from wallwhale.log import get_logger
from wallwhale.rpc import convert
from wallwhale.rpc.calls import current_call
from wallwhale.rpc.servicers.streams import ARCHIVE_CHUNK, FINAL_NAMES, check_range, encoded_in_batch
from wallwhale.storage.archives import Storage, StorageError
from wallwhale.storage.bundle import Bundle, BundleError
from wallwhale.v1 import download_pb2
from wallwhale.worker.dispatcher import Dispatcher

_log = get_logger("wallwhale.batches")
_REPLAY_PAGE = 500


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
        async with self._sessions.begin() as session:
            active = await batches.request_cancel(session, principal, request.id, self._clock())
        for download_id in active:
            # One transaction per download, as CancelDownload does it (see batches.request_cancel).
            try:
                async with self._sessions.begin() as session:
                    await downloads.cancel(session, principal, download_id, self._clock())
            except FailedPrecondition:
                continue  # it became final meanwhile
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
        async with self._readers() as session:
            row = await batches.get_visible(session, current_call().caller(), request.id)
            members = (await batches.members(session, [row.id]))[row.id]
        stream = _BatchStream(self._readers, row.id, members, request.exclude_logs)
        known = {member.id: member.last_event_sequence for member in members}
        with self._hub.watch_many(known, request.exclude_logs) as watcher:
            # Registered before the replay, so nothing written in between is missed.
            async for message in stream.replay():
                yield message
            async for message in stream.catch_up():
                yield message
            while not stream.done:
                event = await watcher.next(self._options.heartbeat_seconds)
                if event is not None:
                    if (accepted := stream.accept(event)) is not None:
                        yield accepted
                    continue
                watcher.drain()  # behind, written elsewhere, or quiet: read the database
                caught_up = False
                async for message in stream.catch_up():
                    caught_up = True
                    yield message
                if not caught_up and not stream.done:
                    yield download_pb2.WatchBatchResponse(heartbeat=download_pb2.HeartbeatEvent())
        async with self._readers() as session:
            row = await batches.get_visible(session, current_call().caller(), request.id)
            yield download_pb2.WatchBatchResponse(finished=await self._batch_message(session, row))

    async def FetchBatchArchive(
        self, request: download_pb2.FetchBatchArchiveRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        check_range(request.offset, request.length)
        async with self._readers() as session:
            row = await batches.get_visible(session, current_call().caller(), request.id)
            succeeded = list(
                await session.scalars(
                    select(Download)
                    .where(Download.batch_id == row.id, Download.state == DownloadState.SUCCEEDED)
                    .order_by(Download.create_time, Download.id)
                )
            )
        if row.state is BatchState.ACTIVE:
            raise FailedPrecondition(
                "the batch is still active; its archive exists once every download is final",
                reason="ARCHIVE_NOT_READY",
            )
        if not succeeded:
            raise FailedPrecondition(
                f"no download of the batch succeeded ({row.state.value.lower().replace('_', ' ')})",
                reason="ARCHIVE_NOT_READY",
            )
        # Everything that can go wrong is found before the first byte (HTTP clients see no trailers).
        available, missing = self._item_archives(succeeded)
        if not available:
            raise NotFound(
                "archive", row.id, "the archives of the batch's items were removed; download them again"
            )
        try:
            bundle = await asyncio.to_thread(Bundle.plan, [(folder, path) for folder, path, _ in available])
        except BundleError as exc:
            _log.warning("batch archive unreadable", batch_id=row.id, error=str(exc))
            raise NotFound("archive", row.id, "an item's archive in storage is damaged") from None
        size = bundle.size
        if request.offset > size:
            raise InvalidArgument.field("offset", f"is past the end of the archive ({size} bytes)")
        end = size if request.length == 0 else min(size, request.offset + request.length)
        version = hashlib.sha256(
            "\n".join(f"{folder} {sha256}" for folder, _, sha256 in available).encode()
        ).hexdigest()
        filename = _batch_filename(row)
        call = current_call()
        for key, value in (
            ("x-archive-size", str(size)),
            ("x-archive-version", version),
            ("x-archive-filename", filename),
            ("content-disposition", f'attachment; filename="{filename}"'),
            ("x-content-range", f"bytes {request.offset}-{max(end - 1, request.offset)}/{size}"),
        ):
            call.add_header(key, value)
        if missing:
            call.add_header("x-archive-missing", ",".join(missing))
        chunks = bundle.chunks(request.offset, end, ARCHIVE_CHUNK)
        reading: asyncio.Future[bytes | None] | None = None
        try:
            while True:
                # Shielded: a client that leaves cancels this wait, but the read goes on in its
                # thread, and the generator cannot be closed until it ends (see finally).
                reading = asyncio.ensure_future(asyncio.to_thread(_next_chunk, chunks))
                if (data := await asyncio.shield(reading)) is None:
                    break
                yield httpbody_pb2.HttpBody(content_type="application/zip", data=data)
        except BundleError as exc:
            # Removed or damaged while it was being sent: the client sees a short body and a size
            # that does not match; the reason is in the server's log.
            _log.warning("batch archive stream broken", batch_id=row.id, error=str(exc))
            raise NotFound("archive", row.id, "an item's archive changed while it was being sent") from None
        finally:
            if reading is not None:
                await asyncio.wait([reading])
            await asyncio.to_thread(chunks.close)
        if request.offset == end:  # nothing to send: an empty body still tells the headers
            yield httpbody_pb2.HttpBody(content_type="application/zip")

    def _item_archives(self, succeeded: list[Download]) -> tuple[list[tuple[str, Path, str]], list[str]]:
        """(folder, path, sha256) of each item whose zip is in storage as recorded; the workshop
        ids of the others (expired, deleted or damaged), which the archive leaves out."""
        available: list[tuple[str, Path, str]] = []
        missing: list[str] = []
        for download in succeeded:
            folder = str(download.workshop_id)
            if download.archive_state != "AVAILABLE" or not download.archive_path:
                missing.append(folder)
                continue
            try:
                path = self._storage.path_of(download.archive_path)
                intact = path.stat().st_size == download.archive_size
            except (StorageError, OSError):
                intact = False
            if intact:
                available.append((folder, path, download.archive_sha256 or ""))
            else:
                missing.append(folder)
        return available, missing


def _next_chunk(chunks: Generator[bytes]) -> bytes | None:
    return next(chunks, None)


def _batch_filename(row: Batch) -> str:
    """'3078111111-my-collection.zip', or 'batch-<id>-12-items.zip' (ASCII, no path characters)."""
    ascii_title = unicodedata.normalize("NFKD", row.title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_title).strip("-").lower()[:60].rstrip("-")
    prefix = str(row.collection_id) if row.collection_id else f"batch-{row.id}"
    return f"{prefix}-{slug}.zip" if slug else f"{prefix}.zip"


class _BatchStream:
    """The position of one WatchBatch stream: the last sequence sent per download, and which are final."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        batch_id: str,
        members: list[Member],
        exclude_logs: bool,
    ):
        self._sessions = sessions
        self._batch_id = batch_id
        self._exclude_logs = exclude_logs
        self._sent = {member.id: 0 for member in members}
        self._final = {member.id: False for member in members}

    @property
    def done(self) -> bool:
        return all(self._final.values())

    def accept(self, event: StoredEvent) -> bytes | None:
        last = self._sent.get(event.download_id)
        if last is None or event.sequence <= last:
            return None  # not of this batch, or already sent
        self._sent[event.download_id] = event.sequence
        if event.kind is EventKind.STATE:
            self._final[event.download_id] = event.payload["download"]["state"] in FINAL_NAMES
        if event.kind is EventKind.LOG and self._exclude_logs:
            return None
        return encoded_in_batch(event)

    async def replay(self) -> AsyncIterator[bytes]:
        """The batch's history in the order it was written (its downloads' events interleaved)."""
        after = 0
        while True:
            query = (
                select(DownloadEvent)
                .join(Download, Download.id == DownloadEvent.download_id)
                .where(Download.batch_id == self._batch_id, DownloadEvent.id > after)
                .order_by(DownloadEvent.id)
                .limit(_REPLAY_PAGE)
            )
            if self._exclude_logs:
                query = query.where(DownloadEvent.kind != EventKind.LOG.value)
            async with self._sessions() as session:
                rows = list(await session.scalars(query))
            for row in rows:
                after = row.id
                if (message := self.accept(StoredEvent.from_row(row))) is not None:
                    yield message
            if len(rows) < _REPLAY_PAGE:
                return

    async def catch_up(self) -> AsyncIterator[bytes]:
        """Every event not sent yet, download by download (one query tells which have news)."""
        async with self._sessions() as session:
            newest = await session.execute(
                select(Download.id, Download.last_event_sequence).where(Download.batch_id == self._batch_id)
            )
            behind = [
                download_id
                for download_id, sequence in newest
                if sequence > self._sent.get(download_id, sequence)
            ]
        for download_id in behind:
            while True:
                async with self._sessions() as session:
                    page = await events.history(session, download_id, self._sent[download_id], _REPLAY_PAGE)
                for event in page:
                    if (message := self.accept(event)) is not None:
                        yield message
                if len(page) < _REPLAY_PAGE:
                    break
