"""The watch checker of one instance: claims due watches, asks Steam about all of them at once, and
records what changed (core.watch_checks, core.watches).

One round: claim up to `claim_size` due watches (one transaction), ask Steam's Web API (a few
requests for all of them, outside any transaction), then write the quiet ones in one statement and
each watch that changed in its own transaction (a refused download of one watch does not undo
another's), renewing the lease on the rest when that takes long. Every write is conditional on the
lease: a watch another instance claimed after this one's lease ran out is left to it. When Steam
fails, every claimed watch is backed off and the checker itself waits `retry_base_seconds` before it
claims again. A full round is followed at once by the next; otherwise the checker sleeps
`poll_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale import metrics
from wallwhale.core import watch_checks, watches
from wallwhale.core.downloads import JobLimits
from wallwhale.core.identity import Principal
from wallwhale.core.watches import Rules
from wallwhale.log import get_logger
from wallwhale.steam.webapi import SteamWebApi, WebApiUnavailable

_log = get_logger("wallwhale.watches")


@dataclass(frozen=True)
class CheckerSettings:
    poll_seconds: float
    claim_size: int
    lease_seconds: float
    rules: Rules


@dataclass(frozen=True)
class Round:
    """What one round did (for logs, tests and the bench)."""

    claimed: int = 0
    changed: int = 0
    failed: bool = False


class WatchChecker:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        api: SteamWebApi | None,
        settings: CheckerSettings,
        owner: str,
        clock: Callable[[], datetime],
        limits_for: Callable[[AsyncSession, Principal], Awaitable[JobLimits]],
        rng: random.Random | None = None,
    ):
        self._sessions = sessions
        self._api = api
        self._settings = settings
        self._owner = owner
        self._clock = clock
        self._limits_for = limits_for
        self._rng = rng or random.Random()  # noqa: S311  (spreading checks over time, no secret)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.checked = 0  # watches this instance checked (Steam answered), for tests and logs

    def start(self) -> None:
        if self._api is not None:  # without the Web API there is nothing to check against
            self._task = asyncio.create_task(self._loop(), name="watch-checker")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            wait = self._settings.poll_seconds
            try:
                done = await self.check_round()
                if done.failed:
                    wait = self._settings.rules.retry_base_seconds
                elif done.claimed >= self._settings.claim_size:
                    wait = 0.0
            except Exception:  # a database hiccup: try again after the usual wait
                _log.exception("watch check failed")
            if wait:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait)

    async def check_round(self) -> Round:
        """Claims due watches and checks them; returns what it did."""
        assert self._api is not None
        settings = self._settings
        now = claimed_at = self._clock()
        async with self._sessions.begin() as session:
            claimed = await watch_checks.claim_due(
                session, self._owner, now, timedelta(seconds=settings.lease_seconds), settings.claim_size
            )
        if not claimed:
            return Round()
        try:
            answers = await watch_checks.ask(self._api, claimed)
        except WebApiUnavailable as exc:
            _log.warning(
                "watches not checked: Steam's Web API is unavailable", watches=len(claimed), error=str(exc)
            )
            async with self._sessions.begin() as session:
                await watch_checks.finish_failed(
                    session,
                    self._owner,
                    claimed,
                    str(exc),
                    self._clock(),
                    settings.rules.retry_base_seconds,
                    self._rng,
                )
            metrics.WATCH_CHECKS.labels("failed").inc(len(claimed))
            return Round(len(claimed), 0, failed=True)
        now = self._clock()
        plans = {watch.id: watch_checks.plan(watch, answers) for watch in claimed}
        quiet = [watch for watch in claimed if plans[watch.id].quiet(watch)]
        async with self._sessions.begin() as session:
            await watch_checks.finish_quiet(session, self._owner, quiet, now, self._rng)
        changed = [watch for watch in claimed if not plans[watch.id].quiet(watch)]
        lease = timedelta(seconds=settings.lease_seconds)
        renewed = claimed_at
        for index, watch in enumerate(changed):
            if self._stopping.is_set():
                async with self._sessions.begin() as session:  # the rest are due again at once
                    await watch_checks.release(session, self._owner, [other.id for other in changed[index:]])
                break
            if self._clock() - renewed > lease / 2:  # many changes: keep the rest ours until written
                renewed = self._clock()
                async with self._sessions.begin() as session:
                    rest = [other.id for other in changed[index:]]
                    await watch_checks.renew(session, self._owner, rest, renewed + lease)
            async with self._sessions.begin() as session:
                await watches.apply(
                    session,
                    self._owner,
                    watch.id,
                    plans[watch.id],
                    self._limits_for,
                    settings.rules,
                    now,
                    self._rng,
                )
        metrics.WATCH_CHECKS.labels("ok").inc(len(claimed))
        self.checked += len(claimed)
        if changed:
            _log.info("watches changed", checked=len(claimed), changed=len(changed))
        return Round(len(claimed), len(changed))
