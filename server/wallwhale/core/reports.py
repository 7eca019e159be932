"""Reading the audit trail and the installation's statistics."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.core import paging
from wallwhale.core.paging import Page
from wallwhale.db.models import (
    ApiKey,
    ArchiveState,
    AuditEvent,
    Download,
    DownloadState,
    SteamAccount,
    SteamAccountStatus,
    User,
)


@dataclass(frozen=True)
class AuditFilter:
    actor_id: str = ""
    # An exact action, or a prefix ending in "." ("api_key." for every API key action).
    action: str = ""
    resource: str = ""
    outcome: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None


async def list_audit_events(
    session: AsyncSession, page: Page, where: AuditFilter
) -> tuple[list[AuditEvent], int]:
    query = select(AuditEvent)
    if where.actor_id:
        query = query.where(AuditEvent.actor_id == where.actor_id)
    if where.action.endswith("."):
        query = query.where(AuditEvent.action.startswith(where.action, autoescape=True))
    elif where.action:
        query = query.where(AuditEvent.action == where.action)
    if where.resource:
        query = query.where(AuditEvent.resource == where.resource)
    if where.outcome:
        query = query.where(AuditEvent.outcome == where.outcome)
    if where.start_time is not None:
        query = query.where(AuditEvent.event_time >= where.start_time)
    if where.end_time is not None:
        query = query.where(AuditEvent.event_time < where.end_time)
    return await paging.fetch(session, query, page, AuditEvent.event_time.desc(), AuditEvent.id.desc())


@dataclass(frozen=True)
class Stats:
    downloads_by_state: dict[DownloadState, int]
    cache_hits: int
    users: int
    api_keys_active: int
    steam_accounts_active: int
    steam_accounts_total: int
    archives: int
    storage_used_bytes: int
    bytes_downloaded_total: int


async def downloads_by_state(session: AsyncSession) -> dict[DownloadState, int]:
    rows = await session.execute(select(Download.state, func.count()).group_by(Download.state))
    return {state: count for state, count in rows.all()}


async def active_steam_accounts(session: AsyncSession) -> int:
    """Accounts that take jobs: healthy, and not switched off by an admin."""
    query = (
        select(func.count())
        .select_from(SteamAccount)
        .where(SteamAccount.status == SteamAccountStatus.ACTIVE, SteamAccount.disabled.is_(False))
    )
    return int(await session.scalar(query) or 0)


async def stats(session: AsyncSession, now: datetime) -> Stats:
    async def count(query: Select[Any]) -> int:
        return int(await session.scalar(query) or 0)

    by_state = await downloads_by_state(session)
    archived = Download.archive_state == ArchiveState.AVAILABLE
    return Stats(
        downloads_by_state=by_state,
        cache_hits=await count(
            select(func.count()).select_from(Download).where(Download.from_cache.is_(True))
        ),
        users=await count(select(func.count()).select_from(User)),
        api_keys_active=await count(
            select(func.count())
            .select_from(ApiKey)
            .where(
                ApiKey.revoke_time.is_(None),
                ApiKey.disabled.is_(False),
                or_(ApiKey.expire_time.is_(None), ApiKey.expire_time > now),
            )
        ),
        steam_accounts_active=await active_steam_accounts(session),
        steam_accounts_total=await count(select(func.count()).select_from(SteamAccount)),
        archives=await count(select(func.count()).select_from(Download).where(archived)),
        storage_used_bytes=await count(
            select(func.coalesce(func.sum(Download.archive_size), 0)).where(archived)
        ),
        bytes_downloaded_total=await count(select(func.coalesce(func.sum(Download.bytes_downloaded), 0))),
    )
