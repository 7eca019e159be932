"""Watches: a person (or an API key) follows a Workshop item or a collection, and each new version
of an item is downloaded through the normal queue (core.downloads.create: quota, limits, accounts,
the archive cache), as if its owner had asked for it.

People and their keys see their own watches; admins see all; someone else's watch is NOT_FOUND.
What a watch saw change is recorded by `record_change`, the one place a change is announced (so an
event for other systems, e.g. a webhook, is added there). The checks themselves are in
core.watch_checks (claims, Steam) and worker.watch_checker (the loop).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale import metrics
from wallwhale.core import downloads, ownership, paging, webhooks
from wallwhale.core.after_commit import after_commit
from wallwhale.core.catalog import Lookup, check_downloadable
from wallwhale.core.downloads import CreateInput, JobLimits
from wallwhale.core.identity import Principal, require_scope
from wallwhale.core.retention import expire_archives
from wallwhale.core.scopes import capped_by_role, grants, role_scopes
from wallwhale.core.states import FINAL_STATES
from wallwhale.core.watch_checks import (
    MAX_COLLECTION_ITEMS,
    ItemChange,
    Plan,
    members,
    nested_collections,
    next_check,
    retry_delay,
    unavailable_reason,
)
from wallwhale.db.models import ApiKey, ArchiveState, Download, User
from wallwhale.db.types import to_signed64
from wallwhale.db.watch_models import Watch, WatchChange, WatchItem, WatchKind, WatchState, WatchVersion
from wallwhale.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, WallWhaleError
from wallwhale.ids import new_id
from wallwhale.steam.webapi import ItemDetails, SteamWebApi, WebApiUnavailable
from wallwhale.steam.workshop import WALLPAPER_ENGINE_APP_ID, parse_workshop_id

MAX_INTERVAL_SECONDS = 30 * 86400
UPDATE_PATHS = ("paused", "interval", "delete_removed_downloads")


@dataclass(frozen=True)
class Rules:
    """The server's settings for watches."""

    min_interval_seconds: float
    default_interval_seconds: float
    keep_versions: int
    retry_base_seconds: float
    max_attempts: int


@dataclass(frozen=True)
class Target:
    """What Steam says a watch's id is: an item, or a collection and its items (in Steam's order)."""

    workshop_id: int
    kind: WatchKind
    app_id: int
    title: str
    items: dict[int, ItemDetails]


async def look_up(api: SteamWebApi | None, url_or_id: str) -> Target:
    """Asks Steam what `url_or_id` names (outside any transaction). An item that cannot be
    downloaded is refused like CreateDownload refuses it; a collection may hold unavailable items."""
    workshop_id = parse_workshop_id(url_or_id)
    if api is None:
        raise FailedPrecondition("watches need Steam's Web API, which is turned off on this server")
    try:
        found = await api.item_details([workshop_id])
        details = found[workshop_id]
        if details.found and not details.has_content:
            collections = await nested_collections(api, [workshop_id])
            ids = members(collections, workshop_id)
            if ids is not None and collections[workshop_id].is_collection:
                if len(ids) > MAX_COLLECTION_ITEMS:
                    raise InvalidArgument.field(
                        "url_or_id",
                        f"the collection holds {len(ids)} items, more than {MAX_COLLECTION_ITEMS}",
                    )
                items = await api.item_details(ids) if ids else {}
                title = details.title or f"Collection {workshop_id}"
                app = details.app_id or WALLPAPER_ENGINE_APP_ID
                return Target(workshop_id, WatchKind.COLLECTION, app, title[:256], items)
    except WebApiUnavailable as exc:
        raise Unavailable(f"Steam's Web API could not be asked; try again later ({exc})") from None
    item = check_downloadable(Lookup(found), workshop_id)
    assert item is not None
    app = item.app_id or WALLPAPER_ENGINE_APP_ID
    return Target(workshop_id, WatchKind.ITEM, app, item.title[:256], {workshop_id: item})


def check_may_create(principal: Principal) -> None:
    """A watch queues downloads: its maker needs download:write as well as watch:write."""
    require_scope(principal, "download:write")


