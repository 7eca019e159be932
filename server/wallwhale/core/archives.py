"""Archives as downloads name them: the cache by content handle (a new download of content already
packed shares the archive file), which files are still needed, and what FetchArchive may send.

Archive files live in storage (storage.archives); several downloads may name the same file (copies
served from the cache), so a file goes only when no available download names it any more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.core.states import FINAL_STATES
from wallwhale.db.models import ArchiveState, Download, DownloadState
from wallwhale.errors import FailedPrecondition, NotFound, Unavailable
from wallwhale.steam.output import Phase
from wallwhale.storage.archives import ArchiveGone, Storage
from wallwhale.storage.bundle import Source
from wallwhale.storage.objects import StoreUnavailable

# What a download served from the cache copies from the download whose archive it shares. The
# archive's times are copied too, so that retention removes both rows' claim on the file together.
# The note of a download served from the cache. It names no other download: that one may be
# another user's, and its id is theirs to share.
CACHE_NOTE = "served from the cache: an earlier download of the same content has its archive"
ARCHIVE_COLUMNS = (
    "archive_state",
    "archive_path",
    "archive_filename",
    "archive_size",
    "archive_sha256",
    "archive_file_count",
    "archive_content_bytes",
    "archive_create_time",
    "archive_expire_time",
)


async def cached_archive(session: AsyncSession, workshop_id: int, content_handle: int) -> Download | None:
    """The newest available archive of this item's content, locked so that a concurrent delete or
    retention waits until the new download that shares it is committed (see shares_archive)."""
    return await session.scalar(
        select(Download)
        .where(
            Download.workshop_id == workshop_id,
            Download.content_handle == content_handle,
            Download.state == DownloadState.SUCCEEDED,
            Download.archive_state == ArchiveState.AVAILABLE,
        )
        .order_by(Download.archive_create_time.desc(), Download.id)
        .limit(1)
        .with_for_update()
    )


def serve_from(download: Download, cached: Download, now: datetime) -> None:
    """Makes a new `download` a finished copy of `cached`: both rows name the same archive file."""
    download.state = DownloadState.SUCCEEDED
    download.start_time = download.end_time = now
    for column, value in cache_columns(cached).items():
        setattr(download, column, value)


def cache_columns(cached: Download) -> dict[str, Any]:
    """The columns that finish a job from `cached` (a new one at creation, a claimed one in the worker)."""
    return {
        "from_cache": True,
        "phase": Phase.DONE,
        "percent": 100.0,
        "bytes_total": cached.archive_content_bytes or 0,
        **{column: getattr(cached, column) for column in ARCHIVE_COLUMNS},
    }


async def shares_archive(session: AsyncSession, archive_path: str, besides: Iterable[str]) -> bool:
    """Whether another available download still names this archive file (cache copies share it)."""
    others = await session.scalar(
        select(func.count())
        .select_from(Download)
        .where(
            Download.archive_path == archive_path,
            Download.archive_state == ArchiveState.AVAILABLE,
            Download.id.not_in(list(besides)),
        )
    )
    return bool(others)


async def item_in_use(session: AsyncSession, app_id: int, workshop_id: int) -> bool:
    """Whether a download of the item still needs its DepotDownloader folder: one that is not final
    (it runs, or will), or whose archive is available (the folder makes its update incremental)."""
    count = await session.scalar(
        select(func.count())
        .select_from(Download)
        .where(
            Download.app_id == app_id,
            Download.workshop_id == workshop_id,
            or_(Download.state.not_in(FINAL_STATES), Download.archive_state == ArchiveState.AVAILABLE),
        )
    )
    return bool(count)


@dataclass(frozen=True)
class OpenArchive:
    """A download's archive, opened for FetchArchive."""

    file: BinaryIO
    size: int
    sha256: str
    filename: str  # as offered to save it


def _check_fetchable(download: Download) -> str:
    """The archive's path, if the download has one to fetch (NotFound, FailedPrecondition otherwise)."""
    if download.state is not DownloadState.SUCCEEDED:
        raise FailedPrecondition(
            f"the download is {download.state.value.lower()}; its archive exists once it has succeeded",
            reason="ARCHIVE_NOT_READY",
        )
    if download.archive_state is ArchiveState.EXPIRED:
        raise NotFound(
            "archive", download.id, "the archive was removed by the retention policy; download the item again"
        )
    if download.archive_state is not ArchiveState.AVAILABLE or not download.archive_path:
        raise NotFound("archive", download.id, "the archive was deleted")
    return download.archive_path


def open_for_fetch(download: Download, storage: Storage) -> OpenArchive:
    """Everything that can go wrong is found before the first byte (HTTP clients see no trailers):
    the file is opened here, so retention removing it later cannot fail the stream (a local file;
    an object's stream is one GET, which S3 serves whole once begun). Blocking: run it in a thread."""
    path = _check_fetchable(download)
    size = download.archive_size or 0
    try:
        file = storage.open_archive(path, size)
    except ArchiveGone as exc:
        raise NotFound("archive", download.id, str(exc)) from None
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from None
    return OpenArchive(file, size, download.archive_sha256 or "", filename_of(download))


def direct_url(download: Download, storage: Storage, seconds: int) -> str:
    """A presigned URL of the archive in the object store ('' without one), after FetchArchive's
    checks: the object must be there as recorded. Blocking: run it in a thread."""
    path = _check_fetchable(download)
    if storage.objects is None:
        return ""
    try:
        if not storage.archive_intact(path, download.archive_size or 0):
            raise NotFound("archive", download.id, "the archive is missing from storage")
        return storage.direct_url(path, filename_of(download), seconds) or ""
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from None


def filename_of(download: Download) -> str:
    return download.archive_filename or f"{download.workshop_id}.zip"


def intact_source(download: Download, storage: Storage) -> Source | None:
    """The download's archive if it is available and in storage as recorded (its size), else None.
    Blocking: run it in a thread."""
    if download.archive_state is not ArchiveState.AVAILABLE or not download.archive_path:
        return None
    path, size = download.archive_path, download.archive_size or 0
    try:
        if not storage.archive_intact(path, size):
            return None
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from None
    return Source(path, lambda: storage.open_archive(path, size))
