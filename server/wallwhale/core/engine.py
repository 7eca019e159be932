"""The download engine of one server instance: claims jobs, runs DepotDownloader, packs the zips.

    Engine            dispatcher (claims while it has room), lease keeper, hand-back on stop
      JobRun          one claimed job: runner hooks -> journal, outcome -> state, account health
        Journal       the job's progress and log lines, written in small batches, then fanned out

Every write to a running job's row is conditional on this instance still holding the lease: an
instance that lost it (paused too long, cut off) stops its process and writes nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale import metrics
from wallwhale.core import events, queue, retention, steam_accounts, steam_guard
from wallwhale.core.catalog import Catalog, check_downloadable
from wallwhale.core.downloads import cache_columns, cached_archive, item_columns, transition
from wallwhale.core.events import EventHub, EventKind, NewEvent, StoredEvent
from wallwhale.core.qr_login import QrLogin
from wallwhale.core.secretbox import Keyring, KeyringError
from wallwhale.db.models import Download, DownloadState, SteamAccount, SteamAccountStatus
from wallwhale.db.notify import Channel, announce
from wallwhale.db.types import to_signed64
from wallwhale.errors import FailedPrecondition, NotFound, Unavailable
from wallwhale.log import get_logger
from wallwhale.steam.output import AccountEffect, Failure, Line, Phase, Progress, Prompt, PromptKind, Reason
from wallwhale.steam.runner import RunHooks, Runner, RunRequest, RunResult, StopReason
from wallwhale.storage.archives import Storage, StorageError, archive_filename

_log = get_logger("wallwhale.engine")
S = DownloadState


@dataclass(frozen=True)
class EngineSettings:
    instance_id: str
    executable: Path
    storage: Storage
    # One private HOME per Steam account (DepotDownloader keeps its remembered login there).
    homes: Path
    max_concurrent: int = 4
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


class LeaseLost(Exception):
    """Another instance holds the job now."""


class GuardCodes:
    """Steam Guard codes waiting to be written to a DepotDownloader of this instance, by account."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Queue[str]] = {}

    def open(self, account_id: str) -> None:
        """Accept codes for this account from now on: before the job is shown as waiting, so a code
        sent the moment it is visible (or between a rejected code and the next prompt) is kept."""
        self._waiting.setdefault(account_id, asyncio.Queue(1))

    def close(self, account_id: str) -> None:
        self._waiting.pop(account_id, None)

    async def wait(self, account_id: str, limit: float) -> str | None:
        box = self._waiting.setdefault(account_id, asyncio.Queue(1))
        try:
            return await asyncio.wait_for(box.get(), limit)
        except TimeoutError:
            return None

    def submit(self, account_id: str, code: str) -> bool:
        box = self._waiting.get(account_id)
        if box is None or box.full():
            return False
        box.put_nowait(code)
        return True


