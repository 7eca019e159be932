"""A download's event log: written to the database first, then fanned out to the watchers in memory.

The database is the truth (a watcher that joins late or reconnects replays from it); the hub only
spares the live watchers a query per event. A watcher is a bounded queue: one that falls behind is
told so and catches up from the database, so a client that stops reading costs no unbounded memory.
Events written by another instance reach this one's watchers through `EventHub.notify` (PostgreSQL
LISTEN/NOTIFY) and, as a safety net, through a slow poll by each stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.db.models import Download, DownloadEvent

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
    """Adds events to a download's log in the caller's transaction, numbering them after the last.

    The counter is bumped with one UPDATE … RETURNING, which also locks the row until commit: two
    writers of the same download (a worker and a cancel) can never hand out the same number.
    """
    if not events:
        return []
    last = await session.scalar(
        update(Download)
        .where(Download.id == download.id)
        .values(last_event_sequence=Download.last_event_sequence + len(events))
        .returning(Download.last_event_sequence)
        .execution_options(synchronize_session=False)
    )
    assert last is not None
    download.last_event_sequence = last
    first = last - len(events) + 1
    stored = [
        StoredEvent(download.id, first + offset, now, event.kind, event.payload)
        for offset, event in enumerate(events)
    ]
    session.add_all(
        DownloadEvent(
            download_id=event.download_id,
            sequence=event.sequence,
            event_time=event.event_time,
            kind=event.kind.value,
            payload=event.payload,
        )
        for event in stored
    )
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


@dataclass(eq=False)
class Watcher:
    download_id: str
    queue: asyncio.Queue[StoredEvent] = field(default_factory=lambda: asyncio.Queue(WATCHER_QUEUE_SIZE))
    # Set when events were dropped (the queue was full) or written elsewhere: read the database.
    behind: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, event: StoredEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.behind.set()

    async def next(self, wait_seconds: float) -> StoredEvent | None:
        """The next live event, or None when the watcher must catch up from the database (or timed out)."""
        if self.behind.is_set():
            return None
        getter = asyncio.ensure_future(self.queue.get())
        behind = asyncio.ensure_future(self.behind.wait())
        try:
            done, _ = await asyncio.wait(
                {getter, behind}, timeout=wait_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            behind.cancel()
            if not getter.done():
                getter.cancel()
        if getter in done:
            return getter.result()
        return None

    def drain(self) -> None:
        """Forgets the queued events (about to be re-read from the database)."""
        self.behind.clear()
        while not self.queue.empty():
            self.queue.get_nowait()


class EventHub:
    """Live watchers of this instance, by download."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[Watcher]] = {}

    @contextmanager
    def watch(self, download_id: str) -> Iterator[Watcher]:
        watcher = Watcher(download_id)
        self._watchers.setdefault(download_id, set()).add(watcher)
        try:
            yield watcher
        finally:
            watchers = self._watchers.get(download_id)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[download_id]

    def publish(self, events: list[StoredEvent]) -> None:
        for event in events:
            for watcher in self._watchers.get(event.download_id, ()):
                watcher.offer(event)

    def notify(self, download_id: str) -> None:
        """Events of this download were written by another instance: its watchers re-read the database."""
        for watcher in self._watchers.get(download_id, ()):
            watcher.behind.set()

    def watched(self) -> set[str]:
        return set(self._watchers)

    @property
    def watcher_count(self) -> int:
        return sum(len(watchers) for watchers in self._watchers.values())
