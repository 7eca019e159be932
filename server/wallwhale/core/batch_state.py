"""A batch's state, derived from its downloads and kept in `batches.state` at every commit that moves one.

The state is stored (not only computed on read) so that a batch reads like any other row and its
`end_time` is the moment it really ended. It is written in the same transaction as the download's
change, but at the *end* of that transaction: `downloads.transition` only notes the batch
(`note_change`), and a `before_commit` hook recomputes every noted batch, in id order, after all other
locks of the transaction were taken. A batch's lock is therefore always the last lock a
transaction takes, so it cannot close a deadlock cycle with the download and account locks the worker
holds.

On PostgreSQL a transaction-level advisory lock on the batch is taken before its downloads are
counted: two transactions ending the last two downloads of a batch are serialised, and the second
counts after the first committed (each statement of READ COMMITTED sees the newest commits), so the
last one always writes the final state. SQLite runs one writer at a time, which gives the same
guarantee. CancelBatch takes the same lock to mark the batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from wallwhale.core import webhooks
from wallwhale.db.models import Batch, BatchState, Download, DownloadState

_PENDING = "wallwhale.batches_changed"


@dataclass(frozen=True)
class Counts:
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @classmethod
    def of(cls, by_state: Mapping[DownloadState, int]) -> Counts:
        return cls(
            total=sum(by_state.values()),
            succeeded=by_state.get(DownloadState.SUCCEEDED, 0),
            failed=by_state.get(DownloadState.FAILED, 0),
            cancelled=by_state.get(DownloadState.CANCELLED, 0),
        )

    @property
    def final(self) -> int:
        return self.succeeded + self.failed + self.cancelled


def derive(counts: Counts, *, cancel_requested: bool, current: BatchState) -> BatchState:
    """ACTIVE while any download is not final; then CANCELLED after CancelBatch, else by outcome.

    Partial success is a success of its own kind: some items succeeded, others failed or were
    cancelled one by one. A batch whose every download was cancelled one by one is CANCELLED too.
    """
    if counts.total == 0:
        return current  # every download was deleted: the batch keeps the state it ended with
    if counts.final < counts.total:
        return BatchState.ACTIVE
    if cancel_requested:
        return BatchState.CANCELLED
    if counts.succeeded == counts.total:
        return BatchState.SUCCEEDED
    if counts.succeeded:
        return BatchState.PARTIALLY_SUCCEEDED
    if counts.failed == 0:
        return BatchState.CANCELLED
    return BatchState.FAILED


def note_change(session: AsyncSession | Session, batch_id: str, now: datetime, *, revived: bool) -> None:
    """A download of the batch entered a final state, or left one (`revived`: retried, deleted...).

    The batch is recomputed when the transaction commits (see the module docstring)."""
    pending: dict[str, tuple[datetime, bool]] = session.info.setdefault(_PENDING, {})
    earlier = pending.get(batch_id)
    if earlier is not None:
        now, revived = max(now, earlier[0]), revived or earlier[1]
    pending[batch_id] = (now, revived)


def refresh(session: Session, batch_id: str, now: datetime, *, revived: bool = False) -> Batch | None:
    """Recomputes the batch's stored state from its downloads (synchronous: runs inside a commit)."""
    lock(session, batch_id)
    batch = session.scalar(
        select(Batch).where(Batch.id == batch_id).execution_options(populate_existing=True)
    )
    if batch is None:
        return None
    if revived and batch.state is not BatchState.ACTIVE:
        batch.cancel_time = None  # a download was queued again: the batch lives again
    counts = count(session, batch_id)
    state = derive(counts, cancel_requested=batch.cancel_time is not None, current=batch.state)
    if state is not batch.state:
        batch.state = state
        batch.end_time = None if state is BatchState.ACTIVE else now
        if state is not BatchState.ACTIVE:
            payload = {"batch": snapshot(session, batch)}
            webhooks.enqueue_event_sync(
                session, webhooks.BATCH_FINISHED, batch.owner_user_id, f"batches/{batch.id}", payload, now
            )
    return batch


def snapshot(session: Session, batch: Batch) -> dict[str, object]:
    """The batch and its downloads as they are now, for the batch.finished webhook (rendered by
    core.webhook_outbox as the REST API shows a batch)."""
    members = session.execute(
        select(Download.id, Download.workshop_id, Download.state, Download.last_event_sequence)
        .where(Download.batch_id == batch.id)
        .order_by(Download.create_time, Download.id)
    )
    return {
        "id": batch.id,
        "state": batch.state.value,
        "collection_id": batch.collection_id,
        "title": batch.title,
        "owner_user_id": batch.owner_user_id,
        "api_key_id": batch.api_key_id,
        "create_time": batch.create_time.isoformat(),
        "end_time": batch.end_time.isoformat() if batch.end_time else None,
        "members": [[row[0], row[1], row[2].value, row[3]] for row in members],
    }


def lock(session: Session, batch_id: str) -> None:
    """Serialises the writers of one batch's state until their commit (PostgreSQL; SQLite has one
    writer anyway). An advisory lock rather than SELECT .. FOR UPDATE: row locks taken by several
    transactions that each end a download of the batch deadlocked on PostgreSQL 15 under load."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"batch:{batch_id}", 0))))


def count(session: Session, batch_id: str) -> Counts:
    rows = session.execute(
        select(Download.state, func.count()).where(Download.batch_id == batch_id).group_by(Download.state)
    )
    return Counts.of({state: number for state, number in rows})


@event.listens_for(Session, "before_commit")
def _refresh_noted(session: Session) -> None:
    pending: dict[str, tuple[datetime, bool]] | None = session.info.pop(_PENDING, None)
    for batch_id in sorted(pending or ()):
        now, revived = pending[batch_id]  # type: ignore[index]
        refresh(session, batch_id, now, revived=revived)


@event.listens_for(Session, "after_rollback")
def _forget_noted(session: Session) -> None:
    session.info.pop(_PENDING, None)
