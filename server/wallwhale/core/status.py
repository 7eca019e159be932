"""What GetStatus reports: the database, DepotDownloader, storage, the queue. No gRPC here.

`checks` turns a report into what a download needs, each with its fix: `wallwhale doctor` and the
run banner print them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from wallwhale.core import reports
from wallwhale.core.steam_accounts import ADD_ACCOUNT_HINT
from wallwhale.db import engine as db_engine
from wallwhale.db.models import DownloadState
from wallwhale.steam import depotdownloader
from wallwhale.steam.depotdownloader import HOW_TO_GET_IT, DownloaderInfo
from wallwhale.steam.webapi import WebApiHealth
from wallwhale.storage.objects import ObjectStore

# `-V` starts the .NET runtime (about a second); its answer changes only when the binary does.
_DOWNLOADER_CACHE_SECONDS = 60.0


@dataclass(frozen=True)
class DatabaseReport:
    ok: bool
    backend: str
    latency_seconds: float = 0.0
    schema_revision: str = ""
    error: str = ""


@dataclass(frozen=True)
class StorageReport:
    writable: bool
    free_bytes: int = 0
    total_bytes: int = 0
    error: str = ""


@dataclass(frozen=True)
class QueueReport:
    queued: int = 0
    running: int = 0
    waiting_for_steam_guard: int = 0


@dataclass(frozen=True)
class StatusReport:
    database: DatabaseReport
    downloader: DownloaderInfo
    storage: StorageReport
    queue: QueueReport
    active_steam_accounts: int
    archive_bytes: int = 0


@dataclass
class StatusProbe:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    downloader_path: Path
    storage_dir: Path
    objects: ObjectStore | None = None
    _downloader: tuple[float, DownloaderInfo] | None = field(default=None, init=False)

    async def report(self) -> StatusReport:
        database = await self.database()
        downloader, storage = await asyncio.gather(self.downloader(), asyncio.to_thread(self.storage))
        queue, accounts, archives = (await self._counts()) if database.ok else (QueueReport(), 0, 0)
        return StatusReport(database, downloader, storage, queue, accounts, archives)

    async def database(self) -> DatabaseReport:
        backend = db_engine.backend_name(self.engine)
        try:
            latency = await db_engine.ping(self.engine)
            async with self.engine.connect() as connection:
                revision = (
                    await connection.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar()
        except Exception as exc:
            return DatabaseReport(False, backend, error=_first_line(exc))
        return DatabaseReport(True, backend, latency, revision or "")

    async def downloader(self) -> DownloaderInfo:
        now = time.monotonic()
        if self._downloader is None or now - self._downloader[0] > _DOWNLOADER_CACHE_SECONDS:
            self._downloader = (now, await depotdownloader.probe(self.downloader_path))
        return self._downloader[1]

    def storage(self) -> StorageReport:
        try:
            self.storage_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.storage_dir, prefix=".write-check-"):
                pass
            usage = shutil.disk_usage(self.storage_dir)
        except OSError as exc:
            return StorageReport(False, error=f"{exc.strerror or exc} ({self.storage_dir.name})")
        if self.objects is not None and (problem := self.objects.check()):
            return StorageReport(False, usage.free, usage.total, error=problem)
        return StorageReport(os.access(self.storage_dir, os.W_OK), usage.free, usage.total)

    async def _counts(self) -> tuple[QueueReport, int, int]:
        async with self.sessions() as session:
            by_state = await reports.downloads_by_state(session)
            accounts = await reports.active_steam_accounts(session)
            archives = await reports.archive_bytes(session)
        queue = QueueReport(
            queued=by_state.get(DownloadState.QUEUED, 0),
            running=by_state.get(DownloadState.RUNNING, 0) + by_state.get(DownloadState.ARCHIVING, 0),
            waiting_for_steam_guard=by_state.get(DownloadState.WAITING_FOR_STEAM_GUARD, 0),
        )
        return queue, accounts, archives


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    # A failed required check means no download can run; the others degrade (e.g. no item details).
    required: bool = True


def checks(
    report: StatusReport, web_api: WebApiHealth | None, head_revision: str | None, downloader_path: Path
) -> list[Check]:
    """What a download needs, in the order it needs it; `web_api` None: lookups are turned off."""
    database = report.database
    if not database.ok:
        never_migrated = "alembic_version" in database.error
        fix = "run `wallwhale migrate`" if never_migrated else "check WALLWHALE_DATABASE_URL"
        db = Check("database", False, f"{database.backend}: {database.error}", fix)
    elif head_revision and database.schema_revision != head_revision:
        db = Check(
            "database",
            False,
            f"{database.backend} at revision {database.schema_revision or 'none'}, needs {head_revision}",
            "run `wallwhale migrate` (or start `wallwhale serve`, which migrates)",
        )
    else:
        db = Check("database", True, f"{database.backend}, revision {database.schema_revision}")
    downloader = report.downloader
    dd = (
        Check("depotdownloader", True, f"{downloader.version} ({downloader_path})")
        if downloader.available
        # The probe's error names the ways out already (GetStatus shows it too).
        else Check("depotdownloader", False, downloader.error, _unless_said(HOW_TO_GET_IT, downloader.error))
    )
    accounts = report.active_steam_accounts
    if not database.ok:
        steam = Check("steam_accounts", False, "unknown: the database does not answer")
    elif accounts:
        steam = Check("steam_accounts", True, f"{accounts} active")
    else:
        steam = Check("steam_accounts", False, "no active Steam account", f"add one: {ADD_ACCOUNT_HINT}")
    storage = report.storage
    store = (
        Check("storage", True, f"writable, {storage.free_bytes / 2**30:.1f} GiB free")
        if storage.writable
        else Check(
            "storage",
            False,
            f"not usable: {storage.error}",
            "check WALLWHALE_STORAGE_URL, its endpoint and credentials"
            if "object store" in storage.error
            else "check WALLWHALE_STORAGE_DIR",
        )
    )
    if web_api is None:
        api = Check(
            "steam_web_api", True, "turned off (WALLWHALE_STEAM_WEB_API_URL is empty)", required=False
        )
    elif web_api.reachable:
        api = Check("steam_web_api", True, "reachable", required=False)
    else:
        api = Check(
            "steam_web_api",
            False,
            f"not reachable: {web_api.error or 'no answer'}",
            "check the network or WALLWHALE_STEAM_WEB_API_URL; downloads still run, without item details",
            required=False,
        )
    return [db, dd, steam, store, api]


def _unless_said(fix: str, detail: str) -> str:
    return "" if fix in detail else fix


def can_download(found: list[Check]) -> bool:
    return all(check.ok for check in found if check.required)


def _first_line(exc: BaseException) -> str:
    # Driver errors can span many lines (SQL, parameters); the first says what went wrong.
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
