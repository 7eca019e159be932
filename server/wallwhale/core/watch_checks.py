"""Checking watches: claiming due ones, asking Steam about many at once, and what changed.

Claims. A watch is due when its `next_check_time` has come and no live lease holds it. An instance
claims up to `limit` due watches in one transaction (FOR UPDATE SKIP LOCKED on PostgreSQL, so two
instances never claim the same watch; SQLite has one writer) and writes its lease on them. Every
later write about a claimed watch is conditional on that lease, and a dying instance's lease runs
out, after which the watch is due again: a check is neither done twice at once nor lost.

Asking. One round asks GetCollectionDetails for every collection claimed (nested collections level
by level) and GetPublishedFileDetails for the union of all their items and the watched items, each
id once; steam.webapi sends at most 100 ids per request. 10,000 watched items cost about 100
requests per cycle, however they are spread over watches.

Planning (`plan`) is pure: the item changes a watch's answers show against what it stored.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.db.types import from_signed64
from wallwhale.db.watch_models import Watch, WatchChange, WatchItem, WatchKind, WatchState
from wallwhale.steam.webapi import CollectionDetails, ItemDetails, SteamWebApi

MAX_COLLECTION_ITEMS = 1000
# Each check is moved by up to this share of its interval, so watches made together drift apart.
JITTER = 0.1
_VISIBILITY = {1: "friends-only", 2: "private"}


@dataclass(frozen=True)
class StoredItem:
    workshop_id: int
    content_handle: int | None  # unsigned, as Steam sends it
    update_time: datetime | None
    available: bool


@dataclass(frozen=True)
class Claimed:
    id: str
    kind: WatchKind
    workshop_id: int
    interval_seconds: int
    state: WatchState
    consecutive_failures: int
    items: dict[int, StoredItem] = field(default_factory=dict)


@dataclass(frozen=True)
class Answers:
    items: dict[int, ItemDetails]
    collections: dict[int, CollectionDetails]


@dataclass(frozen=True)
class ItemChange:
    workshop_id: int
    change: WatchChange
    details: ItemDetails | None
    detail: str = ""

    @property
    def downloads(self) -> bool:
        """This change queues a download of the item's current version."""
        return self.change in (WatchChange.UPDATED, WatchChange.ADDED, WatchChange.FIRST) and not self.detail


@dataclass(frozen=True)
class Plan:
    changes: list[ItemChange]
    # Why the watch as a whole is unavailable ("" when it is not).
    unavailable: str

    def quiet(self, claimed: Claimed) -> bool:
        """Nothing to record: the check only moves the watch's next check."""
        was_unavailable = claimed.state is WatchState.UNAVAILABLE
        return not self.changes and was_unavailable == bool(self.unavailable)


def unavailable_reason(details: ItemDetails | None) -> str:
    """Why the item cannot be downloaded now ("" when it can)."""
    if details is None or not details.found:
        return "Steam has no public item with this id (removed, or private)"
    if details.banned:
        return f"banned on Steam: {details.ban_reason}" if details.ban_reason else "banned on Steam"
    if details.visibility in _VISIBILITY:
        return _VISIBILITY[details.visibility]
    if not details.has_content:
        return "no downloadable content"
    return ""


def content_changed(stored: StoredItem, details: ItemDetails) -> bool:
    """A new version: another content handle (hcontent_file) or another update time."""
    return stored.content_handle != details.content_handle or stored.update_time != details.time_updated


def members(collections: dict[int, CollectionDetails], root: int) -> list[int] | None:
    """The items of a collection, nested collections followed once, in Steam's order; None when
    Steam does not show the collection."""
    top = collections.get(root)
    if top is None or top.result != 1:
        return None
    found: list[int] = []
    seen: set[int] = set()

    def walk(collection_id: int) -> None:
        details = collections.get(collection_id)
        if details is None or collection_id in seen:
            return
        seen.add(collection_id)
        found.extend(details.item_ids)
        for child in details.collection_ids:
            walk(child)

    walk(root)
    return list(dict.fromkeys(found))


