"""Batches: the downloads of several items created together, from a list of items or a Workshop collection.

A batch is one transaction: the batch row, one QUEUED job per item (made like any other download, see
`downloads.new_job`) and the quota for all of them; a refused quota creates nothing. Its jobs are
ordinary downloads afterwards (queue, per-key concurrency, retries, cancel); its state follows theirs
(core.batch_state). Visibility is the downloads' rule: the owner and admins; others get NOT_FOUND.

Collections are expanded with Steam's Web API before the transaction (GetCollectionDetails, nested
collections level by level, each collection once, so cycles end; the first occurrence of an item wins).
A collection's items come first, then its nested collections' items: the Web API reports the two kinds
apart. When the Web API is off or cannot be reached, every id is taken for an item (a collection's job
then fails with the item's reason), the jobs say so in a server log line and the server logs a warning.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale import metrics
from wallwhale.core import archives, batch_state, downloads, events, ownership, paging
from wallwhale.core.after_commit import after_commit
from wallwhale.core.batch_state import Counts
from wallwhale.core.downloads import JobLimits
from wallwhale.core.events import EventKind, NewEvent, StoredEvent
from wallwhale.core.identity import Principal
from wallwhale.core.states import FINAL_STATES
from wallwhale.db.models import Batch, BatchState, Download, DownloadState
from wallwhale.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from wallwhale.log import get_logger
from wallwhale.steam.webapi import CollectionDetails, ItemDetails, SteamWebApi, WebApiUnavailable
from wallwhale.steam.workshop import WALLPAPER_ENGINE_APP_ID, check_app_id, parse_workshop_id
from wallwhale.storage.archives import Storage
from wallwhale.storage.bundle import Bundle, BundleError, Source

_log = get_logger("wallwhale.batches")

MAX_ITEMS = 1000
_FIELD = "urls_or_ids"


@dataclass(frozen=True)
class BatchInput:
    urls_or_ids: Sequence[str]
    app_id: int | None = None
    priority: int = downloads.PRIORITY_NORMAL
    request_id: str = ""
    skip_cache: bool = False


@dataclass(frozen=True)
class Request:
    """A checked CreateBatch request: the ids as given (before expansion) and its fingerprint."""

    workshop_ids: tuple[int, ...]
    app_id: int | None
    priority: int
    request_id: str
    skip_cache: bool
    fingerprint: str


@dataclass(frozen=True)
class Expansion:
    """What the batch's ids stand for: the items to download, in order, and what Steam said of them."""

    workshop_ids: list[int]
    title: str
    collection_id: int | None = None
    items: dict[int, ItemDetails] = field(default_factory=dict)
    # Why collections could not be expanded (empty when they were): told in each job's log.
    unchecked: str = ""


@dataclass(frozen=True)
class Created:
    batch: Batch
    events: list[StoredEvent]
    replayed: bool


def check(data: BatchInput) -> Request:
    """Validates the request before anything is asked or written."""
    if not data.urls_or_ids:
        raise InvalidArgument.field(_FIELD, "is required: at least one Workshop URL or item id")
    if len(data.urls_or_ids) > MAX_ITEMS:
        raise InvalidArgument.field(
            _FIELD, f"has {len(data.urls_or_ids)} entries; a batch holds at most {MAX_ITEMS} items"
        )
    ids = tuple(parse_workshop_id(text, f"{_FIELD}[{index}]") for index, text in enumerate(data.urls_or_ids))
    app_id = check_app_id(data.app_id) if data.app_id is not None else None
    downloads.check_priority(data.priority)
    if len(data.request_id) > downloads.MAX_REQUEST_ID:
        raise InvalidArgument.field("request_id", f"must be at most {downloads.MAX_REQUEST_ID} characters")
    canonical = {"ids": ids, "app_id": app_id, "priority": data.priority, "skip_cache": data.skip_cache}
    fingerprint = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
    return Request(ids, app_id, data.priority, data.request_id, data.skip_cache, fingerprint)


