"""Retention: archives past their age, or beyond the disk budget (oldest first), are removed.

The rows are marked EXPIRED (with a log event on the job) and committed before the files go, so a
crash in between leaves a file without a row pointing at it, never a row pointing at nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.core import events
from wallwhale.core.events import EventKind, NewEvent, StoredEvent
from wallwhale.db.models import Download

AVAILABLE, EXPIRED = "AVAILABLE", "EXPIRED"


@dataclass(frozen=True)
class Policy:
    max_age: timedelta | None
    budget_bytes: int | None


@dataclass(frozen=True)
class Sweep:
    events: list[StoredEvent]
    # Files to delete once the transaction committed (relative to the storage root).
    paths: list[str]


async def sweep(session: AsyncSession, policy: Policy, now: datetime) -> Sweep:
    available = list(
        await session.scalars(
            select(Download)
            .where(Download.archive_state == AVAILABLE)
            .order_by(Download.archive_create_time, Download.id)
            .with_for_update(skip_locked=True)
        )
    )
    doomed: dict[str, tuple[Download, str]] = {}
    if policy.max_age is not None:
        limit = now - policy.max_age
        for download in available:
            if download.archive_create_time is not None and download.archive_create_time <= limit:
                doomed[download.id] = (download, f"older than {_hours(policy.max_age)}")
    if policy.budget_bytes is not None:
        used = sum(download.archive_size or 0 for download in available if download.id not in doomed)
        for download in available:  # oldest first
            if used <= policy.budget_bytes:
                break
            if download.id not in doomed:
                doomed[download.id] = (
                    download,
                    f"the archives exceeded the disk budget of {policy.budget_bytes} bytes",
                )
                used -= download.archive_size or 0
    stored: list[StoredEvent] = []
    paths: list[str] = []
    for download, why in doomed.values():
        if download.archive_path:
            paths.append(download.archive_path)
        download.archive_state = EXPIRED
        download.archive_expire_time = now
        download.update_time = now
        stored += await events.append(
            session,
            download,
            [NewEvent(EventKind.LOG, {"stream": "server", "line": f"archive removed by retention: {why}"})],
            now,
        )
    return Sweep(stored, paths)


def _hours(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:g} hours"