def _item_change(workshop_id: int, stored: StoredItem, details: ItemDetails | None) -> list[ItemChange]:
    reason = unavailable_reason(details)
    if reason:
        return [ItemChange(workshop_id, WatchChange.UNAVAILABLE, details, reason)] if stored.available else []
    assert details is not None
    changes = [] if stored.available else [ItemChange(workshop_id, WatchChange.AVAILABLE, details)]
    if content_changed(stored, details):
        changes.append(ItemChange(workshop_id, WatchChange.UPDATED, details))
    return changes


def plan(claimed: Claimed, answers: Answers) -> Plan:
    """What changed for one watch since its last check."""
    if claimed.kind is WatchKind.ITEM:
        details = answers.items.get(claimed.workshop_id)
        own = claimed.items.get(claimed.workshop_id) or StoredItem(claimed.workshop_id, None, None, True)
        return Plan(_item_change(claimed.workshop_id, own, details), unavailable_reason(details))
    current = members(answers.collections, claimed.workshop_id)
    if current is None:
        return Plan([], "Steam shows no public collection with this id (removed, or private)")
    changes: list[ItemChange] = []
    for workshop_id in current:
        details = answers.items.get(workshop_id)
        stored = claimed.items.get(workshop_id)
        if stored is None:
            changes.append(ItemChange(workshop_id, WatchChange.ADDED, details, unavailable_reason(details)))
        else:
            changes += _item_change(workshop_id, stored, details)
    kept = set(current)
    changes += [
        ItemChange(workshop_id, WatchChange.REMOVED, None)
        for workshop_id in claimed.items
        if workshop_id not in kept
    ]
    return Plan(changes, "")


async def ask(api: SteamWebApi, claimed: Sequence[Claimed]) -> Answers:
    """Steam's answers for every claimed watch, in as few requests as the ids allow. Raises
    steam.webapi.WebApiUnavailable when Steam could not be asked."""
    collections = await nested_collections(
        api, [watch.workshop_id for watch in claimed if watch.kind is WatchKind.COLLECTION]
    )
    wanted: list[int] = []
    for watch in claimed:
        if watch.kind is WatchKind.ITEM:
            wanted.append(watch.workshop_id)
        else:
            wanted += members(collections, watch.workshop_id) or []
    items = await api.item_details(dict.fromkeys(wanted)) if wanted else {}
    return Answers(items, collections)


async def nested_collections(api: SteamWebApi, roots: Iterable[int]) -> dict[int, CollectionDetails]:
    """GetCollectionDetails for the ids and, level by level, for the collections nested in them."""
    known: dict[int, CollectionDetails] = {}
    asking = list(dict.fromkeys(roots))
    while asking:
        answers = await api.collection_details(asking)
        known.update(answers)
        asking = list(
            dict.fromkeys(
                child
                for details in answers.values()
                for child in details.collection_ids
                if child not in known
            )
        )
        if len(known) > MAX_COLLECTION_ITEMS:
            break
    return known


def next_check(now: datetime, seconds: float, rng: random.Random) -> datetime:
    return now + timedelta(seconds=seconds * rng.uniform(1 - JITTER, 1 + JITTER))


def retry_delay(interval_seconds: float, failures_before: int, base_seconds: float) -> float:
    """After a failed check: the base, doubled per earlier failure, never more than the interval."""
    return min(float(interval_seconds), base_seconds * float(2 ** min(failures_before, 30)))


def _due(now: datetime) -> list[object]:
    return [
        Watch.state.in_((WatchState.ACTIVE, WatchState.UNAVAILABLE)),
        Watch.next_check_time <= now,
        or_(Watch.lease_expire_time.is_(None), Watch.lease_expire_time <= now),
    ]


