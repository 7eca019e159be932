"""Metrics of committed decisions count once the transaction commits, and not when it rolls back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core.after_commit import Targets, after_commit, install
from wallwhale.core.events import EventHub
from wallwhale.core.identity import PrincipalCache
from wallwhale.db.engine import create_engine, session_factory
from wallwhale.storage.archives import Storage


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    made = session_factory(engine)
    install(made, Targets(EventHub(), lambda: None, PrincipalCache(5), Storage(tmp_path)))
    yield made
    await engine.dispose()


def _counter() -> tuple[Counter, CollectorRegistry]:
    registry = CollectorRegistry()
    return Counter("finished", "test", ["outcome"], registry=registry), registry


def _value(registry: CollectorRegistry, outcome: str) -> float:
    return registry.get_sample_value("finished_total", {"outcome": outcome}) or 0.0


async def test_a_commit_counts_and_a_rollback_does_not(sessions: async_sessionmaker[AsyncSession]) -> None:
    counter, registry = _counter()
    async with sessions.begin() as session:
        await session.execute(text("SELECT 1"))
        after_commit(session).count(counter, "succeeded")
        after_commit(session).count(counter, "failed", amount=2)
        assert _value(registry, "succeeded") == 0  # not before the commit
    assert (_value(registry, "succeeded"), _value(registry, "failed")) == (1, 2)

    async with sessions() as session, session.begin() as transaction:
        await session.execute(text("SELECT 1"))
        after_commit(session).count(counter, "succeeded")
        await transaction.rollback()
    assert _value(registry, "succeeded") == 1


async def test_a_savepoint_that_rolls_back_takes_its_counts_along(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    counter, registry = _counter()
    async with sessions.begin() as session:
        await session.execute(text("SELECT 1"))
        after_commit(session).count(counter, "kept")
        savepoint = await session.begin_nested()
        after_commit(session).count(counter, "dropped")
        await savepoint.rollback()
    assert (_value(registry, "kept"), _value(registry, "dropped")) == (1, 0)
