"""Download jobs as callers see them: create (idempotent), read, list, cancel, retry, delete.

Visibility: people and their keys see their own downloads; admins see all. Someone else's download
answers NOT_FOUND, exactly like one that does not exist, so ids cannot be probed.

State changes go through `transition`, which checks the move against the table below and writes a
state event (with a snapshot of the download, core.snapshots) in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale import metrics, tracing
from wallwhale.core import archives, batch_state, events, idempotency, ownership, paging, webhooks
from wallwhale.core.after_commit import after_commit
from wallwhale.core.events import EventKind, NewEvent, StoredEvent
from wallwhale.core.identity import Principal
from wallwhale.core.limits import reserve_for_caller, tighter
from wallwhale.core.scopes import PRIORITY_SCOPE, grants
from wallwhale.core.snapshots import DownloadSnapshot, StateChange
from wallwhale.core.states import ACTIVE_STATES, FINAL_STATES, check_move
from wallwhale.db.models import ApiKey, Download, DownloadState, SteamAccount
from wallwhale.db.notify import Channel, announce
from wallwhale.db.types import to_signed64
from wallwhale.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from wallwhale.ids import is_valid_id, new_id
from wallwhale.steam.output import Phase
from wallwhale.steam.webapi import ItemDetails
from wallwhale.steam.workshop import WALLPAPER_ENGINE_APP_ID, check_app_id, parse_workshop_id

PRIORITY_LOW, PRIORITY_NORMAL, PRIORITY_HIGH = 1, 2, 3
MAX_REQUEST_ID = idempotency.MAX_REQUEST_ID
_RETRY_METHOD = "RetryDownload"


@dataclass(frozen=True)
class CreateInput:
    url_or_id: str
    app_id: int | None = None
    priority: int = PRIORITY_NORMAL
    request_id: str = ""
    steam_account_id: str = ""
    skip_cache: bool = False


@dataclass(frozen=True)
class JobLimits:
    max_attempts: int
    max_runtime_seconds: int | None = None


async def job_limits(session: AsyncSession, principal: Principal, max_attempts: int) -> JobLimits:
    """The limits of the caller's new jobs: the server's attempts, and the tighter runtime limit of
    the API key's and its user's."""
    key = await session.get(ApiKey, principal.api_key_id) if principal.api_key_id else None
    key_runtime = key.max_runtime_seconds if key is not None else None
    return JobLimits(max_attempts, tighter(key_runtime, principal.user_limits.max_runtime_seconds))


async def reserve(session: AsyncSession, principal: Principal, count: int, now: datetime) -> None:
    """Counts the caller's new downloads (or runs) against its key's quotas and its user's: a user
    at their quota gets no more with another key or by logging in."""
    key = await session.get(ApiKey, principal.api_key_id) if principal.api_key_id else None
    await reserve_for_caller(session, principal.user_id, principal.user_limits, key, count, now)


@dataclass(frozen=True)
class Created:
    download: Download
    events: list[StoredEvent]
    replayed: bool  # the request_id was seen before: nothing new was created


async def transition(
    session: AsyncSession,
    download: Download,
    state: DownloadState,
    now: datetime,
    *,
    note: str = "",
    **changes: Any,
) -> list[StoredEvent]:
    """Moves the download to `state` (with column `changes`) and records the state event.

    A `note` is also recorded as a server log line (e.g. why a retry waits).
    """
    previous = download.state
    check_move(previous, state)
    download.state = state
    for name, value in changes.items():
        setattr(download, name, value)
    download.update_time = now
    if state in FINAL_STATES and download.end_time is None:
        download.end_time = now
    if download.batch_id and (state in FINAL_STATES) != (previous in FINAL_STATES):
        batch_state.note_change(session, download.batch_id, now, revived=state not in FINAL_STATES)
    # The note first: a final state ends every watch stream, and the note says why it came.
    new = [NewEvent(EventKind.LOG, {"stream": "server", "line": note})] if note else []
    new.append(NewEvent(EventKind.STATE, StateChange(previous, DownloadSnapshot.of(download)).to_json()))
    if state is DownloadState.QUEUED:
        await claimable(session)
    _count_move(session, previous, download)
    if state is not previous:
        await tell_webhooks(session, download, now)
    after_commit(session).trace_event(
        "download.state", **{"download.id": download.id, "state": state.value, "previous": previous.value}
    )
    return await events.append(session, download, new, now)


_WEBHOOK_EVENTS = {
    DownloadState.SUCCEEDED: webhooks.DOWNLOAD_SUCCEEDED,
    DownloadState.FAILED: webhooks.DOWNLOAD_FAILED,
}


async def tell_webhooks(session: AsyncSession, download: Download, now: datetime) -> None:
    """The owner's webhooks hear that the download succeeded or failed (outbox rows, this transaction)."""
    event_type = _WEBHOOK_EVENTS.get(download.state)
    if event_type is not None:
        payload = {"download": DownloadSnapshot.of(download).to_json()}
        await webhooks.enqueue_event(
            session, event_type, download.owner_user_id, f"downloads/{download.id}", payload, now
        )


