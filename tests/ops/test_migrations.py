"""Migrations build exactly the schema the models describe, on SQLite and PostgreSQL, and take it down.

Alembic is synchronous and runs its own event loop, so it is called through asyncio.to_thread.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from wallwhale.db import migrate
from wallwhale.db.engine import create_engine, session_factory
from wallwhale.db.models import (
    ApiKey,
    Base,
    Download,
    DownloadEvent,
    DownloadState,
    RefreshToken,
    User,
    UserRole,
)
from wallwhale.ids import new_id


async def _tables(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    finally:
        await engine.dispose()
    return set(names) - {"alembic_version"}


async def _execute(database_url: str, statement: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text(statement))
    finally:
        await engine.dispose()


async def test_upgrade_matches_models_and_downgrade_removes_everything(database_url: str) -> None:
    assert await asyncio.to_thread(migrate.current_revision, database_url) is None

    await asyncio.to_thread(migrate.upgrade, database_url)
    assert await asyncio.to_thread(migrate.current_revision, database_url) == "0017"
    assert migrate.head_revision() == "0017"
    assert await _tables(database_url) == set(Base.metadata.tables)
    # No drift: autogenerate finds nothing between the models and what the migrations built.
    await asyncio.to_thread(migrate.check, database_url)

    await asyncio.to_thread(migrate.downgrade, database_url, "base")
    assert await _tables(database_url) == set()
    assert await asyncio.to_thread(migrate.current_revision, database_url) is None

    await asyncio.to_thread(migrate.upgrade, database_url)
    assert await asyncio.to_thread(migrate.current_revision, database_url) == "0017"
    await asyncio.to_thread(migrate.check, database_url)


async def test_check_reports_a_schema_that_drifted(database_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url)
    await _execute(database_url, "DROP INDEX ix_downloads_state_priority_create_time")

    with pytest.raises(migrate.SchemaDriftError, match="ix_downloads_state_priority_create_time"):
        await asyncio.to_thread(migrate.check, database_url)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(migrate.upgrade, database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def _user(email: str) -> User:
    return User(email=email, password_hash="argon2-hash")


def _api_key(owner: User) -> ApiKey:
    secret = f"ww_test_{new_id()}"
    return ApiKey(
        name="ci",
        owner_user_id=owner.id,
        prefix=secret[:12],
        key_hash=hashlib.sha256(secret.encode()).hexdigest(),
    )


async def test_email_is_unique_regardless_of_case(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        session.add(_user("Alice@Example.com"))

    async with sessions() as session:
        session.add(_user("alice@example.COM"))
        with pytest.raises(IntegrityError):
            await session.commit()

    async with sessions() as session:
        user = (await session.scalars(sa.select(User))).one()
    assert user.email == "alice@example.com"
    assert user.role is UserRole.USER


async def test_deleting_a_user_cascades_to_credentials_and_keeps_their_downloads(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        user = _user("bob@example.com")
        session.add(user)
        await session.flush()
        key = _api_key(user)
        session.add(key)
        await session.flush()
        session.add(
            RefreshToken(
                user_id=user.id,
                family_id=new_id(),
                token_hash="f" * 64,
                expire_time=datetime.now(UTC) + timedelta(days=30),
            )
        )
        download = Download(
            workshop_id=3_000_000_001, app_id=431960, owner_user_id=user.id, api_key_id=key.id
        )
        session.add(download)

    async with sessions.begin() as session:
        await session.execute(sa.delete(User).where(User.id == user.id))

    async with sessions() as session:
        assert (await session.scalar(sa.select(sa.func.count()).select_from(ApiKey))) == 0
        assert (await session.scalar(sa.select(sa.func.count()).select_from(RefreshToken))) == 0
        # Jobs outlive their owner (history, archives); the reference is cleared, not the row.
        kept = await session.get_one(Download, download.id)
        assert (kept.owner_user_id, kept.api_key_id) == (None, None)
        assert kept.state is DownloadState.QUEUED


async def test_timestamps_are_aware_utc_and_naive_ones_are_refused(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    tokyo = timezone(timedelta(hours=9))
    expire = datetime(2030, 1, 2, 9, 30, tzinfo=tokyo)
    async with sessions.begin() as session:
        user = _user("carol@example.com")
        session.add(user)
        await session.flush()
        session.add(
            RefreshToken(user_id=user.id, family_id=new_id(), token_hash="e" * 64, expire_time=expire)
        )

    async with sessions() as session:
        token = (await session.scalars(sa.select(RefreshToken))).one()
    assert token.expire_time == expire
    assert token.expire_time.tzinfo is UTC
    assert token.create_time.tzinfo is UTC

    async with sessions() as session:
        session.add(
            RefreshToken(
                user_id=user.id, family_id=new_id(), token_hash="d" * 64, expire_time=datetime(2030, 1, 1)
            )
        )
        with pytest.raises(StatementError, match="naive datetime"):
            await session.commit()


async def test_event_ids_autoincrement_and_sequences_are_unique_per_download(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        download = Download(workshop_id=1, app_id=431960)
        session.add(download)
        await session.flush()
        first = DownloadEvent(download_id=download.id, sequence=1, kind="state", payload={"state": "QUEUED"})
        second = DownloadEvent(download_id=download.id, sequence=2, kind="progress", payload={"percent": 5})
        session.add_all([first, second])
    assert first.id is not None
    assert second.id > first.id

    async with sessions() as session:
        session.add(DownloadEvent(download_id=download.id, sequence=2, kind="log", payload={}))
        with pytest.raises(IntegrityError):
            await session.commit()

    async with sessions() as session:
        events = (await session.scalars(sa.select(DownloadEvent).order_by(DownloadEvent.sequence))).all()
    assert [event.payload for event in events] == [{"state": "QUEUED"}, {"percent": 5}]
