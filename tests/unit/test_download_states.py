"""The moves a download may make between states (core/downloads.transition), tried pair by pair on a
real SQLite database without a server: every allowed move is taken and recorded as a state event,
every other one is refused and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.config import to_async_url
from wallwhale.core import downloads
from wallwhale.db.engine import create_engine, session_factory
from wallwhale.db.models import Base, Batch, Download, DownloadEvent, DownloadState
from wallwhale.errors import FailedPrecondition
from wallwhale.ids import new_id

S = DownloadState
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FINAL = {S.SUCCEEDED, S.FAILED, S.CANCELLED}
# The lifecycle as the API documents it; staying in a state (a progress or phase change) is always allowed.
ALLOWED = {
    S.QUEUED: {S.RUNNING, S.FAILED, S.CANCELLED},
    # RUNNING -> SUCCEEDED: served from an archive of the same content found before the run.
    S.RUNNING: {S.WAITING_FOR_STEAM_GUARD, S.ARCHIVING, S.SUCCEEDED, S.QUEUED, S.FAILED, S.CANCELLED},
    S.WAITING_FOR_STEAM_GUARD: {S.RUNNING, S.QUEUED, S.FAILED, S.CANCELLED},
    S.ARCHIVING: {S.SUCCEEDED, S.QUEUED, S.FAILED, S.CANCELLED},
    S.SUCCEEDED: set(),
    S.FAILED: {S.QUEUED},  # RetryDownload
    S.CANCELLED: {S.QUEUED},
}
PAIRS = [(before, after) for before in S for after in S]
Sessions = async_sessionmaker[AsyncSession]


@pytest_asyncio.fixture(scope="module")
async def sessions(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sessions]:
    path: Path = tmp_path_factory.mktemp("states") / "states.sqlite3"
    engine = create_engine(to_async_url(f"sqlite:///{path}"))
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield session_factory(engine)
    await engine.dispose()


def job(state: DownloadState, batch_id: str | None = None) -> Download:
    return Download(
        id=new_id(),
        workshop_id=2831234567,
        app_id=431960,
        state=state,
        priority=downloads.PRIORITY_NORMAL,
        batch_id=batch_id,
        max_attempts=3,
        phase="STARTING",
        create_time=NOW,
        update_time=NOW,
    )


async def stored_events(session: AsyncSession, download_id: str) -> list[DownloadEvent]:
    rows = await session.scalars(
        select(DownloadEvent).where(DownloadEvent.download_id == download_id).order_by(DownloadEvent.sequence)
    )
    return list(rows)


def test_the_table_covers_every_state() -> None:
    assert set(ALLOWED) == set(S)
    assert all(not ALLOWED[state] - {S.QUEUED} for state in FINAL)  # a final state is left only by retry


@pytest.mark.parametrize(("before", "after"), PAIRS, ids=[f"{b.value}->{a.value}" for b, a in PAIRS])
async def test_a_move_is_taken_exactly_when_the_lifecycle_allows_it(
    sessions: Sessions, before: DownloadState, after: DownloadState
) -> None:
    async with sessions() as session:
        download = job(before)
        session.add(download)
        await session.flush()
        if after is before or after in ALLOWED[before]:
            stored = await downloads.transition(
                session, download, after, NOW, note="why", phase="DOWNLOADING"
            )
            assert download.state is after
            assert download.phase == "DOWNLOADING"  # the changes that came with the move
            assert (download.end_time == NOW) == (after in FINAL)
            # The note first (a final state ends every watch stream), then the state with its snapshot.
            assert [event.kind for event in stored] == ["log", "state"]
            assert stored[0].payload == {"stream": "server", "line": "why"}
            assert stored[1].payload["previous"] == before.value
            assert stored[1].payload["download"]["state"] == after.value
            assert download.last_event_sequence == stored[-1].sequence
            assert [row.sequence for row in await stored_events(session, download.id)] == [
                event.sequence for event in stored
            ]
        else:
            with pytest.raises(FailedPrecondition, match=f"cannot go from {before.value} to {after.value}"):
                await downloads.transition(session, download, after, NOW, phase="DOWNLOADING")
            assert (download.state, download.phase, download.end_time) == (before, "STARTING", None)
            assert await stored_events(session, download.id) == []
        await session.rollback()


async def test_a_final_state_keeps_the_moment_it_was_first_reached(
    sessions: Sessions,
) -> None:
    async with sessions() as session:
        download = job(S.RUNNING)
        session.add(download)
        await session.flush()
        await downloads.transition(session, download, S.FAILED, NOW)
        later = NOW.replace(hour=13)
        await downloads.transition(session, download, S.FAILED, later, error_message="still failed")
        assert (download.end_time, download.update_time) == (NOW, later)
        await session.rollback()


@pytest.mark.parametrize(
    ("before", "after", "noted"),
    [
        (S.RUNNING, S.SUCCEEDED, False),  # entering a final state: the batch may have ended
        (S.QUEUED, S.CANCELLED, False),
        (S.FAILED, S.QUEUED, True),  # leaving one: the batch lives again
        (S.QUEUED, S.RUNNING, None),  # between active states: nothing for the batch
        (S.FAILED, S.FAILED, None),
    ],
)
async def test_only_moves_into_or_out_of_a_final_state_touch_the_batch(
    sessions: Sessions, before: DownloadState, after: DownloadState, noted: bool | None
) -> None:
    async with sessions() as session:
        batch = Batch(id=new_id(), title="wallpapers")
        download = job(before, batch_id=batch.id)
        session.add_all([batch, download])
        await session.flush()
        await downloads.transition(session, download, after, NOW)
        pending = session.info.get("wallwhale.batches_changed", {})
        assert pending == ({} if noted is None else {batch.id: (NOW, noted)})
        await session.rollback()