async def replay(session: AsyncSession, principal: Principal, request: Request) -> Batch | None:
    """The batch made earlier with this request_id, or None; a different request under it is refused."""
    if not request.request_id:
        return None
    earlier = await session.scalar(
        select(Batch).where(
            Batch.idempotency_scope == downloads.request_scope(principal),
            Batch.request_id == request.request_id,
        )
    )
    if earlier is not None and earlier.request_fingerprint != request.fingerprint:
        raise AlreadyExists(
            "request_id was used before for a different batch request", reason="REQUEST_ID_REUSED"
        )
    return earlier


async def expand(web_api: SteamWebApi | None, workshop_ids: Sequence[int]) -> Expansion:
    """The items the ids stand for (see the module docstring); asks Steam, writes nothing."""
    given = list(dict.fromkeys(workshop_ids))
    if web_api is None:
        return _as_items(given, "Steam's Web API is turned off on this server")
    try:
        collections = await _collections(web_api, given)
    except WebApiUnavailable as exc:
        _log.warning("collections not expanded: Steam's Web API is unavailable", error=str(exc))
        return _as_items(given, "Steam's Web API could not be reached")
    items: list[int] = []
    expanded: set[int] = set()

    def walk(workshop_id: int) -> None:
        details = collections.get(workshop_id)
        if details is None or not details.is_collection:
            items.append(workshop_id)
            return
        if workshop_id in expanded:
            return  # met again (a cycle, or listed twice): its items are in already
        expanded.add(workshop_id)
        for child in details.item_ids:
            items.append(child)
        for child in details.collection_ids:
            walk(child)

    for workshop_id in given:
        walk(workshop_id)
    ordered = list(dict.fromkeys(items))
    if len(ordered) > MAX_ITEMS:
        raise InvalidArgument.field(
            _FIELD, f"expands to {len(ordered)} items; a batch holds at most {MAX_ITEMS}"
        )
    single = given[0] if len(given) == 1 and given[0] in expanded else None
    try:
        details = await web_api.item_details([*ordered, *([single] if single else [])])
    except WebApiUnavailable as exc:  # the titles are a nicety: the batch goes ahead without them
        _log.warning("item details unavailable for a batch", error=str(exc))
        details = {}
    if single is not None:
        found = details.get(single)
        title = found.title if found is not None and found.found and found.title else f"Collection {single}"
    else:
        title = _count_title(len(ordered))
    return Expansion(
        ordered, title[:256], single, {key: value for key, value in details.items() if value.found}
    )


async def _collections(web_api: SteamWebApi, given: list[int]) -> dict[int, CollectionDetails]:
    """GetCollectionDetails for the ids and, level by level, for every nested collection found."""
    known: dict[int, CollectionDetails] = {}
    asking = given
    while asking:
        answers = await web_api.collection_details(asking)
        known.update(answers)
        if len(known) > MAX_ITEMS * 2:
            raise InvalidArgument.field(_FIELD, f"names more than {MAX_ITEMS} collections and items")
        asking = list(
            dict.fromkeys(
                child
                for details in answers.values()
                if details.is_collection
                for child in details.collection_ids
                if child not in known
            )
        )
    return known


def _as_items(given: list[int], reason: str) -> Expansion:
    note = f"{reason}: queued as an item without checking whether it is a collection"
    return Expansion(given, _count_title(len(given)), None, {}, note)


def _count_title(count: int) -> str:
    return "1 item" if count == 1 else f"{count} items"