def _count_move(session: AsyncSession, previous: DownloadState, download: Download) -> None:
    counted = after_commit(session)
    reason = download.failure_reason.value if download.failure_reason else ""
    state = download.state
    if state in FINAL_STATES:
        counted.count(
            metrics.DOWNLOADS_FINISHED,
            state.value.lower(),
            reason if state is DownloadState.FAILED else "",
        )
    elif state is DownloadState.QUEUED and previous is not DownloadState.QUEUED:
        counted.count(metrics.DOWNLOAD_RETRIES, reason if previous not in FINAL_STATES else "")
    elif state is DownloadState.RUNNING and previous is DownloadState.QUEUED:
        counted.count(metrics.DOWNLOAD_ATTEMPTS)
    elif state is DownloadState.WAITING_FOR_STEAM_GUARD and previous is not state:
        counted.count(metrics.STEAM_GUARD_WAITS)


async def claimable(session: AsyncSession) -> None:
    """A job may be claimable once this transaction commits: every instance's worker looks."""
    await announce(session, Channel.QUEUE)  # the other instances
    after_commit(session).wake_worker()  # this one


def new_job(
    principal: Principal,
    workshop_id: int,
    app_id: int,
    limits: JobLimits,
    now: datetime,
    *,
    priority: int = PRIORITY_NORMAL,
    skip_cache: bool = False,
    batch_id: str | None = None,
    item: ItemDetails | None = None,
) -> Download:
    """A new QUEUED job owned by the caller, not yet added to a session (batches make many at once).

    `item`: what Steam's Web API said about it (title, size, content handle), when it was asked.
    """
    download = Download(
        id=new_id(),
        workshop_id=workshop_id,
        app_id=app_id,
        state=DownloadState.QUEUED,
        priority=priority,
        owner_user_id=principal.user_id,
        api_key_id=principal.api_key_id or None,
        batch_id=batch_id,
        skip_cache=skip_cache,
        max_attempts=limits.max_attempts,
        max_runtime_seconds=limits.max_runtime_seconds,
        phase=Phase.STARTING,
        create_time=now,
        update_time=now,
        trace_parent=tracing.traceparent(),
    )
    if item is not None and item.found:
        for column, value in item_columns(item).items():
            setattr(download, column, value)
    return download


def created_event(download: Download) -> NewEvent:
    """The first event of every job: its state as created."""
    return NewEvent(EventKind.STATE, StateChange(None, DownloadSnapshot.of(download)).to_json())


def request_scope(principal: Principal) -> str:
    """Whose request_ids these are (batches share the rule with downloads)."""
    return _scope(principal)


def _scope(principal: Principal) -> str:
    return principal.request_scope


