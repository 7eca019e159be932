"""What the jobs and QR logins of the worker share, handed to them instead of the dispatcher."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core import retention
from wallwhale.core.catalog import Catalog
from wallwhale.core.retries import Backoff
from wallwhale.core.secretbox import Keyring
from wallwhale.steam.sandbox import UNCONFINED, Sandbox
from wallwhale.storage.archives import Storage
from wallwhale.worker.steam_guard import GuardCodes


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
