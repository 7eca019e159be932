"""Share links to archives: a token that fetches one download's or batch's zip with no credentials.

The token (secrets.token_urlsafe, 256 bits) is shown once, when the link is made; the database holds
only its SHA-256, so a copy of the database cannot fetch anything. Access is checked when the link
is made (the caller must see the download or batch, as for FetchArchive); afterwards the link alone
is the permission, until it expires, is revoked, or - single use - has served its one request. A
link names no key and no user: who made it is in the audit trail only.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.core import batches, downloads, ownership
from wallwhale.core.identity import Principal
from wallwhale.db.models import ArchiveLink, Batch, BatchState, Download, DownloadState
from wallwhale.errors import FailedPrecondition, InvalidArgument, NotFound

URL_PREFIX = "/v1/links/"
_TOKEN_BYTES = 32
_MAX_TOKEN_LENGTH = 128  # a longer "token" is not one of ours; no need to hash it


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Target:
    """What a link fetches: exactly one of the two."""

    download_id: str = ""
    batch_id: str = ""

    def checked(self) -> Target:
        if bool(self.download_id) == bool(self.batch_id):
            raise InvalidArgument.field("download_id", "give exactly one of download_id and batch_id")
        return self


@dataclass(frozen=True)
class NewLink:
    link: ArchiveLink
    url_path: str  # URL_PREFIX + the token: the only time the token exists outside the caller


async def _visible_target(session: AsyncSession, principal: Principal, target: Target) -> Download | Batch:
    if target.download_id:
        return await downloads.get_visible(session, principal, target.download_id)
    return await batches.get_visible(session, principal, target.batch_id)


async def create(
    session: AsyncSession,
    principal: Principal,
    target: Target,
    ttl: timedelta | None,
    single_use: bool,
    max_ttl: timedelta,
    now: datetime,
) -> NewLink:
    row = await _visible_target(session, principal, target.checked())
    if ttl is None:
        ttl = max_ttl
    if ttl <= timedelta(0):
        raise InvalidArgument.field("ttl", "must be positive")
    if ttl > max_ttl:
        raise InvalidArgument.field("ttl", f"must be at most {int(max_ttl.total_seconds())} seconds")
    if isinstance(row, Download) and row.state is not DownloadState.SUCCEEDED:
        raise FailedPrecondition(
            f"the download is {row.state.value.lower()}; a link can be made once it has succeeded",
            reason="ARCHIVE_NOT_READY",
        )
    if isinstance(row, Batch) and row.state is BatchState.ACTIVE:
        raise FailedPrecondition(
            "the batch is still active; a link can be made once every download is final",
            reason="ARCHIVE_NOT_READY",
        )
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    link = ArchiveLink(
        token_hash=token_hash(token),
        download_id=target.download_id or None,
        batch_id=target.batch_id or None,
        expire_time=now + ttl,
        single_use=single_use,
        use_count=0,
        create_time=now,
    )
    session.add(link)
    await session.flush()
    return NewLink(link, URL_PREFIX + token)


async def list_for(session: AsyncSession, principal: Principal, target: Target) -> list[ArchiveLink]:
    await _visible_target(session, principal, target.checked())
    column = ArchiveLink.download_id if target.download_id else ArchiveLink.batch_id
    rows = await session.scalars(
        select(ArchiveLink)
        .where(column == (target.download_id or target.batch_id))
        .order_by(ArchiveLink.create_time.desc(), ArchiveLink.id.desc())
    )
    return list(rows)


async def revoke(session: AsyncSession, principal: Principal, link_id: str, now: datetime) -> ArchiveLink:
    missing = ownership.checked_id("archive_link", link_id)
    link = await session.get(ArchiveLink, link_id, with_for_update=True)
    if link is None:
        raise missing
    try:
        await _visible_target(session, principal, Target(link.download_id or "", link.batch_id or ""))
    except NotFound:
        raise missing from None
    if link.revoke_time is None:
        link.revoke_time = now
    return link


def _unusable(link: ArchiveLink | None, now: datetime) -> NotFound | None:
    if link is None:
        return NotFound("link", "", "no share link has this token", reason="LINK_UNKNOWN")
    if link.revoke_time is not None:
        return NotFound("link", link.id, "this share link was revoked", reason="LINK_REVOKED")
    if link.expire_time <= now:
        return NotFound("link", link.id, "this share link has expired", reason="LINK_EXPIRED")
    if link.single_use and link.use_count > 0:
        return NotFound("link", link.id, "this single-use share link was used already", reason="LINK_USED_UP")
    return None


async def resolve(session: AsyncSession, token: str, now: datetime) -> ArchiveLink:
    """The link this token opens, if it may still be used; NOT_FOUND with the reason otherwise."""
    if not token:
        raise InvalidArgument.field("token", "is required")
    link = None
    if len(token) <= _MAX_TOKEN_LENGTH:
        link = await session.scalar(select(ArchiveLink).where(ArchiveLink.token_hash == token_hash(token)))
    if (problem := _unusable(link, now)) is not None:
        raise problem
    assert link is not None
    return link


async def download_of(session: AsyncSession, link: ArchiveLink) -> Download:
    """The download a link names (the caller checked that it names one)."""
    download = await session.get(Download, link.download_id) if link.download_id else None
    if download is None:
        raise NotFound("archive", link.id, "the download of this share link was deleted")
    return download


async def record_use(session: AsyncSession, link_id: str, now: datetime) -> None:
    """Counts a fetch that is about to send bytes. Conditional, so two fetches of a single-use link
    at the same moment cannot both pass; the loser gets LINK_USED_UP (or whatever ended the link)."""
    counted = await session.execute(
        update(ArchiveLink)
        .where(
            ArchiveLink.id == link_id,
            ArchiveLink.revoke_time.is_(None),
            ArchiveLink.expire_time > now,
            or_(ArchiveLink.single_use.is_(False), ArchiveLink.use_count == 0),
        )
        .values(use_count=ArchiveLink.use_count + 1, last_use_time=now)
    )
    if not getattr(counted, "rowcount", 0):
        link = await session.get(ArchiveLink, link_id, populate_existing=True)
        raise _unusable(link, now) or NotFound("link", link_id, "this share link cannot be used")
