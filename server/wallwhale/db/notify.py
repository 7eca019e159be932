"""PostgreSQL LISTEN/NOTIFY between instances: new events of a download, a job to claim, a cancel,
a changed key or user.

Writers call `announce()` inside their transaction; PostgreSQL delivers the notification on commit
(and never for a rolled-back one), so a listener that hears it can read the rows at once. Each
instance keeps one listening connection. SQLite has a single instance and no notifications: there
`announce()` does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from enum import StrEnum

from sqlalchemy import func, make_url, select
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.log import get_logger

_log = get_logger("wallwhale.notify")


class Channel(StrEnum):
    EVENTS = "wallwhale_events"  # payload: a download id with new events
    QUEUE = "wallwhale_queue"  # a job became claimable
    CANCEL = "wallwhale_cancel"  # payload: a download id whose cancel was requested
    GUARD = "wallwhale_guard"  # payload: a sealed Steam Guard code (worker.steam_guard)
    CREDENTIALS = "wallwhale_credentials"  # an API key or a user changed (core.identity)


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (postgresql+psycopg://…) as psycopg's own connection string."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def announce(session: AsyncSession, channel: Channel, payload: str = "") -> None:
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_notify(channel.value, payload)))


class Listener:
    """Listens on every channel and hands each notification to its handler; reconnects on loss.

    It is stopped by a flag it checks between short waits, never by cancelling it in the middle of
    a psycopg call (a cancelled notifies() can leave the connection busy, and closing it then hangs).
    """

    _WAIT = 0.5  # seconds per notifies() round: how long stop() may take

    def __init__(
        self, url: str, handlers: dict[Channel, Callable[[str], None]], on_reconnect: Callable[[], None]
    ):
        self._url = url
        self._handlers = handlers
        self._on_reconnect = on_reconnect
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notify-listener")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._WAIT * 4 + 5)
            except TimeoutError:  # connect() hanging on an unreachable server
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def _run(self) -> None:
        import psycopg  # here, not at the top: SQLite installations never load it (about 9 MB)

        delay = 0.5
        while not self._stopping.is_set():
            try:
                connection = await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=5
                )
            except Exception as exc:
                await self._pause(delay, exc)
                delay = min(delay * 2, 10.0)
                continue
            try:
                for channel in self._handlers:
                    await connection.execute(f"LISTEN {channel.value}")
                self.connected.set()
                # Anything sent while we were away is lost: let everyone catch up from the tables.
                self._on_reconnect()
                delay = 0.5
                while not self._stopping.is_set():
                    async for notification in connection.notifies(timeout=self._WAIT):
                        handler = self._handlers.get(Channel(notification.channel))
                        if handler is not None:
                            handler(notification.payload)
            except Exception as exc:
                await self._pause(delay, exc)
                delay = min(delay * 2, 10.0)
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await connection.close()

    async def _pause(self, delay: float, exc: Exception) -> None:
        _log.warning("notification listener lost its connection", error=str(exc).splitlines()[0][:200])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