def _fingerprint(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


async def create(
    session: AsyncSession,
    principal: Principal,
    data: CreateInput,
    limits: JobLimits,
    now: datetime,
    item: ItemDetails | None = None,
) -> Created:
    """Queues a download (in the caller's transaction), or returns the one made with the same request_id.

    `item`: what Steam's Web API said about the item, when it could be asked (see core.catalog). With
    it the job records the item's app, title and content handle, and an archive of the same content
    already on the server answers at once (unless `skip_cache`)."""
    workshop_id = parse_workshop_id(data.url_or_id)
    check_priority(data.priority)
    check_priority_allowed(principal, data.priority)
    app_id = _app_id(data.app_id, item, workshop_id)
    if len(data.request_id) > MAX_REQUEST_ID:
        raise InvalidArgument.field("request_id", f"must be at most {MAX_REQUEST_ID} characters")
    if data.steam_account_id:
        if not principal.is_admin:
            raise PermissionDenied(
                "only admins choose the Steam account of a download", reason="SCOPE_MISSING"
            )
        if (
            not is_valid_id(data.steam_account_id)
            or await session.get(SteamAccount, data.steam_account_id) is None
        ):
            raise NotFound("steam account", data.steam_account_id)
    # The request as sent (not what Steam said about it), so a replay matches while Steam is away.
    fingerprint = _fingerprint(
        {
            "workshop_id": workshop_id,
            "app_id": data.app_id,
            "priority": data.priority,
            "steam_account_id": data.steam_account_id,
            "skip_cache": data.skip_cache,
        }
    )
    scope = _scope(principal)
    if data.request_id and (earlier := await _by_request_id(session, scope, data.request_id)) is not None:
        return _replay(earlier, fingerprint)
    download = new_job(
        principal,
        workshop_id,
        app_id,
        limits,
        now,
        priority=data.priority,
        skip_cache=data.skip_cache,
        item=item,
    )
    download.requested_steam_account_id = data.steam_account_id or None
    if data.request_id:
        download.idempotency_scope, download.request_id = scope, data.request_id
        download.request_fingerprint = fingerprint
    cached = None
    if not data.skip_cache and download.content_handle is not None and not data.steam_account_id:
        cached = await archives.cached_archive(session, workshop_id, download.content_handle)
    note: list[NewEvent] = []
    if cached is not None:
        archives.serve_from(download, cached, now)
        note = [_server_note(archives.CACHE_NOTE)]
    try:
        async with session.begin_nested():
            session.add(download)
            await session.flush()
    except IntegrityError:
        # Another call with the same request_id won the race; answer with its download.
        earlier = await _by_request_id(session, scope, data.request_id) if data.request_id else None
        if earlier is None:
            raise
        return _replay(earlier, fingerprint)
    stored = await events.append(
        session,
        download,
        [*note, created_event(download)],
        now,
    )
    if cached is None:
        await claimable(session)
    if download.content_handle is not None and not data.skip_cache and not data.steam_account_id:
        after_commit(session).count(metrics.ARCHIVE_CACHE_LOOKUPS, "miss" if cached is None else "hit")
    after_commit(session).count(metrics.DOWNLOADS_CREATED, "queue" if cached is None else "cache")
    if cached is not None:
        after_commit(session).count(metrics.DOWNLOADS_FINISHED, "succeeded", "")
        await tell_webhooks(session, download, now)
    # Last, in the same transaction: a refused quota rolls the download back, and the counter rows
    # stay locked for the shortest time.
    await reserve(session, principal, 1, now)
    return Created(download, stored, replayed=False)


def check_priority(priority: int, field: str = "priority") -> int:
    """A DownloadPriority value; an unknown number would jump the queue."""
    if priority not in (PRIORITY_LOW, PRIORITY_NORMAL, PRIORITY_HIGH):
        raise InvalidArgument.field(field, f"unknown priority {priority}: LOW, NORMAL or HIGH")
    return priority


def check_priority_allowed(principal: Principal, priority: int) -> None:
    """HIGH jumps the shared queue: admins, and keys an admin gave download:priority, only, so that
    no caller can push everyone else back."""
    if priority == PRIORITY_HIGH and not (principal.is_admin or grants(principal.scopes, PRIORITY_SCOPE)):
        raise PermissionDenied(
            f"priority HIGH is reserved for admins and keys with the scope {PRIORITY_SCOPE!r};"
            " use NORMAL or LOW",
            reason="SCOPE_MISSING",
        )


def _app_id(requested: int | None, item: ItemDetails | None, workshop_id: int) -> int:
    steam_says = item.app_id if item is not None else None
    if requested is None:
        return steam_says or WALLPAPER_ENGINE_APP_ID
    check_app_id(requested)
    if steam_says and steam_says != requested:
        raise InvalidArgument.field(
            "app_id", f"workshop item {workshop_id} belongs to app {steam_says}, not {requested}"
        )
    return requested


def item_columns(item: ItemDetails) -> dict[str, Any]:
    """The download's columns that describe its item, from the Web API's details."""
    return {
        "title": item.title[:256],
        "item_file_size": item.file_size or None,
        "item_update_time": item.time_updated,
        "preview_url": item.preview_url[:2048],
        "content_handle": to_signed64(item.content_handle) if item.content_handle else None,
    }


def _server_note(line: str) -> NewEvent:
    return NewEvent(EventKind.LOG, {"stream": "server", "line": line})


async def _by_request_id(session: AsyncSession, scope: str, request_id: str) -> Download | None:
    return await session.scalar(
        select(Download).where(Download.idempotency_scope == scope, Download.request_id == request_id)
    )


def _replay(earlier: Download, fingerprint: str) -> Created:
    if earlier.request_fingerprint != fingerprint:
        raise AlreadyExists(
            "request_id was used before for a different download request", reason="REQUEST_ID_REUSED"
        )
    return Created(earlier, [], replayed=True)


async def get_visible(
    session: AsyncSession, principal: Principal, download_id: str, *, lock: bool = False
) -> Download:
    """The download if the caller may see it; NOT_FOUND otherwise (whether it exists or not)."""
    return await ownership.get_visible(session, Download, principal, download_id, lock=lock)


@dataclass(frozen=True)
class ListFilter:
    states: tuple[DownloadState, ...] = ()
    workshop_id: int = 0
    create_time_after: datetime | None = None
    create_time_before: datetime | None = None
    batch_id: str = ""
    owner_user_id: str = ""


async def list_visible(
    session: AsyncSession, principal: Principal, filters: ListFilter, page_size: int, page_token: str
) -> tuple[list[Download], int, str]:
    if filters.owner_user_id and not principal.is_admin and filters.owner_user_id != principal.user_id:
        raise PermissionDenied("only admins list other users' downloads", reason="SCOPE_MISSING")
    page = paging.page(
        page_size,
        page_token,
        viewer=principal.user_id,
        states=sorted(filters.states),
        workshop_id=filters.workshop_id,
        after=filters.create_time_after,
        before=filters.create_time_before,
        batch=filters.batch_id,
        owner=filters.owner_user_id,
    )
    query: Select[Any] = select(Download)
    if not principal.is_admin:
        query = query.where(Download.owner_user_id == principal.user_id)
    if filters.owner_user_id:
        query = query.where(Download.owner_user_id == filters.owner_user_id)
    if filters.states:
        query = query.where(Download.state.in_(filters.states))
    if filters.workshop_id:
        query = query.where(Download.workshop_id == filters.workshop_id)
    if filters.create_time_after is not None:
        query = query.where(Download.create_time >= filters.create_time_after)
    if filters.create_time_before is not None:
        query = query.where(Download.create_time < filters.create_time_before)
    if filters.batch_id:
        query = query.where(Download.batch_id == filters.batch_id)
    rows, total = await paging.fetch(session, query, page, Download.create_time.desc(), Download.id.desc())
    return rows, total, page.next_token(total)


async def queue_position(session: AsyncSession, download: Download, now: datetime) -> int:
    """How many queued jobs are claimed before this one (higher priority, or older at the same)."""
    if download.state is not DownloadState.QUEUED:
        return 0
    return int(await session.scalar(_ahead(download.id, download.priority, download.create_time, now)) or 0)


def _ahead(download_id: str, priority: int, create_time: datetime, now: datetime) -> Select[int]:
    return (
        select(func.count())
        .select_from(Download)
        .where(
            Download.state == DownloadState.QUEUED,
            Download.id != download_id,
            or_(Download.next_attempt_time.is_(None), Download.next_attempt_time <= now),
            or_(
                Download.priority > priority,
                and_(Download.priority == priority, Download.create_time < create_time),
            ),
        )
    )


_TABLE = Download.__table__


def read_visible(
    connection: Connection, principal: Principal, download_id: str, now: datetime
) -> tuple[DownloadSnapshot, int]:
    """GetDownload's read, as one piece of synchronous work (db.engine.ConnectionRunner runs it): the
    download's snapshot if the caller may see it (NOT_FOUND otherwise) and its queue position.
    Core, not the ORM: no identity map or instance state for a row that is only shown."""
    missing = ownership.checked_id("download", download_id)
    row = connection.execute(select(_TABLE).where(_TABLE.c.id == download_id)).first()
    if row is None or not (principal.is_admin or row.owner_user_id == principal.user_id):
        raise missing
    position = 0
    if row.state is DownloadState.QUEUED:
        ahead = _ahead(download_id, row.priority, row.create_time, now)
        position = int(connection.execute(ahead).scalar() or 0)
    return DownloadSnapshot.of(row), position


async def cancel(session: AsyncSession, principal: Principal, download_id: str, now: datetime) -> None:
    """Cancels at once what no worker holds; for a running job, asks its worker to stop it."""
    download = await get_visible(session, principal, download_id, lock=True)
    if download.state is DownloadState.CANCELLED:
        return
    if download.state in FINAL_STATES:
        raise FailedPrecondition(
            f"the download has {download.state.value.lower()} already; it cannot be cancelled"
        )
    if download.state in ACTIVE_STATES and not _lease_expired(download, now):
        download.cancel_requested = True
        download.update_time = now
        await announce(session, Channel.CANCEL, download.id)  # the instance running it stops it now
        return
    await transition(
        session,
        download,
        DownloadState.CANCELLED,
        now,
        note="cancelled",
        cancel_requested=False,
        next_attempt_time=None,
        lease_owner=None,
        lease_expire_time=None,
    )


def _lease_expired(download: Download, now: datetime) -> bool:
    return download.lease_expire_time is None or download.lease_expire_time <= now


async def retry(
    session: AsyncSession,
    principal: Principal,
    download_id: str,
    request_id: str,
    limits: JobLimits,
    now: datetime,
) -> Download:
    """Queues a failed or cancelled download again, with a fresh allowance of automatic attempts."""
    idempotency.check_request_id(request_id)
    download = await get_visible(session, principal, download_id, lock=True)
    key = idempotency.RequestKey(_scope(principal), request_id)
    claim = await idempotency.claim(session, key, _RETRY_METHOD, _fingerprint({"retry": download.id}), now)
    if claim.earlier is not None:
        return download
    claim.settle(download.id)
    if download.state not in (DownloadState.FAILED, DownloadState.CANCELLED):
        raise FailedPrecondition(
            f"only failed or cancelled downloads can be retried; this one is {download.state.value.lower()}"
        )
    await transition(
        session,
        download,
        DownloadState.QUEUED,
        now,
        note="queued again by RetryDownload",
        max_attempts=download.attempt + limits.max_attempts,
        next_attempt_time=None,
        failure_reason=None,
        failure_message=None,
        failure_retryable=False,
        cancel_requested=False,
        end_time=None,
        percent=0.0,
        phase=Phase.STARTING,
    )
    # A retry is another run: it costs a unit of the caller's quotas like a new download (a refused
    # quota rolls the retry back).
    await reserve(session, principal, 1, now)
    return download


async def delete(session: AsyncSession, principal: Principal, download_id: str, now: datetime) -> None:
    """Deletes a final download; once committed its archive goes (unless a download served from the
    cache still uses it), and the item's DepotDownloader folder when no download of the item is left."""
    download = await get_visible(session, principal, download_id, lock=True)
    if download.state not in FINAL_STATES:
        raise FailedPrecondition("the download is still active; cancel it first")
    archive = download.archive_path
    item = (download.app_id, download.workshop_id)
    await session.delete(download)
    await session.flush()
    if archive and not await archives.shares_archive(session, archive, [download.id]):
        after_commit(session).delete_archive(archive)
    if download.batch_id:
        batch_state.note_change(session, download.batch_id, now, revived=False)
    if not await archives.item_in_use(session, *item):
        after_commit(session).remove_item_dir(*item)
