"""The worker's loops: claims jobs while it has room, keeps the leases, runs retention, and hands the
running jobs back to the queue when the server stops. Also the entry points the API and the other
instances use: QR logins, Steam Guard codes, cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale import metrics
from wallwhale.core import queue, retention
from wallwhale.core.catalog import Catalog
from wallwhale.core.secretbox import Keyring, KeyringError
from wallwhale.db.notify import Channel, announce
from wallwhale.errors import Unavailable
from wallwhale.log import get_logger
from wallwhale.steam.runner import StopReason
from wallwhale.worker import steam_guard
from wallwhale.worker.context import WorkerContext, WorkerSettings
from wallwhale.worker.job import JobRun
from wallwhale.worker.journal import first_line
from wallwhale.worker.qr_login import QrLogin

_log = get_logger("wallwhale.worker")


class Dispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        keyring: Keyring,
        settings: WorkerSettings,
        clock: Callable[[], datetime],
        catalog: Catalog | None = None,
    ):
        self.context = WorkerContext(sessions, keyring, settings, clock, catalog or Catalog(None))
        self.settings = settings
        self.jobs: dict[str, JobRun] = {}
        self.qr_logins: dict[str, QrLogin] = {}  # by account id
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.settings.storage.prepare()
        self._loops = [
            asyncio.create_task(self._dispatch(), name="worker-dispatch"),
            asyncio.create_task(self._keep_leases(), name="worker-leases"),
        ]
        if self.settings.retention_policy.active:
            self._loops.append(asyncio.create_task(self._retain(), name="worker-retention"))

    def wake(self) -> None:
        """A job may be claimable (created, retried, or a slot freed)."""
        self._wake.set()

    async def stop(self) -> None:
        """Claims nothing more; running jobs are stopped and handed back to the queue."""
        # The loops see the flag at their next wait; cancelling them in the middle of a database call
        # could leave a connection busy (and a lock held) while the database engine is being disposed.
        self.context.stopping = True
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
        if self.context.guard.submit(account_id, code):
            return
        async with self.context.sessions.begin() as session:
            await announce(session, Channel.GUARD, steam_guard.seal(self.context.keyring, account_id, code))

    def guard_code_announced(self, payload: str) -> None:
        try:
            account_id, code = steam_guard.unseal(self.context.keyring, payload)
        except (ValueError, KeyringError) as exc:
            _log.warning("unreadable Steam Guard notification", error=first_line(exc))
            return
        self.context.guard.submit(account_id, code)

    def accounts_in_use(self) -> frozenset[str]:
        """Accounts a DepotDownloader of this instance runs as (a job's or a QR login's)."""
        return frozenset({job.claim.account_id for job in self.jobs.values()} | set(self.qr_logins))

    async def start_qr_login(self, account_id: str) -> QrLogin:
        """Takes the account's session (or refuses: NOT_FOUND, STEAM_ACCOUNT_BUSY) and starts its QR
        login; the caller reads `login.events` and calls `login.stop()` if it goes away."""
        if self.context.stopping:
            raise Unavailable("the server is stopping", reason="SHUTTING_DOWN")
        login = QrLogin(self.context, account_id)
        await login.begin(in_use_here=account_id in self.accounts_in_use())
        self.qr_logins[account_id] = login

        async def run() -> None:
            try:
                await login.run()
            finally:
                if self.qr_logins.get(account_id) is login:
                    del self.qr_logins[account_id]
                self.wake()  # the account is free for jobs again

        self._spawn(run(), f"qr-login-{account_id}")
        if self.context.stopping:
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

    async def apply_retention(self) -> int:
        """One retention sweep; returns how many archives it removed."""
        async with self.context.sessions.begin() as session:
            await retention.prune_audit(session, self.settings.retention_policy, self.context.clock())
            return await retention.sweep(session, self.settings.retention_policy, self.context.clock())

    # --- loops ----------------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pause(self, seconds: float) -> None:
        """Sleeps, but returns at once when the worker stops."""
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
                while not self.context.stopping and len(self.jobs) < self.settings.max_concurrent:
                    claim = await self._claim()
                    if claim is None:
                        break
                    self._start(claim)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away; try again at the next tick
                _log.warning("dispatch failed", error=first_line(exc))

    async def _claim(self) -> queue.Claim | None:
        async with self.context.sessions.begin() as session:
            result = await queue.claim_next(
                session,
                self.settings.instance_id,
                self.context.clock(),
                self.settings.lease,
                self.accounts_in_use(),
                self.settings.user_max_concurrent,
            )
        return result.claim

    async def _requeue_expired(self) -> None:
        async with self.context.sessions.begin() as session:
            await queue.requeue_expired(session, self.context.clock(), self.settings.instance_id)

    def _start(self, claim: queue.Claim) -> None:
        job = JobRun(self.context, claim)
        if (older := self.jobs.get(claim.download_id)) is not None:
            older.stop(StopReason.LEASE_LOST)  # the job was taken back and claimed again: the old run yields
        self.jobs[claim.download_id] = job
        if self.context.stopping:
            job.stop(StopReason.SHUTDOWN)  # claimed while stopping: straight back to the queue

        async def run() -> None:
            metrics.JOBS_RUNNING.inc()
            try:
                await job.execute()
            finally:
                metrics.JOBS_RUNNING.dec()
                if self.jobs.get(claim.download_id) is job:
                    del self.jobs[claim.download_id]
                job.done.set()
                self.wake()

        self._spawn(run(), f"job-{claim.download_id}")

    async def _retain(self) -> None:
        while not self._stopped.is_set():
            try:
                removed = await self.apply_retention()
                if removed:
                    _log.info("retention removed archives", count=removed)
            except Exception as exc:
                _log.warning("retention failed", error=first_line(exc))
            await self._pause(self.settings.retention_interval)

    async def _keep_leases(self) -> None:
        interval = max(0.2, self.settings.lease.total_seconds() / 3)
        while not self._stopped.is_set():
            await self._pause(interval)
            if not self.jobs and not self.qr_logins:
                continue
            try:
                async with self.context.sessions.begin() as session:
                    renewal = await queue.renew(
                        session,
                        self.settings.instance_id,
                        {download_id: job.claim.attempt for download_id, job in self.jobs.items()},
                        {job.claim.account_id for job in self.jobs.values()} | set(self.qr_logins),
                        self.context.clock(),
                        self.settings.lease,
                    )
            except Exception as exc:
                _log.warning("lease renewal failed", error=first_line(exc))
                continue
            for download_id in renewal.lost:
                if job := self.jobs.get(download_id):
                    _log.warning("lease lost", download_id=download_id)
                    job.stop(StopReason.LEASE_LOST)
            for download_id in renewal.cancel:
                if job := self.jobs.get(download_id):
                    job.stop(StopReason.CANCELLED)
