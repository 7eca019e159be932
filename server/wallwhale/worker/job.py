"""One claimed job: the cache shortcut, the DepotDownloader run, its outcome and the account's health.

Every write to the job's row is conditional on this instance still holding the lease for the claimed
attempt: a run that lost it (paused too long, cut off) stops its process and writes nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale import metrics, tracing
from wallwhale.core import queue, retries, steam_accounts
from wallwhale.core.after_commit import after_commit
from wallwhale.core.archives import CACHE_NOTE, cache_columns, cached_archive
from wallwhale.core.catalog import check_downloadable
from wallwhale.core.downloads import item_columns, transition
from wallwhale.db.models import ArchiveState, Download, DownloadState, GuardKind, SteamAccountStatus
from wallwhale.db.types import to_signed64
from wallwhale.errors import FailedPrecondition, NotFound
from wallwhale.log import get_logger
from wallwhale.steam.output import Failure, Line, Phase, Progress, Prompt, PromptKind, Reason
from wallwhale.steam.runner import RunHooks, Runner, RunRequest, RunResult, StopReason
from wallwhale.storage.archives import ArchiveInfo, StorageError, archive_filename
from wallwhale.storage.objects import ChecksumMismatch, StoreUnavailable
from wallwhale.worker.context import WorkerContext
from wallwhale.worker.journal import Journal, LeaseLost, first_line

_log = get_logger("wallwhale.worker")


class JobRun(RunHooks):
    def __init__(self, context: WorkerContext, claim: queue.Claim):
        self.context = context
        self.claim = claim
        self.id = claim.download_id
        self.done = asyncio.Event()
        self.runner: Runner | None = None
        self._stop_reason: StopReason | None = None
        self._write_lock = asyncio.Lock()
        self.journal = Journal(context, claim.download_id, claim.attempt, self._write_lock)
        self._run_over = asyncio.Event()
        self._waiting = False
        # The trace of the call that queued the job (nothing while tracing is off).
        self.trace = tracing.JobTrace(
            claim.trace_parent,
            {"download.id": claim.download_id, "workshop.id": claim.workshop_id, "attempt": claim.attempt},
        )
        self._run_span: tracing.Span = tracing.NO_SPAN

    def stop(self, reason: StopReason) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        if self.runner is not None:
            self.runner.stop(reason)

    # --- the run ---------------------------------------------------------------------------------

    async def execute(self) -> None:
        if self.claim.queued_since is not None:
            self.trace.queue_wait(self.claim.queued_since)
        with self.trace.job():
            await self._execute()

    async def _execute(self) -> None:
        settings = self.context.settings
        flusher = asyncio.create_task(
            self.journal.flush_until(self._run_over, lambda: self.stop(StopReason.LEASE_LOST))
        )
        try:
            if await self._settled_without_a_run():
                return
            self.runner = Runner(self._request(), self)
            if self._stop_reason is not None:
                self.runner.stop(self._stop_reason)
            started = time.monotonic()
            with self.trace.step("DepotDownloader run") as self._run_span:
                result = await self.runner.run()
                outcome = "stopped" if result.stopped else "failed" if result.failure else "succeeded"
                self._run_span.set_attribute("outcome", outcome)
            metrics.RUN_DURATION.labels(outcome).observe(time.monotonic() - started)
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
            self.context.guard.close(self.claim.account_id)
            with contextlib.suppress(Exception):
                if self._waiting:  # ended (timeout, cancel, stop) while waiting for a person
                    await self._set_account_status(SteamAccountStatus.ACTIVE, "")
                async with self.context.sessions.begin() as session:
                    await queue.release_account(session, self.claim.account_id, settings.instance_id)

    async def _settled_without_a_run(self) -> bool:
        """Asks Steam's Web API about an item queued while it was away, and serves an archive of
        the same content from the cache. True when the job is final without running DepotDownloader."""
        async with self.context.sessions() as session:
            download = await session.get(Download, self.id)
            if download is None:
                return False
            handle, skip_cache = download.content_handle, download.skip_cache
        catalog = self.context.catalog
        if handle is None and catalog.enabled:
            lookup = await catalog.look_up([self.claim.workshop_id], force=True)
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
                await self._write(DownloadState.RUNNING, note="item details from Steam's Web API", **columns)
                handle = columns["content_handle"]
        if handle is None or skip_cache:
            return False
        async with self._write_lock, self.context.sessions.begin() as session:
            download = await self._locked(session)
            cached = await cached_archive(session, self.claim.workshop_id, handle)
            if cached is None:
                after_commit(session).count(metrics.ARCHIVE_CACHE_LOOKUPS, "miss")
                return False
            now = self.context.clock()
            await self.journal.write_into(session, download, now)
            await transition(
                session,
                download,
                DownloadState.SUCCEEDED,
                now,
                note=CACHE_NOTE,
                **cache_columns(cached),
                **queue.released(),
            )
            after_commit(session).count(metrics.ARCHIVE_CACHE_LOOKUPS, "hit")
        return True

    @property
    def _directory(self) -> Path:
        return self.context.settings.storage.item_dir(self.claim.app_id, self.claim.workshop_id)

    async def _record(self, result: RunResult) -> None:
        """Records the run's outcome, waiting out a database that is away (restarted, failed over):
        the job stays in the dispatcher's jobs, so its lease is renewed once the database is back, and
        the run's result is kept instead of being abandoned and run again. Each step may be repeated."""
        delay = 0.2
        while True:
            try:
                await self._finish(result)
                return
            except LeaseLost:
                raise
            except Exception as exc:
                if self.context.stopping:
                    raise
                _log.warning(
                    "recording the outcome failed; trying again", download_id=self.id, error=first_line(exc)
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _request(self) -> RunRequest:
        settings = self.context.settings
        runtime = self.claim.max_runtime_seconds or settings.default_max_runtime
        return RunRequest(
            executable=settings.executable,
            app_id=self.claim.app_id,
            workshop_id=self.claim.workshop_id,
            username=self.claim.account_username,
            login_id=self.claim.login_id,
            directory=self._directory,
            sandbox=settings.sandbox,
            home=settings.homes / self.claim.account_id,
            time_limit=float(runtime),
            inactivity_limit=settings.inactivity_limit,
            guard_limit=settings.guard_limit,
            stop_grace=settings.stop_grace,
            chunk_error_limit=settings.chunk_error_limit,
        )

    async def _finish(self, result: RunResult) -> None:
        storage = self.context.settings.storage
        if result.stopped is StopReason.LEASE_LOST:
            raise LeaseLost
        if result.stopped is StopReason.CANCELLED:
            await self._write(
                DownloadState.CANCELLED, note="cancelled; DepotDownloader was stopped", cancel_requested=False
            )
            return
        if result.stopped is StopReason.SHUTDOWN:
            # Not the job's fault: the attempt does not count, and the files stay for the next run.
            await self._write(
                DownloadState.QUEUED,
                note="the server is stopping; queued again",
                attempt=self.claim.attempt - 1,
                next_attempt_time=None,
            )
            return
        failure = result.failure
        # Depot downloads name each file they complete; pack those only (a web-file item names none).
        files = result.transcript.completed_files or None
        if failure is None and files is not None:
            try:  # a name that left the folder fails the job, whatever else it wrote
                storage.verify_reported(self._directory, files)
            except StorageError as exc:
                failure = Failure(Reason.STORAGE_ERROR, str(exc))
        if failure is None and not storage.content_files(self._directory, files):
            failure = Failure(Reason.NO_FILES, "DepotDownloader reported success but wrote no files")
        if failure is not None:
            await self._fail(failure)
            return
        async with self.context.sessions.begin() as session:
            await steam_accounts.record_success(session, self.claim.account_id, self.claim.app_id)
        await self._archive(files, result.transcript.manifest_id)

    async def _archive(self, files: set[str] | None, manifest_id: int | None) -> None:
        settings = self.context.settings
        storage = settings.storage
        await self._write(DownloadState.ARCHIVING, phase=Phase.ARCHIVING)
        try:
            with metrics.ARCHIVE_BUILD_DURATION.time(), self.trace.step("archive build") as span:
                info = await asyncio.to_thread(storage.build_archive, self.id, self._directory, files)
                span.set_attributes({"archive.size": info.size, "archive.file_count": info.file_count})
        except StorageError as exc:
            await self._fail(Failure(Reason.STORAGE_ERROR, str(exc)))
            return
        if not await self._publish(info):
            return
        now = self.context.clock()
        max_age = settings.retention_policy.max_age
        async with self._write_lock, self.context.sessions.begin() as session:
            download = await self._locked(session)
            if download.cancel_requested:
                await transition(
                    session, download, DownloadState.CANCELLED, now, note="cancelled", **queue.released()
                )
                after_commit(session).delete_archive(info.relative_path)
                return
            await transition(
                session,
                download,
                DownloadState.SUCCEEDED,
                now,
                note=f"archive ready: {info.size} bytes",
                phase=Phase.DONE,
                percent=100.0,
                archive_state=ArchiveState.AVAILABLE,
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
                **queue.released(),
            )
            after_commit(session).count(metrics.DOWNLOADED_BYTES, amount=download.bytes_downloaded)

    async def _publish(self, info: ArchiveInfo) -> bool:
        """Uploads the archive where every instance reads it (an object store), trying again while the
        store is away: the download is done, only its upload waits. False when the job ended meanwhile."""
        storage = self.context.settings.storage
        delay = self.context.settings.upload_retry_base
        told = False
        while True:
            try:
                with metrics.ARCHIVE_UPLOAD_DURATION.time():
                    await asyncio.to_thread(storage.publish, info)
                return True
            except ChecksumMismatch as exc:
                # The zip changed on disk after it was built (or the store kept other bytes): a new
                # attempt builds it again.
                _log.warning("archive upload refused", download_id=self.id, error=str(exc))
                storage.delete(info.relative_path)
                await self._retry_later(f"the archive did not upload intact ({exc}); it is built again")
                return False
            except StoreUnavailable as exc:
                _log.warning("archive upload failed; trying again", download_id=self.id, error=str(exc))
                if not told:  # once: the job's history says why it waits
                    told = True
                    self.journal.log("server", f"the upload to the object store failed, retrying: {exc}")
                    with contextlib.suppress(Exception):  # only the history: the upload goes on
                        await self.journal.flush()
            if self._stop_reason is not None or self.context.stopping:
                storage.delete(info.relative_path)
                if self._stop_reason is StopReason.LEASE_LOST:
                    raise LeaseLost
                if self._stop_reason is StopReason.CANCELLED:
                    await self._write(DownloadState.CANCELLED, note="cancelled", cancel_requested=False)
                else:
                    await self._write(
                        DownloadState.QUEUED,
                        note="the server is stopping; queued again",
                        attempt=self.claim.attempt - 1,
                        next_attempt_time=None,
                    )
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.context.settings.upload_retry_max)

    async def _fail(self, failure: Failure) -> None:
        now = self.context.clock()
        claim, settings = self.claim, self.context.settings
        async with self.context.sessions.begin() as session:
            await steam_accounts.record_failure(
                session, claim.account_id, failure, claim.app_id, now, settings.throttle_cooldown
            )
            others = retries.another_account_may_help(failure) and await steam_accounts.another_could_run(
                session, claim.account_id, claim.app_id, self.id
            )
        decision = retries.after_failure(
            failure,
            claim.attempt,
            claim.max_attempts,
            settings.backoff,
            now,
            another_account_could_run=others,
            jitter=random.uniform(0.9, 1.1),  # noqa: S311 - jitter, not a secret
        )
        await self._apply(decision)

    async def _retry_later(self, note: str) -> None:
        settings = self.context.settings
        await self._apply(
            retries.after_server_error(
                note, self.claim.attempt, self.claim.max_attempts, settings.backoff, self.context.clock()
            )
        )

    async def _apply(self, decision: retries.Decision) -> None:
        if isinstance(decision, retries.AnotherAccount):
            await self._write(DownloadState.QUEUED, note=decision.note, next_attempt_time=None)
        elif isinstance(decision, retries.Requeue):
            failure: dict[str, Any] = {}
            if decision.failure is not None:  # kept while the job waits, so callers see why
                failure = {
                    "failure_reason": decision.failure.reason,
                    "failure_message": decision.failure.message,
                    "failure_retryable": True,
                }
            await self._write(
                DownloadState.QUEUED, note=decision.note, next_attempt_time=decision.at, **failure
            )
        else:
            await self._write(
                DownloadState.FAILED,
                note=decision.note,
                failure_reason=decision.reason,
                failure_message=decision.message,
                failure_retryable=decision.retryable,
                cancel_requested=False,
            )

    async def _set_account_status(self, status: SteamAccountStatus, reason: str) -> None:
        async with self.context.sessions.begin() as session:
            await steam_accounts.set_status(session, self.claim.account_id, status, reason)

    # --- writes ----------------------------------------------------------------------------------

    async def _locked(self, session: AsyncSession) -> Download:
        download = await queue.held_job(
            session, self.id, self.context.settings.instance_id, self.claim.attempt
        )
        if download is None:
            raise LeaseLost
        return download

    async def _write(self, state: DownloadState, *, note: str = "", **changes: Any) -> None:
        """Writes the journal and moves the job to `state`; a final or queued state ends the lease."""
        if state not in (
            DownloadState.RUNNING,
            DownloadState.WAITING_FOR_STEAM_GUARD,
            DownloadState.ARCHIVING,
        ):
            changes = {**queue.released(), **changes}
        async with self._write_lock:
            now = self.context.clock()
            async with self.context.sessions.begin() as session:
                download = await self._locked(session)
                await self.journal.write_into(session, download, now)
                if state is DownloadState.QUEUED and download.cancel_requested:
                    # A cancel arrived while this attempt was ending: honour it instead of requeueing
                    # (a queued job with a pending cancel would never be claimed again).
                    state, note = DownloadState.CANCELLED, "cancelled"
                    changes = {**queue.released(), "cancel_requested": False, "next_attempt_time": None}
                await transition(session, download, state, now, note=note, **changes)

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
                self._run_span.add_event("phase", {"phase": change.value})
        await self.journal.changes(changes, self._directory)

    async def answer(self, prompt: Prompt, previous_rejected: bool) -> str | None:
        if prompt.kind is PromptKind.PASSWORD:
            async with self.context.sessions() as session:
                return await steam_accounts.password_for(session, self.claim.account_id, self.context.keyring)
        guard_limit = self.context.settings.guard_limit
        now = self.context.clock()
        self._waiting = True
        self.context.guard.open(self.claim.account_id)
        await self._write(
            DownloadState.WAITING_FOR_STEAM_GUARD,
            note=f"Steam Guard: {prompt.kind.value.lower().replace('_', ' ')} needed",
            guard_kind=GuardKind(prompt.kind.value),
            guard_email_hint=prompt.hint[:64] or None,
            guard_previous_rejected=previous_rejected,
            guard_expire_time=now + timedelta(seconds=guard_limit),
        )
        await self._set_account_status(
            SteamAccountStatus.WAITING_FOR_STEAM_GUARD, "waiting for a Steam Guard answer"
        )
        if prompt.kind is PromptKind.MOBILE_CONFIRMATION:
            return None
        return await self.context.guard.wait(self.claim.account_id, guard_limit)

    async def resumed(self) -> None:
        if not self._waiting:
            return
        self._waiting = False
        self.context.guard.close(self.claim.account_id)
        await self._write(
            DownloadState.RUNNING,
            note="Steam Guard accepted",
            guard_kind=None,
            guard_email_hint=None,
            guard_previous_rejected=False,
            guard_expire_time=None,
        )
        await self._set_account_status(SteamAccountStatus.ACTIVE, "")