async def create(
    session: AsyncSession,
    principal: Principal,
    request: Request,
    expansion: Expansion,
    limits: JobLimits,
    now: datetime,
) -> Created:
    """The batch and its jobs, in the caller's transaction (or the batch made first with the request_id)."""
    downloads.check_priority_allowed(principal, request.priority)
    scope = downloads.request_scope(principal)
    batch = Batch(
        owner_user_id=principal.user_id,
        api_key_id=principal.api_key_id or None,
        collection_id=expansion.collection_id,
        title=expansion.title,
        state=BatchState.ACTIVE,
        idempotency_scope=scope if request.request_id else None,
        request_id=request.request_id or None,
        request_fingerprint=request.fingerprint if request.request_id else None,
        create_time=now,
    )
    try:
        async with session.begin_nested():
            session.add(batch)
            await session.flush()
    except IntegrityError:
        # Another call with the same request_id won the race; answer with its batch.
        earlier = await replay(session, principal, request)
        if earlier is None:
            raise
        return Created(earlier, [], replayed=True)
    jobs: list[Download] = []
    for position, workshop_id in enumerate(expansion.workshop_ids):
        item = expansion.items.get(workshop_id)
        app_id = request.app_id or (item.app_id if item is not None else None) or WALLPAPER_ENGINE_APP_ID
        # A microsecond apart: the queue (oldest first) and every listing keep the batch's order.
        jobs.append(
            downloads.new_job(
                principal,
                workshop_id,
                app_id,
                limits,
                now + timedelta(microseconds=position),
                priority=request.priority,
                skip_cache=request.skip_cache,
                batch_id=batch.id,
                item=item,
            )
        )
    session.add_all(jobs)
    await session.flush()  # the column defaults are filled in: the first events show the whole job
    note = (
        [NewEvent(EventKind.LOG, {"stream": "server", "line": expansion.unchecked})]
        if expansion.unchecked
        else []
    )
    firsts = [(job, [downloads.created_event(job), *note]) for job in jobs]
    stored = await events.append_first(session, firsts, now)
    await downloads.claimable(session)
    after_commit(session).count(metrics.DOWNLOADS_CREATED, "queue", amount=len(jobs))
    # Last, as for one download: a refused quota rolls everything back.
    await downloads.reserve(session, principal, len(jobs), now)
    return Created(batch, stored, replayed=False)


async def get_visible(
    session: AsyncSession, principal: Principal, batch_id: str, *, lock: bool = False
) -> Batch:
    """The batch if the caller may see it; NOT_FOUND otherwise (whether it exists or not)."""
    return await ownership.get_visible(session, Batch, principal, batch_id, lock=lock)


async def list_visible(
    session: AsyncSession, principal: Principal, page_size: int, page_token: str
) -> tuple[list[Batch], int, str]:
    """The caller's batches (every batch for admins), newest first."""
    page = paging.page(page_size, page_token, viewer=principal.user_id)
    query = select(Batch)
    if not principal.is_admin:
        query = query.where(Batch.owner_user_id == principal.user_id)
    rows, total = await paging.fetch(session, query, page, Batch.create_time.desc(), Batch.id.desc())
    return rows, total, page.next_token(total)


@dataclass(frozen=True)
class Member:
    """One download of a batch, as the batch's message and streams need it."""

    id: str
    workshop_id: int
    state: DownloadState
    last_event_sequence: int


async def members(session: AsyncSession, batch_ids: Sequence[str]) -> dict[str, list[Member]]:
    """The downloads of each batch, in the batch's order."""
    found: dict[str, list[Member]] = {batch_id: [] for batch_id in batch_ids}
    if not batch_ids:
        return found
    rows = await session.execute(
        select(
            Download.batch_id, Download.id, Download.workshop_id, Download.state, Download.last_event_sequence
        )
        .where(Download.batch_id.in_(batch_ids))
        .order_by(Download.create_time, Download.id)
    )
    for batch_id, download_id, workshop_id, state, sequence in rows:
        found[batch_id].append(Member(download_id, workshop_id, state, sequence))  # type: ignore[index]
    return found


def counts(members_of: Sequence[Member]) -> Counts:
    by_state: dict[DownloadState, int] = {}
    for member in members_of:
        by_state[member.state] = by_state.get(member.state, 0) + 1
    return Counts.of(by_state)


async def request_cancel(
    session: AsyncSession, principal: Principal, batch_id: str, now: datetime
) -> list[str]:
    """Marks the batch cancelled and returns its downloads that are not final (to cancel one by one).

    Only the batch is locked here; each download is cancelled in its own transaction afterwards,
    so no transaction holds the batch while it waits for a download (see core.batch_state).
    """
    batch = await get_visible(session, principal, batch_id)
    await session.run_sync(batch_state.lock, batch.id)
    await session.refresh(batch)  # as it is now that no other writer of its state runs
    if batch.state is not BatchState.ACTIVE and batch.state is not BatchState.CANCELLED:
        raise FailedPrecondition(
            f"the batch has {batch.state.value.lower().replace('_', ' ')} already; it cannot be cancelled"
        )
    if batch.cancel_time is None:
        batch.cancel_time = now
    rows = await session.scalars(
        select(Download.id)
        .where(Download.batch_id == batch.id, Download.state.not_in(FINAL_STATES))
        .order_by(Download.create_time, Download.id)
    )
    return list(rows)


