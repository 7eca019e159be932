"""Following a download's or a batch's events: the history from the database, then live events.

A stream registers its watcher with the hub before it reads the history, so nothing written in
between is missed; whatever the live feed misses (a full buffer, events written by another
instance) is read again from the database after the last sequence sent, and a quiet stream gets
a heartbeat. Duplicates are skipped by sequence. The streams yield the stored events; the servicer
encodes them.

    watch_download   ends with the download's final state (a final state that a retry left behind
                     in the history does not end it)
    watch_batch      the batch's history in the order it was written (its downloads' events
                     interleaved), then live; ends once every download of the batch is final
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core import batches, downloads, events
from wallwhale.core.batches import Member
from wallwhale.core.events import EventHub, EventKind, StoredEvent
from wallwhale.core.identity import Principal
from wallwhale.core.snapshots import DownloadSnapshot, StateChange, state_in
from wallwhale.core.states import FINAL_STATES
from wallwhale.db.models import Batch, Download, DownloadEvent
from wallwhale.errors import InvalidArgument

_HISTORY_PAGE = 500


@dataclass(frozen=True)
class Heartbeat:
    """Nothing new for `heartbeat_seconds`; `sequence` is the last one sent (0 for a batch)."""

    sequence: int


@dataclass(frozen=True)
class DownloadFinished:
    sequence: int
    download: DownloadSnapshot  # in the final state


@dataclass(frozen=True)
class BatchFinished:
    batch: Batch
    members: list[Member]


async def watch_download(
    readers: async_sessionmaker[AsyncSession],
    hub: EventHub,
    principal: Principal,
    download_id: str,
    after_sequence: int,
    exclude_logs: bool,
    heartbeat_seconds: float,
) -> AsyncIterator[StoredEvent | Heartbeat | DownloadFinished]:
    """The download's events after `after_sequence`; refusals come before the first one."""
    if after_sequence < 0:
        raise InvalidArgument.field("after_sequence", "must not be negative")
    async with readers() as session:
        row = await downloads.get_visible(session, principal, download_id)
        final = row.state in FINAL_STATES
        snapshot = DownloadSnapshot.of(row)
    newest = snapshot.last_event_sequence
    if after_sequence > newest:
        # Checked before the first message: a stream waiting for events that never come would
        # only ever send heartbeats.
        raise InvalidArgument.field("after_sequence", f"is past the newest event ({newest})")
    stream = _DownloadStream(readers, download_id, after_sequence, exclude_logs)
    with hub.watch(download_id, newest, exclude_logs) as watcher:
        async for event in stream.history():
            yield event
        if stream.finished is None and final and stream.last >= newest:
            stream.finished = snapshot
        while stream.finished is None:
            live = await watcher.next(heartbeat_seconds)
            if live is not None:
                if stream.accept(live):
                    yield live
                continue
            # Behind, written elsewhere, or quiet: read the database. Drained first, so events
            # offered during the read stay buffered (duplicates are skipped by sequence).
            watcher.drain()
            caught_up = False
            async for event in stream.history():
                caught_up = True
                yield event
            if not caught_up and stream.finished is None:
                yield Heartbeat(stream.last)
    yield DownloadFinished(stream.last, stream.finished)


class _DownloadStream:
    """The position of one download stream: reads the history, skips what was sent."""

    def __init__(
        self, readers: async_sessionmaker[AsyncSession], download_id: str, after: int, exclude_logs: bool
    ):
        self._readers = readers
        self._download_id = download_id
        self._exclude_logs = exclude_logs
        self.last = after
        self.finished: DownloadSnapshot | None = None

    async def history(self) -> AsyncIterator[StoredEvent]:
        """Everything recorded after `last`."""
        while True:
            async with self._readers() as session:
                page = await events.history(session, self._download_id, self.last, _HISTORY_PAGE)
            for event in page:
                if self.accept(event):
                    yield event
            if len(page) < _HISTORY_PAGE:
                return

    def accept(self, event: StoredEvent) -> bool:
        """Notes the event; whether to send it."""
        if event.sequence <= self.last:
            return False  # already sent (live copy of an event read from the history, or the reverse)
        self.last = event.sequence
        if event.kind is EventKind.STATE:
            final = state_in(event.payload) in FINAL_STATES
            self.finished = StateChange.from_json(event.payload).download if final else None
        return not (event.kind is EventKind.LOG and self._exclude_logs)


