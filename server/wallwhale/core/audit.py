"""The audit trail: records of who did (or was refused) what, written in batches off the call path.

Calls only append to a list; a background task inserts the batch every `flush_interval` seconds.
close() inserts whatever is left, so a graceful stop loses nothing. If the database is away, the
batch is kept and tried again; if it refuses the rows themselves, they are stored one by one and a
row it still refuses is written to the log (it would be refused forever and block the trail). At
close, records that still cannot be stored are written to the log: no event is silently dropped.

Repeated identical denials (the same action, code, caller, resource, address and details: a flood of
refused calls) are aggregated: the first is stored as it comes; those that follow within
`denial_window` seconds of it are counted, and one row for them is stored when the window ends, with
`repeated` (how many), `first_event_id` and `window_start` in its details and the last one's time and
request id. A flood costs two rows per window, not one per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core.text import escaped
from wallwhale.db.models import AuditEvent
from wallwhale.db.types import utcnow
from wallwhale.ids import new_id
from wallwhale.log import get_logger

_log = get_logger("wallwhale.audit")

# The records held at most while the database is away; past it the oldest go to the log.
_MAX_PENDING = 50_000
# Open aggregation windows at most (one per distinct denial); past it the oldest closes early.
_MAX_WINDOWS = 10_000


@dataclass(frozen=True)
class AuditRecord:
    action: str
    outcome: str  # "success", "denied" or "failure"
    status_code: str
    actor_kind: str = "anonymous"  # "anonymous", "user", "api_key", "system"
    actor_id: str | None = None
    actor_display: str = ""
    resource: str | None = None
    client_address: str = ""
    user_agent: str = ""
    request_id: str = ""
    trace_id: str = ""  # the call's OpenTelemetry trace, when tracing is on
    details: dict[str, Any] = field(default_factory=dict)
    event_time: datetime = field(default_factory=utcnow)
    # Given when recorded, so that a batch tried again cannot store a row twice.
    id: str = field(default_factory=new_id)


@dataclass
class _Repeats:
    """The denials that repeated one stored first occurrence, within its window."""

    first: AuditRecord
    ends: float  # time.monotonic()
    count: int = 0
    last: AuditRecord | None = None

    def summary(self, window: float) -> AuditRecord:
        assert self.last is not None
        details = {
            **self.last.details,
            "repeated": self.count,
            "first_event_id": self.first.id,
            "window_start": self.first.event_time.isoformat(),
            "window_seconds": window,
        }
        return replace(self.last, id=new_id(), details=details)


def _denial_key(record: AuditRecord) -> str:
    """What makes two denials the same (not their time, request id or user agent)."""
    return json.dumps(
        [record.action, record.status_code, record.actor_kind, record.actor_id, record.resource,
         record.client_address, record.details],
        sort_keys=True,
        default=str,
    )  # fmt: skip


class AuditWriter:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        flush_interval: float = 0.5,
        max_batch: int = 500,
        denial_window: float = 0.0,
    ):
        self._sessions = sessions
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        # Seconds over which identical denials make one row (0: every denial its own row).
        self._denial_window = denial_window
        self._repeats: dict[str, _Repeats] = {}
        self._pending: list[AuditRecord] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        """Records waiting to be stored."""
        return len(self._pending)

    def record(self, record: AuditRecord) -> None:
        """Queues a record; never blocks the call that makes it."""
        record = _storable(record)
        if self._denial_window > 0 and record.outcome == "denied" and self._repeated(record):
            return
        self._queue(record)

    def _repeated(self, record: AuditRecord) -> bool:
        """True when `record` repeats a denial whose window is open (it is counted there); else it
        opens a window of its own and is stored as it is."""
        key, now = _denial_key(record), time.monotonic()
        repeats = self._repeats.get(key)
        if repeats is not None and now < repeats.ends:
            repeats.count += 1
            repeats.last = record
            return True
        if repeats is not None:
            self._close_window(key)
        elif len(self._repeats) >= _MAX_WINDOWS:
            self._close_window(next(iter(self._repeats)))
        self._repeats[key] = _Repeats(record, now + self._denial_window)
        return False

    def _close_window(self, key: str) -> None:
        repeats = self._repeats.pop(key)
        if repeats.count:
            self._queue(repeats.summary(self._denial_window))

    def _close_ended_windows(self, every: bool = False) -> None:
        now = time.monotonic()
        for key in [k for k, repeats in self._repeats.items() if every or repeats.ends <= now]:
            self._close_window(key)

    def _queue(self, record: AuditRecord) -> None:
        self._pending.append(record)
        if len(self._pending) > _MAX_PENDING:
            _log.error(
                "audit backlog full; event logged instead of stored", **_loggable(self._pending.pop(0))
            )
        if len(self._pending) >= self._max_batch:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def close(self) -> None:
        if self._task is not None:
            # A flag, not cancel(): a cancelled insert could leave its connection in use.
            self._closing = True
            self._wake.set()
            await self._task
            self._task = None
        self._close_ended_windows(every=True)
        while self._pending:
            if not await self.flush():
                for record in self._pending:
                    _log.error("audit event not stored", **_loggable(record))
                self._pending.clear()

    async def flush(self) -> bool:
        """Stores one batch of pending records; False when the database refused it."""
        batch = self._pending[: self._max_batch]
        if not batch:
            return True
        rows = [asdict(record) for record in batch]
        try:
            try:
                async with self._sessions.begin() as session:
                    await session.execute(insert(AuditEvent), rows)
            except (DataError, IntegrityError) as exc:
                _log.warning("audit batch refused; storing it row by row", error=_first_line(exc))
                await self._store_one_by_one(rows)
        except Exception as exc:
            _log.warning("audit batch not stored yet", records=len(batch), error=_first_line(exc))
            return False
        del self._pending[: len(batch)]
        return True

    async def _store_one_by_one(self, rows: list[dict[str, Any]]) -> None:
        """Raises (keeping the batch) if the database goes away meanwhile; rows stored already
        are not stored twice when the batch is tried again, as they keep their ids."""
        for row in rows:
            try:
                async with self._sessions.begin() as session:
                    if await session.get(AuditEvent, row["id"]) is None:
                        await session.execute(insert(AuditEvent), [row])
            except (DataError, IntegrityError) as exc:
                _log.error(
                    "audit event refused by the database", error=_first_line(exc), **_loggable(_record(row))
                )

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            self._wake.clear()
            self._close_ended_windows()
            while self._pending and not self._closing and await self.flush():
                pass


def _storable(record: AuditRecord) -> AuditRecord:
    """The record cut to its columns' sizes, control and bidi-override characters escaped (core.text:
    a reader of the trail sees them, they do not reorder or hide what is shown). Texts come from the
    client (an id in the request, a user agent, details); PostgreSQL refuses a row that does not fit,
    and a refused row would hold back its whole batch, and every record after it, until the server
    stops."""
    changes: dict[str, Any] = {}
    for item in fields(record):
        value = getattr(record, item.name)
        length = _LENGTHS.get(item.name)
        if isinstance(value, str) and length is not None:
            clean = escaped(value)[:length]
            if clean != value:
                changes[item.name] = clean
    details = escaped(record.details)
    if details != record.details:
        changes["details"] = details
    return replace(record, **changes) if changes else record


_LENGTHS: dict[str, int] = {
    column.name: length
    for column in AuditEvent.__table__.columns
    if isinstance(length := getattr(column.type, "length", None), int)
}


def _loggable(record: AuditRecord) -> dict[str, Any]:
    values = asdict(record)
    values["event_time"] = record.event_time.isoformat()
    values["audit_action"] = values.pop("action")
    return values


_WORDS = re.compile(r"[A-Z][a-z0-9]*")
# Verb-only method names take their service's name as the noun ("Login" -> "auth.login").
_SERVICE_NOUNS = {"AuthService": "auth", "StatusService": "status"}


def action_name(method: str) -> str:
    """'/wallwhale.v1.AdminService/RevokeApiKey' -> 'api_key.revoke'."""
    service, _, name = method.rpartition("/")
    service = service.rsplit(".", 1)[-1]
    words = [w.lower() for w in _WORDS.findall(name)]
    if not words:
        return "rpc.unknown"
    verb, noun = words[0], "_".join(words[1:])
    return f"{noun or _SERVICE_NOUNS.get(service, service.removesuffix('Service').lower())}.{verb}"


def _record(row: dict[str, Any]) -> AuditRecord:
    return AuditRecord(**{f.name: row[f.name] for f in fields(AuditRecord)})


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
