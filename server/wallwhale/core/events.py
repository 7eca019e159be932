"""A download's event log: written to the database first, then fanned out to the watchers in memory.

The database is the truth (a watcher that joins late or reconnects reads the history from it); the
hub only spares the live watchers a query per event. A watcher is a bounded queue: one that falls behind is
told so and catches up from the database, so a client that stops reading costs no unbounded memory.
Events written by another instance reach this one's watchers through PostgreSQL LISTEN/NOTIFY
(`EventHub.announced`) and, as a safety net, through a slow poll by each stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core.after_commit import after_commit
from wallwhale.db.models import Download, DownloadEvent
from wallwhale.db.notify import Channel, announce

WATCHER_QUEUE_SIZE = 256


class EventKind(StrEnum):
    STATE = "state"
    PROGRESS = "progress"
    LOG = "log"


@dataclass(frozen=True)
class StoredEvent:
    download_id: str
    sequence: int
    event_time: datetime
    kind: EventKind
    payload: dict[str, Any]

    @classmethod
    def from_row(cls, row: DownloadEvent) -> StoredEvent:
        return cls(row.download_id, row.sequence, row.event_time, EventKind(row.kind), row.payload)


@dataclass(frozen=True)
class NewEvent:
    kind: EventKind
    payload: dict[str, Any]


async def append(
    session: AsyncSession, download: Download, events: list[NewEvent], now: datetime
) -> list[StoredEvent]:
    """Adds events to a download's log in the caller's transaction, numbering them after the last."""
    stored = await append_to(session, download.id, events, now)
    assert stored is not None
    if stored:
        download.last_event_sequence = stored[-1].sequence
    return stored


async def append_to(
    session: AsyncSession,
    download_id: str,
    events: list[NewEvent],
    now: datetime,
    *,
    where: tuple[Any, ...] = (),
    values: dict[str, Any] | None = None,
) -> list[StoredEvent] | None:
    """Adds events by download id; None when the row does not match `where` (e.g. a lease lost).

    The counter is bumped with one UPDATE … RETURNING (which may also set `values`), and that locks
    the row until commit: two writers of the same download never hand out the same number.
    """
    if not events and not values:
        return []
    last = await session.scalar(
        update(Download)
        .where(Download.id == download_id, *where)
        .values(last_event_sequence=Download.last_event_sequence + len(events), **(values or {}))
        .returning(Download.last_event_sequence)
        .execution_options(synchronize_session=False)
    )
    if last is None:
        return None
    if not events:
        return []
    await announce(session, Channel.EVENTS, f"{download_id}:{last}")
    first = last - len(events) + 1
    stored = [
        StoredEvent(download_id, first + offset, now, event.kind, event.payload)
        for offset, event in enumerate(events)
    ]
    await _insert(session, stored)
    return stored


async def _insert(session: AsyncSession, stored: list[StoredEvent]) -> None:
    """Writes the events; they reach this instance's watchers once the transaction has committed."""
    after_commit(session).publish(stored)
    await session.execute(
        insert(DownloadEvent),
        [
            {
                "download_id": event.download_id,
                "sequence": event.sequence,
                "event_time": event.event_time,
                "kind": event.kind.value,
                "payload": event.payload,
            }
            for event in stored
        ],
    )


async def append_first(
    session: AsyncSession, firsts: list[tuple[Download, list[NewEvent]]], now: datetime
) -> list[StoredEvent]:
    """The first events of downloads created in this transaction, numbered from 1, in one INSERT.

    Nothing is announced: nobody can be watching a download that did not exist before this commit.
    """
    stored: list[StoredEvent] = []
    for download, new in firsts:
        stored += [
            StoredEvent(download.id, sequence, now, event.kind, event.payload)
            for sequence, event in enumerate(new, start=1)
        ]
        download.last_event_sequence = len(new)
    if stored:
        await _insert(session, stored)
    return stored


async def history(
    session: AsyncSession, download_id: str, after_sequence: int, limit: int = 500
) -> list[StoredEvent]:
    rows = await session.scalars(
        select(DownloadEvent)
        .where(DownloadEvent.download_id == download_id, DownloadEvent.sequence > after_sequence)
        .order_by(DownloadEvent.sequence)
        .limit(limit)
    )
    return [StoredEvent.from_row(row) for row in rows]


