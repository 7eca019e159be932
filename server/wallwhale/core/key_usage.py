"""How much each API key is used (`ApiKey.total_requests`, `last_used_time`), counted in memory.

A database write per call would cost more than most calls themselves: calls only bump a counter
here, and every few seconds (and at a graceful stop) one UPDATE per key used since the last flush
adds its count. A flush the database refuses keeps its counts for the next one; a crash loses at
most one interval's counts, which only feed "last used" and a statistic.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.db.models import ApiKey
from wallwhale.log import get_logger

_log = get_logger("wallwhale.key_usage")


@dataclass
class _Usage:
    requests: int
    last_used: datetime


class KeyUsage:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], flush_interval: float = 5.0):
        self._sessions = sessions
        self._flush_interval = flush_interval
        self._pending: dict[str, _Usage] = {}
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def count(self, api_key_id: str, when: datetime) -> None:
        """One call by the key; never blocks the call."""
        usage = self._pending.get(api_key_id)
        if usage is None:
            self._pending[api_key_id] = _Usage(1, when)
        else:
            usage.requests += 1
            usage.last_used = max(usage.last_used, when)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="key-usage")

    async def close(self) -> None:
        if self._task is not None:
            self._closing.set()  # a flag, not cancel(): a cancelled UPDATE could leave its connection in use
            await self._task
            self._task = None
        if not await self.flush():
            _log.warning("API key usage not stored", keys=len(self._pending))

    async def flush(self) -> bool:
        """Stores what was counted; False (keeping the counts) when the database refused."""
        batch, self._pending = self._pending, {}
        if not batch:
            return True
        try:
            async with self._sessions.begin() as session:
                for key_id, usage in sorted(batch.items()):  # one order everywhere: no deadlocks
                    await session.execute(
                        update(ApiKey)
                        .where(ApiKey.id == key_id)
                        .values(
                            total_requests=ApiKey.total_requests + usage.requests,
                            last_used_time=usage.last_used,
                        )
                    )
        except Exception as exc:
            _log.warning(
                "API key usage not stored yet", keys=len(batch), error=str(exc).splitlines()[0][:200]
            )
            for key_id, usage in batch.items():
                self._merge(key_id, usage)
            return False
        return True

    def _merge(self, api_key_id: str, usage: _Usage) -> None:
        current = self._pending.get(api_key_id)
        if current is None:
            self._pending[api_key_id] = usage
        else:
            current.requests += usage.requests
            current.last_used = max(current.last_used, usage.last_used)

    async def _run(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self._flush_interval)
            if not self._closing.is_set():
                await self.flush()