def check_interval(seconds: float | None, rules: Rules, field: str = "interval") -> int:
    """The interval in whole seconds: the default when none is asked for, never below the floor."""
    if seconds is None:
        return int(rules.default_interval_seconds)
    if seconds < rules.min_interval_seconds:
        raise InvalidArgument.field(
            field, f"must be at least {rules.min_interval_seconds:g}s (the server's floor)"
        )
    if seconds > MAX_INTERVAL_SECONDS:
        raise InvalidArgument.field(field, f"must be at most {MAX_INTERVAL_SECONDS}s (30 days)")
    return int(seconds)


async def record_change(
    session: AsyncSession,
    watch: Watch,
    workshop_id: int,
    change: WatchChange,
    now: datetime,
    *,
    details: ItemDetails | None = None,
    download_id: str | None = None,
    detail: str = "",
) -> WatchVersion:
    """Records what a watch saw change. Every change of every watch passes here: this is where it is
    announced (metrics, and the owner's webhooks in the same transaction)."""
    found = details is not None and details.found
    version = WatchVersion(
        id=new_id(),
        watch_id=watch.id,
        workshop_id=workshop_id,
        change=change,
        title=(details.title if found and details else "")[:256],
        content_handle=to_signed64(details.content_handle)
        if found and details and details.content_handle
        else None,
        item_update_time=details.time_updated if found and details else None,
        download_id=download_id,
        detail=detail[:512],
        create_time=now,
    )
    session.add(version)
    after_commit(session).count(metrics.WATCH_CHANGES, change.value.lower())
    if (event_type := WEBHOOK_EVENTS.get(change)) is not None:
        payload = {"watch_version": version_json(version)}
        resource = f"watches/{watch.id}"
        await webhooks.enqueue_event(session, event_type, watch.owner_user_id, resource, payload, now)
    return version


# A new version of an item (updated, or added to a watched collection) and an item gone (private,
# banned, removed from Steam, or from the collection): the change field of the payload says which.
WEBHOOK_EVENTS = {
    WatchChange.UPDATED: webhooks.WATCH_ITEM_UPDATED,
    WatchChange.ADDED: webhooks.WATCH_ITEM_UPDATED,
    WatchChange.UNAVAILABLE: webhooks.WATCH_ITEM_UNAVAILABLE,
    WatchChange.REMOVED: webhooks.WATCH_ITEM_UNAVAILABLE,
}


def version_json(version: WatchVersion) -> dict[str, Any]:
    """What an outbox row keeps of a version (rpc.webhook_payloads renders it as the REST API does)."""
    return {
        "id": version.id,
        "watch_id": version.watch_id,
        "workshop_id": version.workshop_id,
        "change": version.change.value,
        "title": version.title,
        "content_handle": version.content_handle,
        "item_update_time": version.item_update_time.isoformat() if version.item_update_time else None,
        "download_id": version.download_id,
        "detail": version.detail,
        "create_time": version.create_time.isoformat(),
    }


async def create(
    session: AsyncSession,
    principal: Principal,
    target: Target,
    interval_seconds: int,
    delete_removed: bool,
    limits: JobLimits,
    rules: Rules,
    now: datetime,
    rng: random.Random,
) -> Watch:
    """Adds the watch and queues a download of each available item's current version."""
    check_may_create(principal)
    if len(target.items) > MAX_COLLECTION_ITEMS:
        raise InvalidArgument.field(
            "url_or_id", f"a watched collection holds at most {MAX_COLLECTION_ITEMS} items"
        )
    watch = Watch(
        owner_user_id=principal.user_id,
        api_key_id=principal.api_key_id or None,
        kind=target.kind,
        workshop_id=target.workshop_id,
        app_id=target.app_id,
        title=target.title,
        interval_seconds=interval_seconds,
        delete_removed=delete_removed,
        next_check_time=next_check(now, interval_seconds, rng),
        create_time=now,
        update_time=now,
    )
    session.add(watch)
    await session.flush()
    for workshop_id, details in target.items.items():
        item = WatchItem(watch_id=watch.id, workshop_id=workshop_id)
        session.add(item)
        first = ItemChange(workshop_id, WatchChange.FIRST, details, unavailable_reason(details))
        await _apply_item(session, watch, item, first, (principal, limits), rules.keep_versions, now)
    return watch