async def watch_batch(
    readers: async_sessionmaker[AsyncSession],
    hub: EventHub,
    principal: Principal,
    batch_id: str,
    exclude_logs: bool,
    heartbeat_seconds: float,
) -> AsyncIterator[StoredEvent | Heartbeat | BatchFinished]:
    """The events of every download of the batch; refusals come before the first one."""
    async with readers() as session:
        row = await batches.get_visible(session, principal, batch_id)
        members = (await batches.members(session, [row.id]))[row.id]
    stream = _BatchStream(readers, row.id, members, exclude_logs)
    known = {member.id: member.last_event_sequence for member in members}
    with hub.watch_many(known, exclude_logs) as watcher:
        async for event in stream.history():
            yield event
        async for event in stream.catch_up():
            yield event
        while not stream.done:
            live = await watcher.next(heartbeat_seconds)
            if live is not None:
                if stream.accept(live):
                    yield live
                continue
            watcher.drain()  # behind, written elsewhere, or quiet: read the database
            caught_up = False
            async for event in stream.catch_up():
                caught_up = True
                yield event
            if not caught_up and not stream.done:
                yield Heartbeat(0)
    async with readers() as session:
        row = await batches.get_visible(session, principal, batch_id)
        yield BatchFinished(row, (await batches.members(session, [row.id]))[row.id])


class _BatchStream:
    """The position of one batch stream: the last sequence sent per download, and which are final."""

    def __init__(
        self,
        readers: async_sessionmaker[AsyncSession],
        batch_id: str,
        members: list[Member],
        exclude_logs: bool,
    ):
        self._readers = readers
        self._batch_id = batch_id
        self._exclude_logs = exclude_logs
        self._sent = {member.id: 0 for member in members}
        self._final = {member.id: False for member in members}

    @property
    def done(self) -> bool:
        return all(self._final.values())

    def accept(self, event: StoredEvent) -> bool:
        """Notes the event; whether to send it."""
        last = self._sent.get(event.download_id)
        if last is None or event.sequence <= last:
            return False  # not of this batch, or already sent
        self._sent[event.download_id] = event.sequence
        if event.kind is EventKind.STATE:
            self._final[event.download_id] = state_in(event.payload) in FINAL_STATES
        return not (event.kind is EventKind.LOG and self._exclude_logs)

    async def history(self) -> AsyncIterator[StoredEvent]:
        """The batch's history in the order it was written (its downloads' events interleaved)."""
        after = 0
        while True:
            query = (
                select(DownloadEvent)
                .join(Download, Download.id == DownloadEvent.download_id)
                .where(Download.batch_id == self._batch_id, DownloadEvent.id > after)
                .order_by(DownloadEvent.id)
                .limit(_HISTORY_PAGE)
            )
            if self._exclude_logs:
                query = query.where(DownloadEvent.kind != EventKind.LOG.value)
            async with self._readers() as session:
                rows = list(await session.scalars(query))
            for row in rows:
                after = row.id
                event = StoredEvent.from_row(row)
                if self.accept(event):
                    yield event
            if len(rows) < _HISTORY_PAGE:
                return

    async def catch_up(self) -> AsyncIterator[StoredEvent]:
        """Every event not sent yet, download by download (one query tells which have news)."""
        async with self._readers() as session:
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
                async with self._readers() as session:
                    page = await events.history(session, download_id, self._sent[download_id], _HISTORY_PAGE)
                for event in page:
                    if self.accept(event):
                        yield event
                if len(page) < _HISTORY_PAGE:
                    break