async def claim_due(
    session: AsyncSession, owner: str, now: datetime, lease: timedelta, limit: int
) -> list[Claimed]:
    """Claims up to `limit` due watches, the longest due first, with the items they stored."""
    rows = list(
        await session.scalars(
            select(Watch)
            .where(*_due(now))  # type: ignore[arg-type]
            .order_by(Watch.next_check_time, Watch.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not rows:
        return []
    ids = [row.id for row in rows]
    await session.execute(
        update(Watch)
        .where(Watch.id.in_(ids))
        .values(lease_owner=owner, lease_expire_time=now + lease)
        .execution_options(synchronize_session=False)
    )
    stored: dict[str, dict[int, StoredItem]] = {watch_id: {} for watch_id in ids}
    for start in range(0, len(ids), 500):
        items = await session.execute(
            select(
                WatchItem.watch_id,
                WatchItem.workshop_id,
                WatchItem.content_handle,
                WatchItem.item_update_time,
                WatchItem.available,
            ).where(WatchItem.watch_id.in_(ids[start : start + 500]))
        )
        for watch_id, workshop_id, handle, updated, available in items:
            stored[watch_id][workshop_id] = StoredItem(
                workshop_id, from_signed64(handle) if handle is not None else None, updated, available
            )
    return [
        Claimed(
            row.id,
            row.kind,
            row.workshop_id,
            row.interval_seconds,
            row.state,
            row.consecutive_failures,
            stored[row.id],
        )
        for row in rows
    ]


_TABLE: Table = Watch.__table__  # type: ignore[assignment]


async def finish_quiet(
    session: AsyncSession, owner: str, claimed: Sequence[Claimed], now: datetime, rng: random.Random
) -> None:
    """Watches whose check found nothing new: one statement for all (executemany), each moved to its
    next check with its own jitter, only while this instance still holds its lease."""
    nexts = {watch.id: next_check(now, watch.interval_seconds, rng) for watch in claimed}
    await _release(session, owner, nexts, now, consecutive_failures=0, last_error="")


async def finish_failed(
    session: AsyncSession,
    owner: str,
    claimed: Sequence[Claimed],
    error: str,
    now: datetime,
    base_seconds: float,
    rng: random.Random,
) -> None:
    """Steam could not be asked: each watch waits longer than after its previous failure."""
    nexts = {
        watch.id: next_check(
            now, retry_delay(watch.interval_seconds, watch.consecutive_failures, base_seconds), rng
        )
        for watch in claimed
    }
    failures = _TABLE.c.consecutive_failures + 1
    await _release(session, owner, nexts, now, consecutive_failures=failures, last_error=error[:512])


async def _release(
    session: AsyncSession, owner: str, nexts: dict[str, datetime], now: datetime, **outcome: Any
) -> None:
    """Gives back the leases this instance holds, each watch due again at its own time (executemany)."""
    if not nexts:
        return
    statement = (
        update(_TABLE)
        .where(_TABLE.c.id == bindparam("b_id"), _TABLE.c.lease_owner == owner)
        .values(
            next_check_time=bindparam("b_next"),
            last_check_time=now,
            update_time=now,
            lease_owner=None,
            lease_expire_time=None,
            **outcome,
        )
    )
    await session.execute(statement, [{"b_id": key, "b_next": due} for key, due in nexts.items()])


async def renew(session: AsyncSession, owner: str, watch_ids: Sequence[str], until: datetime) -> None:
    """Extends this instance's lease on watches it is still writing (a long round of changes)."""
    if watch_ids:
        await session.execute(
            update(Watch)
            .where(Watch.id.in_(list(watch_ids)), Watch.lease_owner == owner)
            .values(lease_expire_time=until)
            .execution_options(synchronize_session=False)
        )


async def release(session: AsyncSession, owner: str, watch_ids: Sequence[str]) -> None:
    """Gives claimed watches back unchecked (the instance is stopping): they are due again at once."""
    if watch_ids:
        await session.execute(
            update(Watch)
            .where(Watch.id.in_(list(watch_ids)), Watch.lease_owner == owner)
            .values(lease_owner=None, lease_expire_time=None)
            .execution_options(synchronize_session=False)
        )