async def _queue(
    session: AsyncSession, principal: Principal, limits: JobLimits, details: ItemDetails, now: datetime
) -> Download:
    created = await downloads.create(
        session, principal, CreateInput(url_or_id=str(details.workshop_id)), limits, now, item=details
    )
    return created.download


async def _apply_item(
    session: AsyncSession,
    watch: Watch,
    item: WatchItem,
    change: ItemChange,
    acting: tuple[Principal, JobLimits] | None,
    keep: int,
    now: datetime,
) -> None:
    """One item's change: the download it needs (for `acting`; raising what downloads.create
    raises), the item's stored version, and the record of the change."""
    details = change.details
    download_id = None
    if change.downloads and details is not None:
        assert acting is not None, "a change that downloads needs someone to act for"
        download_id = (await _queue(session, *acting, details, now)).id
    if details is not None and details.found:
        item.title = details.title[:256]
    if change.change is WatchChange.UNAVAILABLE or (
        change.detail and change.change is not WatchChange.REMOVED
    ):
        item.available, item.unavailable_reason = False, change.detail[:256]
    elif details is not None:
        item.available, item.unavailable_reason = True, ""
    if download_id is not None and details is not None:
        item.content_handle = to_signed64(details.content_handle) if details.content_handle else None
        item.item_update_time = details.time_updated
        item.download_id = download_id
    await record_change(
        session,
        watch,
        change.workshop_id,
        change.change,
        now,
        details=details,
        download_id=download_id,
        detail=change.detail,
    )
    if download_id is not None:
        await session.flush()
        await _prune_versions(session, watch, change.workshop_id, now, keep)


async def _prune_versions(
    session: AsyncSession, watch: Watch, workshop_id: int, now: datetime, keep: int
) -> None:
    """Removes the archives of the item's versions older than the newest `keep`."""
    older = list(
        await session.scalars(
            select(WatchVersion.download_id)
            .where(
                WatchVersion.watch_id == watch.id,
                WatchVersion.workshop_id == workshop_id,
                WatchVersion.download_id.is_not(None),
            )
            .order_by(WatchVersion.create_time.desc(), WatchVersion.id.desc())
            .offset(keep)
        )
    )
    if not older:
        return
    rows = list(
        await session.scalars(
            select(Download).where(
                Download.id.in_(older),
                Download.state.in_(FINAL_STATES),
                Download.archive_state == ArchiveState.AVAILABLE,
            )
        )
    )
    await expire_archives(session, rows, f"the watch keeps the newest {keep} versions", now)


async def owner_principal(session: AsyncSession, watch: Watch, now: datetime) -> Principal:
    """Who the watch's downloads are made for: its owner through the key that made the watch (its
    quota and limits count them). FAILED_PRECONDITION when that key or user may no longer act."""
    user = await session.get(User, watch.owner_user_id)
    if user is None or user.disabled:
        raise FailedPrecondition("the watch's owner is disabled")
    if watch.api_key_id is None:
        return Principal("user", user.id, user.role, role_scopes(user.role))
    key = await session.get(ApiKey, watch.api_key_id)
    if key is None or key.revoke_time is not None or key.disabled:
        raise FailedPrecondition("the API key that made the watch was revoked or disabled")
    if key.expire_time is not None and key.expire_time <= now:
        raise FailedPrecondition("the API key that made the watch has expired")
    scopes = capped_by_role(key.scopes, user.role)
    if not grants(scopes, "download:write"):
        raise FailedPrecondition("the API key that made the watch may no longer queue downloads")
    return Principal("api_key", user.id, user.role, scopes, api_key_id=key.id)


