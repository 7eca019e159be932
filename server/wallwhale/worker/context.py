"""What the jobs and QR logins of the worker share, handed to them instead of the dispatcher."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.config import ConfigError, Settings
from wallwhale.core import retention
from wallwhale.core.catalog import Catalog
from wallwhale.core.retention import Policy
from wallwhale.core.retries import Backoff
from wallwhale.core.secretbox import Keyring
from wallwhale.log import get_logger
from wallwhale.steam.sandbox import UNCONFINED, Sandbox, SandboxMode, bwrap_executable
from wallwhale.storage.archives import Storage
from wallwhale.worker.steam_guard import GuardCodes

_log = get_logger("wallwhale.server")


@dataclass(frozen=True)
class WorkerSettings:
    instance_id: str
    executable: Path
    storage: Storage
    # One private HOME per Steam account (DepotDownloader keeps its remembered login there).
    homes: Path
    # How DepotDownloader runs are confined (steam.sandbox); unconfined unless app.py says otherwise.
    sandbox: Sandbox = UNCONFINED
    max_concurrent: int = 4
    # Running downloads per user (over all their keys and sessions) unless an admin set theirs.
    user_max_concurrent: int | None = None
    lease: timedelta = timedelta(seconds=30)
    poll_interval: float = 1.0
    default_max_runtime: float = 3600.0
    inactivity_limit: float = 300.0
    guard_limit: float = 600.0
    qr_limit: float = 300.0
    stop_grace: float = 10.0
    retry_base: float = 15.0
    retry_max: float = 900.0
    throttle_cooldown: timedelta = timedelta(hours=6)
    chunk_error_limit: int = 50
    event_flush_interval: float = 0.1
    # A progress event at most this often per job: people and progress bars need a few a second,
    # and every one is written once and sent to every watcher. States and log lines are not held.
    progress_interval: float = 0.25
    max_log_lines: int = 2000
    retention_policy: retention.Policy = field(default_factory=lambda: retention.Policy(None, None))
    retention_interval: float = 300.0
    # An archive upload that failed (object store away) is tried again after this, doubling up to max.
    upload_retry_base: float = 1.0
    upload_retry_max: float = 30.0

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.retry_base, self.retry_max)


@dataclass
class WorkerContext:
    sessions: async_sessionmaker[AsyncSession]
    keyring: Keyring
    settings: WorkerSettings
    clock: Callable[[], datetime]
    catalog: Catalog
    # Steam Guard codes on their way to a waiting DepotDownloader of this instance.
    guard: GuardCodes = field(default_factory=GuardCodes)
    # Set by the dispatcher when the server stops: nothing waits for the database any more.
    stopping: bool = False


def worker_settings(settings: Settings, instance_id: str, storage: Storage) -> WorkerSettings:
    """The worker's part of the server's settings."""
    budget = settings.archive_disk_budget_mb * 1024 * 1024
    return WorkerSettings(
        instance_id=instance_id,
        executable=settings.resolved_depotdownloader_path,
        storage=storage,
        homes=(settings.data_dir / "steam-homes").resolve(),
        sandbox=downloader_sandbox(settings, storage),
        max_concurrent=settings.max_concurrent_downloads,
        user_max_concurrent=settings.user_max_concurrent_downloads,
        lease=timedelta(seconds=settings.job_lease_seconds),
        poll_interval=settings.queue_poll_interval_seconds,
        default_max_runtime=settings.download_timeout_seconds,
        inactivity_limit=settings.inactivity_timeout_seconds,
        guard_limit=settings.steam_guard_timeout_seconds,
        qr_limit=settings.qr_login_timeout_seconds,
        stop_grace=settings.process_stop_grace_seconds,
        retry_base=settings.retry_base_seconds,
        retry_max=settings.retry_max_seconds,
        throttle_cooldown=timedelta(seconds=settings.steam_throttle_cooldown_seconds),
        chunk_error_limit=settings.chunk_error_limit,
        retention_policy=Policy(
            max_age=timedelta(hours=settings.archive_max_age_hours)
            if settings.archive_max_age_hours
            else None,
            budget_bytes=budget or None,
            audit_max_age=timedelta(days=settings.audit_retention_days)
            if settings.audit_retention_days
            else None,
        ),
        retention_interval=settings.retention_interval_seconds,
    )


def downloader_sandbox(settings: Settings, storage: Storage) -> Sandbox:
    """DepotDownloader's confinement: its folder and home writable, the server's places hidden."""
    mode = settings.depotdownloader_sandbox
    usable = bwrap_executable() is not None
    if mode == "bwrap" and not usable:
        raise ConfigError(
            "WALLWHALE_DEPOTDOWNLOADER_SANDBOX=bwrap, but bubblewrap cannot make a sandbox here"
            " (install bubblewrap and allow unprivileged user namespaces)"
        )
    if mode == "none" or not usable:
        _log.warning(
            "DepotDownloader runs UNCONFINED: a hostile file name can write anywhere this server can"
            " (install bubblewrap; see WALLWHALE_DEPOTDOWNLOADER_SANDBOX)"
        )
        return Sandbox(SandboxMode.NONE)
    hidden = [settings.data_dir.resolve(), storage.root]
    database = make_url(settings.resolved_database_url)
    if database.get_backend_name() == "sqlite" and database.database:
        file = Path(database.database).resolve()
        hidden += [file, file.with_name(file.name + "-wal"), file.with_name(file.name + "-shm")]
    return Sandbox(SandboxMode.BWRAP, tuple(hidden), tuple(settings.depotdownloader_writable))