class Engine:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        hub: EventHub,
        keyring: Keyring,
        settings: EngineSettings,
        clock: Callable[[], datetime],
        catalog: Catalog | None = None,
    ):
        self.sessions = sessions
        self.hub = hub
        self.keyring = keyring
        self.settings = settings
        self.clock = clock
        self.catalog = catalog or Catalog(None)
        self.guard = GuardCodes()
        self.jobs: dict[str, JobRun] = {}
        self.qr_logins: dict[str, QrLogin] = {}  # by account id
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.settings.storage.prepare()
        self._loops = [
            asyncio.create_task(self._dispatch(), name="engine-dispatch"),
            asyncio.create_task(self._keep_leases(), name="engine-leases"),
        ]
        policy = self.settings.retention_policy
        if policy.max_age is not None or policy.budget_bytes is not None:
            self._loops.append(asyncio.create_task(self._retain(), name="engine-retention"))

    def wake(self) -> None:
        """A job may be claimable (created, retried, or a slot freed)."""
        self._wake.set()

    async def stop(self) -> None:
        """Claims nothing more; running jobs are stopped and handed back to the queue."""
        # The loops see the flag at their next wait; cancelling them in the middle of a database call
        # could leave a connection busy (and a lock held) while the engine is being disposed.
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        if self._loops:  # first, so that no claim completes after the jobs were told to stop
            _, stuck = await asyncio.wait(self._loops, timeout=10)
            for loop in stuck:
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
        for job in list(self.jobs.values()):
            job.stop(StopReason.SHUTDOWN)
        for login in list(self.qr_logins.values()):
            login.stop(StopReason.SHUTDOWN)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.stop_grace + 5)

    async def submit_guard_code(self, account_id: str, code: str) -> None:
        """Hands a Steam Guard code to the prompt waiting for it, here or on another instance."""
        if self.guard.submit(account_id, code):
            return
        async with self.sessions.begin() as session:
            await announce(session, Channel.GUARD, steam_guard.seal(self.keyring, account_id, code))

    def guard_code_announced(self, payload: str) -> None:
        try:
            account_id, code = steam_guard.unseal(self.keyring, payload)
        except (ValueError, KeyringError) as exc:
            _log.warning("unreadable Steam Guard notification", error=_first_line(exc))
            return
        self.guard.submit(account_id, code)

    def accounts_in_use(self) -> frozenset[str]:
        """Accounts a DepotDownloader of this instance runs as (a job's or a QR login's)."""
        return frozenset({job.claim.account_id for job in self.jobs.values()} | set(self.qr_logins))

    async def start_qr_login(self, account_id: str) -> QrLogin:
        """Takes the account's session (or refuses: NOT_FOUND, STEAM_ACCOUNT_BUSY) and starts its QR
        login; the caller reads `login.events` and calls `login.stop()` if it goes away."""
        if self._stopping:
            raise Unavailable("the server is stopping", reason="SHUTTING_DOWN")
        login = QrLogin(self, account_id)
        await login.begin(in_use_here=account_id in self.accounts_in_use())
        self.qr_logins[account_id] = login

        async def run() -> None:
            try:
                await login.run()
            finally:
                if self.qr_logins.get(account_id) is login:
                    del self.qr_logins[account_id]
                self.wake()  # the account is free for jobs again

        task = asyncio.create_task(run(), name=f"qr-login-{account_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._stopping:
            login.stop(StopReason.SHUTDOWN)
        return login

    def cancel_requested(self, download_id: str) -> None:
        """Another instance recorded a cancel: stop the job if it runs here."""
        if job := self.jobs.get(download_id):
            job.stop(StopReason.CANCELLED)

    async def cancel_local(self, download_id: str, wait_seconds: float) -> bool:
        """Stops a job running here and waits (up to `wait_seconds`) until it is CANCELLED."""
        job = self.jobs.get(download_id)
        if job is None:
            return False
        job.stop(StopReason.CANCELLED)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(job.done.wait()), wait_seconds)
        return True

    # --- loops ----------------------------------------------------------------------------------

    async def _pause(self, seconds: float) -> None:
        """Sleeps, but returns at once when the engine stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)

    async def _dispatch(self) -> None:
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                await self._requeue_expired()
                while not self._stopping and len(self.jobs) < self.settings.max_concurrent:
                    claim = await self._claim()
                    if claim is None:
                        break
                    self._start(claim)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away; try again at the next tick
                _log.warning("dispatch failed", error=_first_line(exc))

    async def _claim(self) -> queue.Claim | None:
        async with self.sessions() as session, session.begin():
            result = await queue.claim_next(
                session, self.settings.instance_id, self.clock(), self.settings.lease, self.accounts_in_use()
            )
        self.hub.publish(result.events)
        if result.claim is not None:
            self.hub.publish(result.claim.events)
        return result.claim

    async def _requeue_expired(self) -> None:
        async with self.sessions() as session, session.begin():
            stored = await queue.requeue_expired(session, self.clock(), self.settings.instance_id)
        self.hub.publish(stored)

    def _start(self, claim: queue.Claim) -> None:
        job = JobRun(self, claim)
        if (older := self.jobs.get(claim.download_id)) is not None:
            older.stop(StopReason.LEASE_LOST)  # the job was taken back and claimed again: the old run yields
        self.jobs[claim.download_id] = job
        if self._stopping:
            job.stop(StopReason.SHUTDOWN)  # claimed while stopping: straight back to the queue

        async def run() -> None:
            try:
                await job.execute()
            finally:
                if self.jobs.get(claim.download_id) is job:
                    del self.jobs[claim.download_id]
                job.done.set()
                self.wake()

        task = asyncio.create_task(run(), name=f"job-{claim.download_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def apply_retention(self) -> int:
        """One retention sweep; returns how many archives it removed."""
        async with self.sessions() as session, session.begin():
            swept = await retention.sweep(session, self.settings.retention_policy, self.clock())
        for path in swept.paths:
            with contextlib.suppress(OSError):
                self.settings.storage.delete(path)
        for app_id, workshop_id in swept.items:
            self.settings.storage.remove_item_dir(app_id, workshop_id)
        self.hub.publish(swept.events)
        return len(swept.paths)

    async def _retain(self) -> None:
        while not self._stopped.is_set():
            try:
                removed = await self.apply_retention()
                if removed:
                    _log.info("retention removed archives", count=removed)
            except Exception as exc:
                _log.warning("retention failed", error=_first_line(exc))
            await self._pause(self.settings.retention_interval)

    async def _keep_leases(self) -> None:
        interval = max(0.2, self.settings.lease.total_seconds() / 3)
        while not self._stopped.is_set():
            await self._pause(interval)
            if not self.jobs and not self.qr_logins:
                continue
            try:
                async with self.sessions() as session, session.begin():
                    renewal = await queue.renew(
                        session,
                        self.settings.instance_id,
                        {download_id: job.claim.attempt for download_id, job in self.jobs.items()},
                        {job.claim.account_id for job in self.jobs.values()} | set(self.qr_logins),
                        self.clock(),
                        self.settings.lease,
                    )
            except Exception as exc:
                _log.warning("lease renewal failed", error=_first_line(exc))
                continue
            for download_id in renewal.lost:
                if job := self.jobs.get(download_id):
                    _log.warning("lease lost", download_id=download_id)
                    job.stop(StopReason.LEASE_LOST)
            for download_id in renewal.cancel:
                if job := self.jobs.get(download_id):
                    job.stop(StopReason.CANCELLED)


@dataclass
class Journal:
    """Progress and log events of a running job, written every `interval` in one transaction; the
    newest progress only, and at most every `progress_interval` (a state change takes it at once)."""

    job: JobRun
    pending_logs: list[NewEvent] = field(default_factory=list)
    pending_progress: dict[str, Any] | None = None
    progress_written: float = -math.inf  # time.monotonic() of the last progress taken
    logged: int = 0
    truncated: bool = False

    def log(self, stream: str, line: str) -> None:
        if self.logged >= self.job.engine.settings.max_log_lines:
            if not self.truncated:
                self.truncated = True
                self.pending_logs.append(_server_line("further output of this attempt is not recorded"))
            return
        self.logged += 1
        self.pending_logs.append(NewEvent(EventKind.LOG, {"stream": stream, "line": line[:2000]}))

    def progress(self, payload: dict[str, Any]) -> None:
        self.pending_progress = payload  # only the newest matters

    def progress_due(self) -> bool:
        interval = self.job.engine.settings.progress_interval
        return self.pending_progress is not None and time.monotonic() - self.progress_written >= interval

    def take(self, with_progress: bool = True) -> tuple[list[NewEvent], dict[str, Any] | None]:
        new, self.pending_logs = self.pending_logs, []
        progress = self.pending_progress if with_progress else None
        if progress is not None:
            new.append(NewEvent(EventKind.PROGRESS, progress))
            self.pending_progress, self.progress_written = None, time.monotonic()
        return new, progress


class JobRun(RunHooks):
    def __init__(self, engine: Engine, claim: queue.Claim):
        self.engine = engine
        self.claim = claim
        self.id = claim.download_id
        self.journal = Journal(self)
        self.done = asyncio.Event()
        self.runner: Runner | None = None
        self._stop_reason: StopReason | None = None
        self._write_lock = asyncio.Lock()
        self._run_over = asyncio.Event()
        self._waiting = False
        self._phase = Phase.STARTING
        self._percent = 0.0
        self._current_file = ""
        self._total_bytes = 0
        self._rate = _Rate()

    def stop(self, reason: StopReason) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        if self.runner is not None:
            self.runner.stop(reason)

    # --- the run ---------------------------------------------------------------------------------

    async def execute(self) -> None:
        settings = self.engine.settings
        flusher = asyncio.create_task(self._flush_periodically())
        try:
            if await self._settled_without_a_run():
                return
            self.runner = Runner(self._request(), self)
            if self._stop_reason is not None:
                self.runner.stop(self._stop_reason)
            result = await self.runner.run()
            await self._stop_flusher(flusher)
            await self._record(result)
        except LeaseLost:
            _log.warning("job abandoned: lease lost", download_id=self.id)
        except Exception:
            # A server-side fault (often the database): the details go to the log, the job goes back
            # to the queue with its files, or, if even that write fails, its lease runs out.
            _log.exception("job failed unexpectedly", download_id=self.id)
            with contextlib.suppress(Exception):
                await self._retry_later("a server error interrupted the attempt; it is retried")
        finally:
            await self._stop_flusher(flusher)
            self.engine.guard.close(self.claim.account_id)
            with contextlib.suppress(Exception):
                if self._waiting:  # ended (timeout, cancel, stop) while waiting for a person
                    await self._set_account_status(SteamAccountStatus.ACTIVE, "")
                async with self.engine.sessions() as session, session.begin():
                    await queue.release_account(session, self.claim.account_id, settings.instance_id)

    async def _settled_without_a_run(self) -> bool:
        """Asks Steam's Web API about an item queued while it was away, and serves an archive of
        the same content from the cache. True when the job is final without running DepotDownloader."""
        async with self.engine.sessions() as session:
            download = await session.get(Download, self.id)
            if download is None:
                return False
            handle, skip_cache = download.content_handle, download.skip_cache
        if handle is None and self.engine.catalog.enabled:
            lookup = await self.engine.catalog.look_up([self.claim.workshop_id], force=True)
            try:
                item = check_downloadable(lookup, self.claim.workshop_id)
            except (NotFound, FailedPrecondition) as exc:
                await self._fail(Failure(Reason.ITEM_NOT_FOUND, exc.message))
                return True
            if item is not None:
                columns = item_columns(item)
                if item.app_id and item.app_id != self.claim.app_id:
                    # Queued while Steam was away, under the default app: run it under its own.
                    columns["app_id"] = item.app_id
                    self.claim = dataclasses.replace(self.claim, app_id=item.app_id)
                await self._write(S.RUNNING, note="item details from Steam's Web API", **columns)
                handle = columns["content_handle"]
        if handle is None or skip_cache:
            return False
        async with self._write_lock, self.engine.sessions() as session, session.begin():
            download = await self._locked(session)
            cached = await cached_archive(session, self.claim.workshop_id, handle)
            if cached is None:
                return False
            now = self.engine.clock()
            stored = await self._append_pending(session, download, now)
            stored += await transition(
                session,
                download,
                S.SUCCEEDED,
                now,
                note=f"served from the cache: the archive of download {cached.id} has this content",
                **cache_columns(cached),
                **_released(),
            )
        self.engine.hub.publish(stored)
        metrics.CACHE_HITS.inc()
        return True

    @property
    def _directory(self) -> Path:
        return self.engine.settings.storage.item_dir(self.claim.app_id, self.claim.workshop_id)

    async def _record(self, result: RunResult) -> None:
        """Records the run's outcome, waiting out a database that is away (restarted, failed over):
        the job stays in `jobs`, so its lease is renewed once the database is back, and the run's
        result is kept instead of being abandoned and run again. Each step may be repeated."""
        delay = 0.2
        while True:
            try:
                await self._finish(result)
                return
            except LeaseLost:
                raise
            except Exception as exc:
                if self.engine._stopping:
                    raise
                _log.warning(
                    "recording the outcome failed; trying again", download_id=self.id, error=_first_line(exc)
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _request(self) -> RunRequest:
        settings = self.engine.settings
        runtime = self.claim.max_runtime_seconds or settings.default_max_runtime
        return RunRequest(
            executable=settings.executable,
            app_id=self.claim.app_id,
            workshop_id=self.claim.workshop_id,
            username=self.claim.account_username,
            login_id=self.claim.login_id,
            directory=self._directory,
            home=settings.homes / self.claim.account_id,
            time_limit=float(runtime),
            inactivity_limit=settings.inactivity_limit,
            guard_limit=settings.guard_limit,
            stop_grace=settings.stop_grace,
            chunk_error_limit=settings.chunk_error_limit,
        )

    async def _finish(self, result: RunResult) -> None:
        storage = self.engine.settings.storage
        if result.stopped is StopReason.LEASE_LOST:
            raise LeaseLost
        if result.stopped is StopReason.CANCELLED:
            await self._write(
                S.CANCELLED, note="cancelled; DepotDownloader was stopped", cancel_requested=False
            )
            return
        if result.stopped is StopReason.SHUTDOWN:
            # Not the job's fault: the attempt does not count, and the files stay for the next run.
            await self._write(
                S.QUEUED,
                note="the server is stopping; queued again",
                attempt=self.claim.attempt - 1,
                next_attempt_time=None,
            )
            return
        failure = result.failure
        # Depot downloads name each file they complete; pack those only (a web-file item names none).
        files = result.transcript.completed_files or None
        if failure is None and not storage.content_files(self._directory, files):
            failure = Failure(Reason.NO_FILES, "DepotDownloader reported success but wrote no files")
        if failure is not None:
            await self._fail(failure)
            return
        await self._account_succeeded()
        await self._archive(files, result.transcript.manifest_id)

    async def _archive(self, files: set[str] | None, manifest_id: int | None) -> None:
        settings = self.engine.settings
        storage = settings.storage
        await self._write(S.ARCHIVING, phase=Phase.ARCHIVING.value)
        try:
            info = await asyncio.to_thread(storage.build_archive, self.id, self._directory, files)
        except StorageError as exc:
            await self._fail(Failure(Reason.STORAGE_ERROR, str(exc)))
            return
        now = self.engine.clock()
        max_age = settings.retention_policy.max_age
        async with self._write_lock, self.engine.sessions() as session, session.begin():
            download = await self._locked(session)
            if download.cancel_requested:
                stored = await transition(
                    session, download, S.CANCELLED, now, note="cancelled", **_released()
                )
                storage.delete(info.relative_path)
            else:
                stored = await transition(
                    session,
                    download,
                    S.SUCCEEDED,
                    now,
                    note=f"archive ready: {info.size} bytes",
                    phase=Phase.DONE.value,
                    percent=100.0,
                    archive_state="AVAILABLE",
                    archive_path=info.relative_path,
                    archive_size=info.size,
                    archive_sha256=info.sha256,
                    archive_file_count=info.file_count,
                    archive_content_bytes=info.content_bytes,
                    archive_create_time=now,
                    archive_expire_time=now + max_age if max_age else None,
                    archive_filename=archive_filename(download.workshop_id, download.title),
                    # What was downloaded may be newer than what the Web API said at creation.
                    content_handle=to_signed64(manifest_id) if manifest_id else download.content_handle,
                    bytes_downloaded=max(download.bytes_downloaded, info.content_bytes),
                    cancel_requested=False,
                    **_released(),
                )
        self.engine.hub.publish(stored)

    async def _fail(self, failure: Failure) -> None:
        now = self.engine.clock()
        others = await self._account_failed(failure)
        attempts_left = self.claim.attempt < self.claim.max_attempts
        if failure.account_effect is AccountEffect.TOKEN_REJECTED and attempts_left:
            # The token is gone (docs/depotdownloader-reference.md §5.2); one more run logs in with the
            # password.
            await self._write(S.QUEUED, note=failure.message, next_attempt_time=None)
            return
        if (
            failure.account_effect in (AccountEffect.BAD_PASSWORD, AccountEffect.NOT_OWNED)
            and others
            and attempts_left
        ):
            await self._write(
                S.QUEUED, note=f"{failure.message}; trying another account", next_attempt_time=None
            )
            return
        if failure.transient and attempts_left:
            delay = self._backoff() * random.uniform(0.9, 1.1)  # noqa: S311 - jitter, not a secret
            await self._write(
                S.QUEUED,
                note=f"{failure.message}; retrying in {delay:.0f}s",
                next_attempt_time=now + timedelta(seconds=delay),
                failure_reason=failure.reason.value,
                failure_message=failure.message,
                failure_retryable=True,
            )
            return
        message = failure.message
        if failure.transient:
            message = f"{message} (after {self.claim.attempt} attempts)"
        await self._write(
            S.FAILED,
            note=message,
            failure_reason=failure.reason.value,
            failure_message=message,
            failure_retryable=failure.retryable,
            cancel_requested=False,
        )

    def _backoff(self) -> float:
        """Seconds before the next attempt: doubling per attempt made, up to the cap."""
        settings = self.engine.settings
        return min(settings.retry_max, settings.retry_base * 2.0 ** (self.claim.attempt - 1))

    async def _retry_later(self, note: str) -> None:
        if self.claim.attempt >= self.claim.max_attempts:
            await self._write(
                S.FAILED,
                note=note,
                failure_reason=Reason.INTERNAL.value,
                failure_message="the server failed during the last attempt; see its log",
                failure_retryable=True,
                cancel_requested=False,
            )
            return
        await self._write(
            S.QUEUED, note=note, next_attempt_time=self.engine.clock() + timedelta(seconds=self._backoff())
        )

    async def _account_failed(self, failure: Failure) -> bool:
        """Records what the failure says about the account; True when another account could take over."""
        now = self.engine.clock()
        async with self.engine.sessions() as session, session.begin():
            account = await session.get(SteamAccount, self.claim.account_id, with_for_update=True)
            if account is None:
                return False
            account.downloads_failed += 1
            effect = failure.account_effect
            if effect is AccountEffect.BAD_PASSWORD:
                account.status, account.status_reason = SteamAccountStatus.DISABLED, failure.message[:256]
            elif effect is AccountEffect.THROTTLED:
                account.status, account.status_reason = SteamAccountStatus.COOLING_DOWN, failure.message[:256]
                account.cooldown_end_time = now + self.engine.settings.throttle_cooldown
            elif effect is AccountEffect.NOT_OWNED:
                account.not_owned_app_ids = sorted({*(account.not_owned_app_ids or []), self.claim.app_id})
                account.owned_app_ids = [
                    app for app in account.owned_app_ids or [] if app != self.claim.app_id
                ]
            elif effect is AccountEffect.TOKEN_REJECTED:
                account.has_remembered_login = False
            if effect not in (AccountEffect.BAD_PASSWORD, AccountEffect.NOT_OWNED):
                return False
            download = await session.get(Download, self.id)
            if download is not None and download.requested_steam_account_id:
                return False
            others = await session.scalars(
                select(SteamAccount).where(
                    SteamAccount.id != account.id,
                    SteamAccount.disabled.is_(False),
                    SteamAccount.status != SteamAccountStatus.DISABLED,
                )
            )
            return any(self.claim.app_id not in (other.not_owned_app_ids or []) for other in others)

    async def _account_succeeded(self) -> None:
        async with self.engine.sessions() as session, session.begin():
            account = await session.get(SteamAccount, self.claim.account_id, with_for_update=True)
            if account is not None:
                account.has_remembered_login = True
                if self.claim.app_id not in (account.owned_app_ids or []):
                    account.owned_app_ids = sorted({*(account.owned_app_ids or []), self.claim.app_id})

    # --- writes ----------------------------------------------------------------------------------

    async def _locked(self, session: AsyncSession) -> Download:
        download = await session.scalar(select(Download).where(Download.id == self.id).with_for_update())
        if download is None or not self._holds(download.lease_owner, download.attempt):
            raise LeaseLost
        return download

    def _holds(self, lease_owner: str | None, attempt: int) -> bool:
        # The attempt makes the lease a per-claim token: a job taken back and claimed again (even
        # by this instance) is not the old run's any more.
        return lease_owner == self.engine.settings.instance_id and attempt == self.claim.attempt

    async def _write(self, state: DownloadState, *, note: str = "", **changes: Any) -> None:
        """Flushes the journal and moves the job to `state`; a final or queued state ends the lease."""
        if state is not S.RUNNING and state not in (S.WAITING_FOR_STEAM_GUARD, S.ARCHIVING):
            changes = {**_released(), **changes}
        async with self._write_lock:
            now = self.engine.clock()
            async with self.engine.sessions() as session, session.begin():
                download = await self._locked(session)
                stored = await self._append_pending(session, download, now)
                if state is S.QUEUED and download.cancel_requested:
                    # A cancel arrived while this attempt was ending: honour it instead of requeueing
                    # (a queued job with a pending cancel would never be claimed again).
                    state, note = S.CANCELLED, "cancelled"
                    changes = {**_released(), "cancel_requested": False, "next_attempt_time": None}
                stored += await transition(session, download, state, now, note=note, **changes)
            self.engine.hub.publish(stored)

    async def _append_pending(
        self, session: AsyncSession, download: Download, now: datetime
    ) -> list[StoredEvent]:
        new, progress = self.journal.take()
        if progress is not None:
            download.phase = progress["phase"]
            download.percent = progress["percent"]
            download.bytes_downloaded = progress["bytes_downloaded"]
            download.bytes_total = progress["bytes_total"]
            download.current_file = progress["current_file"][:1024]
            download.update_time = now
        return await events.append(session, download, new, now)

    async def flush(self) -> None:
        if not self.journal.pending_logs and not self.journal.progress_due():
            return
        async with self._write_lock:
            now = self.engine.clock()
            new, progress = self.journal.take(with_progress=self.journal.progress_due())
            if not new:
                return
            values = _progress_columns(progress, now) if progress is not None else None
            # One conditional UPDATE (lease still ours? next sequence, progress columns) and the inserts.
            async with self.engine.sessions() as session, session.begin():
                stored = await events.append_to(
                    session,
                    self.id,
                    new,
                    now,
                    where=(
                        Download.lease_owner == self.engine.settings.instance_id,
                        Download.attempt == self.claim.attempt,
                    ),
                    values=values,
                )
            if stored is None:
                raise LeaseLost
            self.engine.hub.publish(stored)

    async def _flush_periodically(self) -> None:
        while not self._run_over.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._run_over.wait(), self.engine.settings.event_flush_interval)
            try:
                await self.flush()
            except LeaseLost:
                self.stop(StopReason.LEASE_LOST)
                return
            except Exception as exc:  # the next flush tries again; the lease keeper notices real trouble
                _log.warning("progress write failed", download_id=self.id, error=_first_line(exc))

    async def _stop_flusher(self, flusher: asyncio.Task[None]) -> None:
        # Told to stop, never cancelled: a cancel in the middle of a write can leave SQLite's write
        # lock with a connection that is being torn down.
        self._run_over.set()
        await flusher

    # --- runner hooks ----------------------------------------------------------------------------

    async def line(self, line: Line) -> None:
        self.journal.log(line.stream.value, line.text)

    async def changes(self, changes: list[Phase | Progress]) -> None:
        for change in changes:
            if isinstance(change, Phase):
                self._phase = change
            else:
                self._percent, self._current_file = change.percent, change.path
        if not self._total_bytes and any(isinstance(change, Progress) for change in changes):
            self._total_bytes = await asyncio.to_thread(_preallocated_bytes, self._directory)
        done = int(self._total_bytes * self._percent / 100)
        rate = self._rate.update(done)
        self.journal.progress(
            {
                "phase": self._phase.value,
                "percent": self._percent,
                "bytes_downloaded": done,
                "bytes_total": self._total_bytes,
                "current_file": self._current_file,
                "bytes_per_second": rate,
                "eta_seconds": round((self._total_bytes - done) / rate, 1) if rate else None,
            }
        )

    async def answer(self, prompt: Prompt, previous_rejected: bool) -> str | None:
        if prompt.kind is PromptKind.PASSWORD:
            async with self.engine.sessions() as session:
                account = await session.get(SteamAccount, self.claim.account_id)
                return steam_accounts.password_of(account, self.engine.keyring) if account else None
        guard_limit = self.engine.settings.guard_limit
        now = self.engine.clock()
        self._waiting = True
        self.engine.guard.open(self.claim.account_id)
        await self._write(
            S.WAITING_FOR_STEAM_GUARD,
            note=f"Steam Guard: {prompt.kind.value.lower().replace('_', ' ')} needed",
            guard_kind=prompt.kind.value,
            guard_email_hint=prompt.hint[:64] or None,
            guard_previous_rejected=previous_rejected,
            guard_expire_time=now + timedelta(seconds=guard_limit),
        )
        await self._set_account_status(
            SteamAccountStatus.WAITING_FOR_STEAM_GUARD, "waiting for a Steam Guard answer"
        )
        if prompt.kind is PromptKind.MOBILE_CONFIRMATION:
            return None
        return await self.engine.guard.wait(self.claim.account_id, guard_limit)

    async def resumed(self) -> None:
        if not self._waiting:
            return
        self._waiting = False
        self.engine.guard.close(self.claim.account_id)
        await self._write(
            S.RUNNING,
            note="Steam Guard accepted",
            guard_kind=None,
            guard_email_hint=None,
            guard_previous_rejected=False,
            guard_expire_time=None,
        )
        await self._set_account_status(SteamAccountStatus.ACTIVE, "")

    async def _set_account_status(self, status: SteamAccountStatus, reason: str) -> None:
        async with self.engine.sessions() as session, session.begin():
            account = await session.get(SteamAccount, self.claim.account_id, with_for_update=True)
            if account is not None and account.status is not SteamAccountStatus.DISABLED:
                account.status, account.status_reason = status, reason


def _progress_columns(progress: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "phase": progress["phase"],
        "percent": progress["percent"],
        "bytes_downloaded": progress["bytes_downloaded"],
        "bytes_total": progress["bytes_total"],
        "current_file": progress["current_file"][:1024],
        "update_time": now,
    }


def _released() -> dict[str, Any]:
    return {"lease_owner": None, "lease_expire_time": None}


def _server_line(text: str) -> NewEvent:
    return NewEvent(EventKind.LOG, {"stream": "server", "line": text})


def _preallocated_bytes(directory: Path) -> int:
    # DepotDownloader creates every file at full size before filling it
    # (docs/depotdownloader-reference.md §2.2 row 33), so once progress starts the folder's size is
    # the item's size.
    total = 0
    for path in directory.rglob("*"):
        if ".DepotDownloader" not in path.parts and path.is_file():
            total += path.stat().st_size
    return total


class _Rate:
    """Bytes per second, smoothed over the progress reports."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None
        self.value = 0.0

    def update(self, done: int) -> int:
        now = time.monotonic()
        if self._last is not None and now > self._last[0] and done >= self._last[1]:
            instant = (done - self._last[1]) / (now - self._last[0])
            self.value = instant if not self.value else 0.7 * self.value + 0.3 * instant
        self._last = (now, done)
        return int(self.value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