async def apply(
    session: AsyncSession,
    owner: str,
    watch_id: str,
    changes: Plan,
    limits_for: Callable[[AsyncSession, Principal], Awaitable[JobLimits]],
    rules: Rules,
    now: datetime,
    rng: random.Random,
) -> bool:
    """Applies one watch's check under its lease (False when the lease was lost). A download that
    cannot be queued (quota, a revoked key) leaves the item at its old version: the next check,
    after a back-off, tries again; nothing is skipped."""
    watch = await session.scalar(
        select(Watch).where(Watch.id == watch_id, Watch.lease_owner == owner).with_for_update()
    )
    if watch is None:
        return False
    items = {
        item.workshop_id: item
        for item in await session.scalars(select(WatchItem).where(WatchItem.watch_id == watch.id))
    }
    error = ""
    acting: tuple[Principal, JobLimits] | None = None
    for change in changes.changes:
        if change.change is WatchChange.REMOVED:
            await _remove(session, watch, items.pop(change.workshop_id, None), change, now)
            continue
        item = items.get(change.workshop_id)
        if item is None:
            item = WatchItem(watch_id=watch.id, workshop_id=change.workshop_id)
            session.add(item)
            await session.flush()
            items[change.workshop_id] = item
        try:
            async with session.begin_nested():
                if change.downloads and acting is None:
                    principal = await owner_principal(session, watch, now)
                    acting = (principal, await limits_for(session, principal))
                await _apply_item(session, watch, item, change, acting, rules.keep_versions, now)
        except WallWhaleError as exc:
            error = f"workshop item {change.workshop_id}: {exc}"
            if change.change is WatchChange.ADDED:
                await session.delete(items.pop(change.workshop_id))  # added again at the next check
    if error:
        await session.refresh(watch)  # a savepoint that rolled back expired what it had touched
    if changes.unavailable:
        watch.state_message = changes.unavailable[:512]
        if watch.state is WatchState.ACTIVE:
            watch.state = WatchState.UNAVAILABLE
    else:
        watch.state_message = ""
        if watch.state is WatchState.UNAVAILABLE:
            watch.state = WatchState.ACTIVE
    watch.last_check_time = now
    watch.update_time = now
    watch.lease_owner, watch.lease_expire_time = None, None
    if error:
        delay = retry_delay(watch.interval_seconds, watch.consecutive_failures, rules.retry_base_seconds)
        watch.consecutive_failures += 1
        watch.last_error = error[:512]
        watch.next_check_time = next_check(now, delay, rng)
    else:
        watch.consecutive_failures, watch.last_error = 0, ""
        watch.next_check_time = next_check(now, watch.interval_seconds, rng)
    return True


async def _remove(
    session: AsyncSession, watch: Watch, item: WatchItem | None, change: ItemChange, now: datetime
) -> None:
    """An item left the collection: reported; with delete_removed its downloads by this watch go."""
    detail = ""
    if watch.delete_removed:
        made = [
            download_id
            for download_id in await session.scalars(
                select(WatchVersion.download_id).where(
                    WatchVersion.watch_id == watch.id,
                    WatchVersion.workshop_id == change.workshop_id,
                    WatchVersion.download_id.is_not(None),
                )
            )
            if download_id is not None
        ]
        owner = await session.get(User, watch.owner_user_id)
        if owner is not None:
            principal = Principal("user", owner.id, owner.role, role_scopes(owner.role))
            removed = 0
            for download_id in dict.fromkeys(made):
                try:
                    async with session.begin_nested():
                        row = await session.get(Download, download_id)
                        if row is not None and row.state in FINAL_STATES:
                            await downloads.delete(session, principal, download_id, now)
                        elif row is not None:
                            await downloads.cancel(session, principal, download_id, now)
                        removed += 1
                except (NotFound, FailedPrecondition):
                    continue
            detail = f"{removed} download(s) of this watch deleted"
    if item is not None:
        await session.delete(item)
    await record_change(session, watch, change.workshop_id, WatchChange.REMOVED, now, detail=detail)


# -- reading and changing watches (the RPCs) ----------------------------------------------------


async def get_visible(
    session: AsyncSession, principal: Principal, watch_id: str, *, lock: bool = False, field: str = "id"
) -> Watch:
    """The watch if the caller may see it; NOT_FOUND otherwise (whether it exists or not)."""
    if not watch_id:
        raise InvalidArgument.field(field, "is required")
    missing = ownership.checked_id("watch", watch_id)
    query = select(Watch).where(Watch.id == watch_id)
    if lock:
        query = query.with_for_update()
    row = await session.scalar(query)
    if row is None or not (principal.is_admin or row.owner_user_id == principal.user_id):
        raise missing
    return row


