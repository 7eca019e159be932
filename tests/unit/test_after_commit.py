"""Side effects of a transaction happen once it commits, and never when it rolls back (core.after_commit)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core.after_commit import Targets, after_commit, install
from wallwhale.core.events import EventHub, EventKind, StoredEvent
from wallwhale.core.identity import PrincipalCache
from wallwhale.db.engine import create_engine, session_factory
from wallwhale.storage.archives import Storage

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class _Hub(EventHub):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[int] = []

    def publish(self, events: list[StoredEvent]) -> None:
        self.published += [event.sequence for event in events]


class _Principals(PrincipalCache):
    def __init__(self) -> None:
        super().__init__(5)
        self.cleared = 0

    def clear(self) -> None:
        self.cleared += 1


class _World:
    def __init__(self, root: Path) -> None:
        self.hub = _Hub()
        self.principals = _Principals()
        self.storage = Storage(root)
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    def targets(self) -> Targets:
        return Targets(self.hub, self.wake, self.principals, self.storage)


def _event(sequence: int) -> StoredEvent:
    return StoredEvent("d1", sequence, NOW, EventKind.LOG, {"stream": "server", "line": "x"})


@pytest.fixture
async def sessions() -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    yield session_factory(engine)
    await engine.dispose()


async def test_a_commit_applies_every_effect_once(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    world = _World(tmp_path)
    install(sessions, world.targets())
    archive = tmp_path / "archives" / "a.zip"
    archive.parent.mkdir()
    archive.write_bytes(b"zip")
    async with sessions.begin() as session:
        await session.execute(text("SELECT 1"))
        effects = after_commit(session)
        effects.publish([_event(1), _event(2)])
        effects.wake_worker()
        effects.forget_principals()
        effects.delete_archive("archives/a.zip")
        assert (world.hub.published, world.wakes, world.principals.cleared) == ([], 0, 0)  # not yet
        assert archive.exists()
    assert (world.hub.published, world.wakes, world.principals.cleared) == ([1, 2], 1, 1)
    assert not archive.exists()
    async with sessions.begin() as session:  # the next transaction starts with nothing to do
        await session.execute(text("SELECT 1"))
    assert (world.hub.published, world.wakes, world.principals.cleared) == ([1, 2], 1, 1)


async def test_a_rollback_applies_none(sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    world = _World(tmp_path)
    install(sessions, world.targets())

    async def refused() -> None:
        async with sessions.begin() as session:
            await session.execute(text("SELECT 1"))
            after_commit(session).publish([_event(1)])
            after_commit(session).wake_worker()
            raise RuntimeError("the change is refused")

    with pytest.raises(RuntimeError):
        await refused()
    async with sessions.begin() as session:
        await session.execute(text("SELECT 1"))
    assert (world.hub.published, world.wakes) == ([], 0)


async def test_a_savepoint_that_rolls_back_drops_only_its_own(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    world = _World(tmp_path)
    install(sessions, world.targets())

    async def undone(session: AsyncSession) -> None:
        async with session.begin_nested():
            after_commit(session).publish([_event(3)])
            raise RuntimeError("this part is undone")

    async with sessions.begin() as session:
        after_commit(session).publish([_event(1)])
        async with session.begin_nested():
            after_commit(session).publish([_event(2)])
        with pytest.raises(RuntimeError):
            await undone(session)
        assert world.hub.published == []  # a released savepoint waits for the outermost commit
    assert world.hub.published == [1, 2]


async def test_sessions_without_targets_have_nobody_to_tell(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions.begin() as session:  # e.g. the command line: nothing to apply, nothing fails
        after_commit(session).wake_worker()
        after_commit(session).publish([_event(1)])