async def cancel(
    sessions: async_sessionmaker[AsyncSession],
    principal: Principal,
    batch_id: str,
    clock: Callable[[], datetime],
) -> list[str]:
    """CancelBatch: marks the batch, then cancels each of its downloads that is not final, one
    transaction per download as CancelDownload does it (see request_cancel). Returns those downloads:
    the ones running on this instance are the caller's to stop."""
    async with sessions.begin() as session:
        active = await request_cancel(session, principal, batch_id, clock())
    for download_id in active:
        try:
            async with sessions.begin() as session:
                await downloads.cancel(session, principal, download_id, clock())
        except FailedPrecondition:
            continue  # it became final meanwhile
    return active


@dataclass(frozen=True)
class BatchArchive:
    """The zip FetchBatchArchive streams, assembled from the items' zips (storage.bundle)."""

    bundle: Bundle
    # Names the set of item archives: the same items give the same bytes, so a resumed fetch checks it.
    version: str
    filename: str
    missing: list[str]  # workshop ids of succeeded items whose archive is gone (expired, deleted, damaged)


async def plan_archive(
    readers: async_sessionmaker[AsyncSession], principal: Principal, batch_id: str, storage: Storage
) -> BatchArchive:
    """The batch's archive, or why there is none: everything that can go wrong is found here."""
    return await _plan_archive(readers, storage, lambda session: get_visible(session, principal, batch_id))


async def plan_linked_archive(
    readers: async_sessionmaker[AsyncSession], batch_id: str, storage: Storage
) -> BatchArchive:
    """plan_archive for a share link: the link's creator was checked when it was made."""

    async def load(session: AsyncSession) -> Batch:
        row = await session.get(Batch, batch_id)
        if row is None:
            raise NotFound("batch", batch_id)
        return row

    return await _plan_archive(readers, storage, load)


async def _plan_archive(
    readers: async_sessionmaker[AsyncSession],
    storage: Storage,
    load: Callable[[AsyncSession], Awaitable[Batch]],
) -> BatchArchive:
    async with readers() as session:
        row = await load(session)
        succeeded = list(
            await session.scalars(
                select(Download)
                .where(Download.batch_id == row.id, Download.state == DownloadState.SUCCEEDED)
                .order_by(Download.create_time, Download.id)
            )
        )
    if row.state is BatchState.ACTIVE:
        raise FailedPrecondition(
            "the batch is still active; its archive exists once every download is final",
            reason="ARCHIVE_NOT_READY",
        )
    if not succeeded:
        raise FailedPrecondition(
            f"no download of the batch succeeded ({row.state.value.lower().replace('_', ' ')})",
            reason="ARCHIVE_NOT_READY",
        )
    available: list[tuple[str, Source, str]] = []  # (folder, item zip, sha256)
    missing: list[str] = []
    for download in succeeded:
        folder = str(download.workshop_id)
        source = await asyncio.to_thread(archives.intact_source, download, storage)
        if source is None:
            missing.append(folder)
        else:
            available.append((folder, source, download.archive_sha256 or ""))
    if not available:
        raise NotFound(
            "archive", row.id, "the archives of the batch's items were removed; download them again"
        )
    try:
        bundle = await asyncio.to_thread(Bundle.plan, [(folder, source) for folder, source, _ in available])
    except BundleError as exc:
        _log.warning("batch archive unreadable", batch_id=row.id, error=str(exc))
        raise NotFound("archive", row.id, "an item's archive in storage is damaged") from None
    version = hashlib.sha256("\n".join(f"{folder} {sha256}" for folder, _, sha256 in available).encode())
    return BatchArchive(bundle, version.hexdigest(), _filename(row), missing)


def _filename(row: Batch) -> str:
    """'3078111111-my-collection.zip', or 'batch-<id>-12-items.zip' (ASCII, no path characters)."""
    ascii_title = unicodedata.normalize("NFKD", row.title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_title).strip("-").lower()[:60].rstrip("-")
    prefix = str(row.collection_id) if row.collection_id else f"batch-{row.id}"
    return f"{prefix}-{slug}.zip" if slug else f"{prefix}.zip"