async def get_visible_with_items(
    session: AsyncSession, principal: Principal, watch_id: str
) -> tuple[Watch, list[WatchItem]]:
    """The watch and its items as one statement saw them (on PostgreSQL each statement of a READ
    COMMITTED transaction has its own snapshot: two reads could pair a watch's old failure count with
    its item's new download). NOT_FOUND as get_visible."""
    if not watch_id:
        raise InvalidArgument.field("id", "is required")
    missing = ownership.checked_id("watch", watch_id)
    rows = (
        await session.execute(
            select(Watch, WatchItem)
            .outerjoin(WatchItem, WatchItem.watch_id == Watch.id)
            .where(Watch.id == watch_id)
            .order_by(WatchItem.id)
        )
    ).all()
    if not rows or not (principal.is_admin or rows[0][0].owner_user_id == principal.user_id):
        raise missing
    return rows[0][0], [item for _, item in rows if item is not None]


async def items_of(session: AsyncSession, watch_id: str) -> list[WatchItem]:
    return list(
        await session.scalars(select(WatchItem).where(WatchItem.watch_id == watch_id).order_by(WatchItem.id))
    )


async def item_counts(session: AsyncSession, watch_ids: Sequence[str]) -> dict[str, int]:
    if not watch_ids:
        return {}
    rows = await session.execute(
        select(WatchItem.watch_id, func.count())
        .where(WatchItem.watch_id.in_(list(watch_ids)))
        .group_by(WatchItem.watch_id)
    )
    return {watch_id: int(count) for watch_id, count in rows}


async def list_visible(
    session: AsyncSession, principal: Principal, page_size: int, page_token: str
) -> tuple[list[Watch], int, str]:
    page = paging.page(page_size, page_token, viewer=principal.user_id)
    query: Select[Any] = select(Watch)
    if not principal.is_admin:
        query = query.where(Watch.owner_user_id == principal.user_id)
    rows, total = await paging.fetch(session, query, page, Watch.create_time.desc(), Watch.id.desc())
    return rows, total, page.next_token(total)


async def list_versions(
    session: AsyncSession, principal: Principal, watch_id: str, page_size: int, page_token: str
) -> tuple[list[WatchVersion], int, str]:
    await get_visible(session, principal, watch_id, field="watch_id")
    page = paging.page(page_size, page_token, watch=watch_id)
    query: Select[Any] = select(WatchVersion).where(WatchVersion.watch_id == watch_id)
    rows, total = await paging.fetch(
        session, query, page, WatchVersion.create_time.desc(), WatchVersion.id.desc()
    )
    return rows, total, page.next_token(total)


@dataclass(frozen=True)
class Changes:
    paths: tuple[str, ...]
    paused: bool = False
    interval_seconds: float | None = None
    delete_removed: bool = False


async def update(
    session: AsyncSession,
    principal: Principal,
    watch_id: str,
    changes: Changes,
    rules: Rules,
    now: datetime,
    rng: random.Random,
) -> Watch:
    unknown = [path for path in changes.paths if path not in UPDATE_PATHS]
    if unknown:
        raise InvalidArgument.field(
            "update_mask", f"{', '.join(unknown)} cannot be changed; one of {', '.join(UPDATE_PATHS)}"
        )
    interval = None
    if "interval" in changes.paths:
        if changes.interval_seconds is None:
            raise InvalidArgument.field("watch.interval", "is required when update_mask names it")
        interval = check_interval(changes.interval_seconds, rules, "watch.interval")
    watch = await get_visible(session, principal, watch_id, lock=True, field="watch.id")
    if interval is not None:
        watch.interval_seconds = interval
        watch.next_check_time = min(watch.next_check_time, next_check(now, interval, rng))
    if "delete_removed_downloads" in changes.paths:
        watch.delete_removed = changes.delete_removed
    if "paused" in changes.paths:
        if changes.paused:
            watch.state = WatchState.PAUSED
        elif watch.state is WatchState.PAUSED:
            watch.state = WatchState.UNAVAILABLE if watch.state_message else WatchState.ACTIVE
            watch.next_check_time = now  # resumed: checked soon
    watch.update_time = now
    return watch


async def delete(session: AsyncSession, principal: Principal, watch_id: str) -> None:
    watch = await get_visible(session, principal, watch_id, lock=True)
    await session.delete(watch)
