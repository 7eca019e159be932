"""Retention: archives past their age, or beyond the disk budget (oldest first), are removed; audit
events past their age are deleted (prune_audit).

The rows are marked EXPIRED (with a log event on the job) and committed before the files go (they are
deleted after the commit, core.after_commit), so a crash in between leaves a file without a row
pointing at it, never a row pointing at nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.core import events
from wallwhale.core.after_commit import after_commit
from wallwhale.core.archives import item_in_use, shares_archive
from wallwhale.core.events import EventKind, NewEvent
from wallwhale.db.models import ArchiveState, AuditEvent, Download


@dataclass(frozen=True)
class Policy:
    max_age: timedelta | None
    budget_bytes: int | None
    audit_max_age: timedelta | None = None

    @property
    def active(self) -> bool:
        return any(value is not None for value in (self.max_age, self.budget_bytes, self.audit_max_age))


async def sweep(session: AsyncSession, policy: Policy, now: datetime) -> int:
    """Expires what the policy removes; returns how many archive files go once committed (with the
    DepotDownloader folders of items no archive and no job needs any more)."""
    available = list(
        await session.scalars(
            select(Download)
            .where(Download.archive_state == ArchiveState.AVAILABLE)
            .order_by(Download.archive_create_time, Download.id)
            .with_for_update(skip_locked=True)
        )
    )
    # Downloads served from the cache share their archive file: a file goes with all its rows.
    groups: dict[str, list[Download]] = {}
    for download in available:
        groups.setdefault(download.archive_path or download.id, []).append(download)
    doomed: dict[str, str] = {}  # group key -> why
    if policy.max_age is not None:
        limit = now - policy.max_age
        for key, rows in groups.items():
            created = rows[0].archive_create_time
            if created is not None and created <= limit:
                doomed[key] = f"older than {_hours(policy.max_age)}"
    if policy.budget_bytes is not None:
        used = sum(rows[0].archive_size or 0 for key, rows in groups.items() if key not in doomed)
        for key, rows in groups.items():  # oldest first
            if used <= policy.budget_bytes:
                break
            if key not in doomed:
                doomed[key] = f"the archives exceeded the disk budget of {policy.budget_bytes} bytes"
                used -= rows[0].archive_size or 0
    removed = 0
    for key, why in doomed.items():
        rows = groups[key]
        if rows[0].archive_path and not await shares_archive(
            session, rows[0].archive_path, [row.id for row in rows]
        ):  # a copy locked by a concurrent CreateDownload keeps the file; it goes at the next sweep
            after_commit(session).delete_archive(rows[0].archive_path)
            removed += 1
        await _expire(session, rows, f"by retention: {why}", now)
    items = {(row.app_id, row.workshop_id) for key in doomed for row in groups[key]}
    for item in sorted(items):
        if not await item_in_use(session, *item):
            after_commit(session).remove_item_dir(*item)
    return removed


async def expire_archives(session: AsyncSession, rows: list[Download], why: str, now: datetime) -> None:
    """Removes these downloads' archives (a file another download still shares stays until its last
    row goes), e.g. the older versions a watch does not keep; each job says why."""
    for row in rows:
        if row.archive_path and not await shares_archive(session, row.archive_path, [row.id]):
            after_commit(session).delete_archive(row.archive_path)
    await _expire(session, rows, f"because {why}", now)


async def _expire(session: AsyncSession, rows: list[Download], why: str, now: datetime) -> None:
    for download in rows:
        download.archive_state = ArchiveState.EXPIRED
        download.archive_expire_time = now
        download.update_time = now
        await events.append(
            session,
            download,
            [NewEvent(EventKind.LOG, {"stream": "server", "line": f"archive removed {why}"})],
            now,
        )


def _hours(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:g} hours"


async def prune_audit(session: AsyncSession, policy: Policy, now: datetime) -> int:
    """Deletes the audit events older than the policy keeps; returns how many."""
    if policy.audit_max_age is None:
        return 0
    result = await session.execute(
        delete(AuditEvent).where(AuditEvent.event_time < now - policy.audit_max_age)
    )
    return int(getattr(result, "rowcount", 0) or 0)
