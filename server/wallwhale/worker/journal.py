"""A running job's progress and log lines, written in small batches.

Log lines are kept until the next write; of progress only the newest counts, and it is written at
most every `progress_interval` (a state change takes it at once). A write either rides along with
the job's next state change (`write_into`, in that transaction) or is a flush of its own: one
conditional UPDATE (lease still held? next sequence, progress columns) and the inserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.core import events, queue
from wallwhale.core.events import EventKind, NewEvent
from wallwhale.db.models import Download
from wallwhale.log import get_logger
from wallwhale.steam.output import Phase, Progress
from wallwhale.worker.context import WorkerContext

_log = get_logger("wallwhale.worker")


class LeaseLost(Exception):
    """Another instance holds the job now."""


def server_line(text: str) -> NewEvent:
    return NewEvent(EventKind.LOG, {"stream": "server", "line": text})


def progress_columns(progress: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The download's columns that a progress event sets (the one mapping from one to the other)."""
    return {
        "phase": progress["phase"],
        "percent": progress["percent"],
        "bytes_downloaded": progress["bytes_downloaded"],
        "bytes_total": progress["bytes_total"],
        "current_file": progress["current_file"][:1024],
        "update_time": now,
    }


class Journal:
    """The pending progress and log events of one attempt of one job."""

    def __init__(self, context: WorkerContext, download_id: str, attempt: int, write_lock: asyncio.Lock):
        self._context = context
        self._download_id = download_id
        self._attempt = attempt
        # Shared with the job's state writes: one writer of the job's events at a time.
        self._write_lock = write_lock
        self._logs: list[NewEvent] = []
        self._progress: dict[str, Any] | None = None
        self._progress_taken = -math.inf  # time.monotonic() of the last progress taken
        self._logged = 0
        self._truncated = False
        self._tracker = _ProgressTracker()

    # --- what the run reports --------------------------------------------------------------------

    def log(self, stream: str, line: str) -> None:
        if self._logged >= self._context.settings.max_log_lines:
            if not self._truncated:
                self._truncated = True
                self._logs.append(server_line("further output of this attempt is not recorded"))
            return
        self._logged += 1
        self._logs.append(NewEvent(EventKind.LOG, {"stream": stream, "line": line[:2000]}))

    async def changes(self, changes: list[Phase | Progress], directory: Path) -> None:
        """DepotDownloader's phase and progress changes, as the newest progress event."""
        self._progress = await self._tracker.update(changes, directory)  # only the newest matters

    # --- writing ---------------------------------------------------------------------------------

    def _progress_due(self) -> bool:
        interval = self._context.settings.progress_interval
        return self._progress is not None and time.monotonic() - self._progress_taken >= interval

    def _take(self, with_progress: bool = True) -> tuple[list[NewEvent], dict[str, Any] | None]:
        new, self._logs = self._logs, []
        progress = self._progress if with_progress else None
        if progress is not None:
            new.append(NewEvent(EventKind.PROGRESS, progress))
            self._progress, self._progress_taken = None, time.monotonic()
        return new, progress

    async def write_into(self, session: AsyncSession, download: Download, now: datetime) -> None:
        """Everything pending, in the caller's transaction (which holds the job's row)."""
        new, progress = self._take()
        if progress is not None:
            for column, value in progress_columns(progress, now).items():
                setattr(download, column, value)
        await events.append(session, download, new, now)

    async def flush(self) -> None:
        """Writes what is due in a transaction of its own; LeaseLost when the job is not ours any more."""
        if not self._logs and not self._progress_due():
            return
        async with self._write_lock:
            now = self._context.clock()
            new, progress = self._take(with_progress=self._progress_due())
            if not new:
                return
            async with self._context.sessions.begin() as session:
                stored = await events.append_to(
                    session,
                    self._download_id,
                    new,
                    now,
                    where=queue.lease_held(self._context.settings.instance_id, self._attempt),
                    values=progress_columns(progress, now) if progress is not None else None,
                )
            if stored is None:
                raise LeaseLost

    async def flush_until(self, over: asyncio.Event, on_lease_lost: Callable[[], None]) -> None:
        """Flushes every `event_flush_interval` until `over` is set; `on_lease_lost()` if the lease goes."""
        while not over.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(over.wait(), self._context.settings.event_flush_interval)
            try:
                await self.flush()
            except LeaseLost:
                on_lease_lost()
                return
            except Exception as exc:  # the next flush tries again; the lease keeper notices real trouble
                _log.warning("progress write failed", download_id=self._download_id, error=first_line(exc))


class _ProgressTracker:
    """The progress event's values from DepotDownloader's phases and percentages."""

    def __init__(self) -> None:
        self._phase = Phase.STARTING
        self._percent = 0.0
        self._current_file = ""
        self._total_bytes = 0
        self._rate = _Rate()

    async def update(self, changes: list[Phase | Progress], directory: Path) -> dict[str, Any]:
        for change in changes:
            if isinstance(change, Phase):
                self._phase = change
            else:
                self._percent, self._current_file = change.percent, change.path
        if not self._total_bytes and any(isinstance(change, Progress) for change in changes):
            self._total_bytes = await asyncio.to_thread(_preallocated_bytes, directory)
        done = int(self._total_bytes * self._percent / 100)
        rate = self._rate.update(done)
        return {
            "phase": self._phase.value,
            "percent": self._percent,
            "bytes_downloaded": done,
            "bytes_total": self._total_bytes,
            "current_file": self._current_file,
            "bytes_per_second": rate,
            "eta_seconds": round((self._total_bytes - done) / rate, 1) if rate else None,
        }


def _preallocated_bytes(directory: Path) -> int:
    # DepotDownloader creates every file at full size before filling it
    # (docs/depotdownloader-reference.md §2.2 row 33), so once progress starts the folder's size is
    # the item's size.
    total = 0
    for path in directory.rglob("*"):
        if ".DepotDownloader" not in path.parts and path.is_file():
            total += path.stat().st_size
    return total


class _Rate:
    """Bytes per second, smoothed over the progress reports."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None
        self.value = 0.0

    def update(self, done: int) -> int:
        now = time.monotonic()
        if self._last is not None and now > self._last[0] and done >= self._last[1]:
            instant = (done - self._last[1]) / (now - self._last[0])
            self.value = instant if not self.value else 0.7 * self.value + 0.3 * instant
        self._last = (now, done)
        return int(self.value)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