class Watcher:
    """One stream's live events: a bounded buffer and at most one pending wake-up.

    Built for fan-out to many streams: offering an event is a deque append (and waking the one
    waiting stream), with no task, queue or timer per event. A progress event not sent yet is
    replaced by a newer one of the same download (a watcher that is behind gets the newest
    progress only); states, log lines and their order are kept, and a skipped sequence is still in
    the database for a stream that resumes.
    """

    def __init__(self, download_id: str, exclude_logs: bool = False):
        self.download_id = download_id
        self.exclude_logs = exclude_logs
        # Set when events were dropped (the buffer was full) or written elsewhere: read the database.
        self.behind = False
        self._events: deque[StoredEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        # One timer per quiet period, re-armed only when it fires early, not one per wait.
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_since = 0.0
        self._timed_out = False

    def offer(self, event: StoredEvent) -> None:
        if self.exclude_logs and event.kind is EventKind.LOG:
            return
        buffered = self._events
        if buffered:
            last = buffered[-1]
            if (
                event.kind is EventKind.PROGRESS
                and last.kind is EventKind.PROGRESS
                and last.download_id == event.download_id
            ):
                buffered[-1] = event  # superseded before it was sent
                return
            if len(buffered) >= WATCHER_QUEUE_SIZE:
                buffered.clear()
                self.fall_behind()
                return
        buffered.append(event)
        self._wake()

    def fall_behind(self) -> None:
        self.behind = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _expire(self, wait_seconds: float) -> None:
        self._timer = None
        if self._waiter is None:
            return  # sending: its next wait arms a new timer
        loop = asyncio.get_running_loop()
        deadline = self._waiting_since + wait_seconds
        if loop.time() < deadline:  # armed during an earlier wait
            self._timer = loop.call_at(deadline, self._expire, wait_seconds)
            return
        self._timed_out = True
        self._wake()

    async def next(self, wait_seconds: float) -> StoredEvent | None:
        """The next live event, or None when the watcher must catch up from the database (or timed out)."""
        if not self._events and not self.behind:
            loop = asyncio.get_running_loop()
            self._waiting_since = loop.time()
            if self._timer is None:
                self._timer = loop.call_at(self._waiting_since + wait_seconds, self._expire, wait_seconds)
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            if self._timed_out:
                self._timed_out = False
                return None
        if self.behind or not self._events:
            return None
        return self._events.popleft()

    def drain(self) -> None:
        """Forgets the buffered events (about to be re-read from the database)."""
        self.behind = False
        self._events.clear()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class EventHub:
    """Live watchers of this instance, by download.

    Events written here are published when their transaction commits (core.after_commit). Events
    written by another instance are announced (PostgreSQL NOTIFY, with the download's newest
    sequence); the hub then reads them once from the database and publishes them to all its
    watchers of that download.
    """

    def __init__(self, readers: async_sessionmaker[AsyncSession] | None = None) -> None:
        self._readers = readers
        self._watchers: dict[str, set[Watcher]] = {}
        # Per watched download: the newest sequence published to its watchers.
        self._last: dict[str, int] = {}
        self._fetching: dict[str, asyncio.Task[None]] = {}
        # Per watched download: the newest sequence another instance announced.
        self._announced: dict[str, int] = {}

    def watch(
        self, download_id: str, known_last: int = 0, exclude_logs: bool = False
    ) -> AbstractContextManager[Watcher]:
        """A new watcher; `known_last` is the newest sequence it will read from the database itself."""
        return self._registered(Watcher(download_id, exclude_logs), {download_id: known_last})

    def watch_many(
        self, known_last: Mapping[str, int], exclude_logs: bool = False
    ) -> AbstractContextManager[Watcher]:
        """One watcher for the events of several downloads (a batch); `known_last` as in watch()."""
        return self._registered(Watcher("", exclude_logs), known_last)  # no single download

    @contextmanager
    def _registered(self, watcher: Watcher, known_last: Mapping[str, int]) -> Iterator[Watcher]:
        for download_id, last in known_last.items():
            self._watchers.setdefault(download_id, set()).add(watcher)
            self._last.setdefault(download_id, last)
        try:
            yield watcher
        finally:
            watcher.close()
            for download_id in known_last:
                watchers = self._watchers.get(download_id)
                if watchers is not None:
                    watchers.discard(watcher)
                    if not watchers:
                        del self._watchers[download_id]
                        self._last.pop(download_id, None)

    def publish(self, events: list[StoredEvent]) -> None:
        for event in events:
            watchers = self._watchers.get(event.download_id)
            if not watchers:
                continue
            if event.sequence > self._last.get(event.download_id, 0):
                self._last[event.download_id] = event.sequence
            for watcher in watchers:
                watcher.offer(event)

    def announced(self, download_id: str, sequence: int) -> None:
        """Another instance wrote events of this download, up to `sequence`."""
        if download_id not in self._watchers or sequence <= self._last.get(download_id, 0):
            return  # nobody here watches it, or they have it already (this instance wrote it)
        if self._readers is None:
            self.mark_behind(download_id)
            return
        # A fetch under way reads on until it reaches the newest announced sequence.
        self._announced[download_id] = max(sequence, self._announced.get(download_id, 0))
        if download_id not in self._fetching:
            task = asyncio.create_task(self._fetch(download_id))
            self._fetching[download_id] = task
            task.add_done_callback(lambda _: self._fetching.pop(download_id, None))

    async def _fetch(self, download_id: str) -> None:
        assert self._readers is not None
        try:
            while download_id in self._watchers:
                after = self._last.get(download_id, 0)
                if after >= self._announced.get(download_id, 0):
                    break
                async with self._readers() as session:
                    events = await history(session, download_id, after)
                if not events:
                    break
                self.publish(events)
        except Exception:
            self.mark_behind(download_id)  # let each stream read for itself
        finally:
            if download_id not in self._watchers:
                self._announced.pop(download_id, None)

    def mark_behind(self, download_id: str) -> None:
        """Its watchers must re-read the database (events may have been missed)."""
        for watcher in self._watchers.get(download_id, ()):
            watcher.fall_behind()

    def mark_all_behind(self) -> None:
        for download_id in list(self._watchers):
            self.mark_behind(download_id)

    def watched(self) -> set[str]:
        return set(self._watchers)

    @property
    def watcher_count(self) -> int:
        return sum(len(watchers) for watchers in self._watchers.values())
