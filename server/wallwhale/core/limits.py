"""Rate limits and download quotas, kept in the database so that every server instance shares them.

Rate limits (requests per minute with a burst, per API key, and per person when configured) follow
GCRA, the generic cell rate algorithm: a token bucket stored as one number per caller, the time at
which its budget is full again (the "theoretical arrival time", TAT). A request at time t with
interval T = 1 minute / rate and bucket size B passes when max(TAT, t) + T - t <= B * T, and then
moves TAT to max(TAT, t) + T. That test and the move are one INSERT .. ON CONFLICT DO UPDATE ..
WHERE .. RETURNING statement, so the database decides atomically for all instances, on SQLite and
PostgreSQL alike; only a refusal reads the row once more, to say when to come back.

Quotas count the downloads of an API key per UTC day and per UTC month in `usage_counters`, one
conditional upsert per period inside the caller's transaction (see reserve_downloads).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.db.engine import ConnectionRunner
from wallwhale.db.models import ApiKey, RateLimitState, UsageCounter, UsagePeriod
from wallwhale.errors import QuotaExceeded, QuotaViolation, RateLimited

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MINUTE_US = 60_000_000
# A limit of 0 requests per minute refuses everything; clients are told to look again after this.
_BLOCKED_RETRY_SECONDS = 60.0


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"naive datetime {now.isoformat()} refused: give it a timezone")


def _upsert(dialect: str, table: sa.Table) -> Any:
    # The dialects' INSERTs are the ones with ON CONFLICT; both spell it the same way.
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"unsupported database {dialect!r}")


# Rate limits ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimit:
    """`requests_per_minute` sustained, with up to `burst` requests at once when the budget is full."""

    requests_per_minute: int
    burst: int

    @classmethod
    def of(cls, requests_per_minute: int | None, burst: int | None) -> RateLimit | None:
        """The limit that a key's (or the settings') two values describe; None when not limited.

        Without a burst, a full minute's worth may come at once; a burst of 0 means strictly paced.
        """
        if requests_per_minute is None:
            return None
        return cls(requests_per_minute, max(1, requests_per_minute if burst is None else burst))

    def describe(self) -> str:
        return f"{self.requests_per_minute} requests per minute, bursts of up to {self.burst}"


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    # The most requests that can pass at once (the burst) and how many would pass right now.
    limit: int
    remaining: int
    # Seconds until `remaining` is back to `limit`.
    reset_after: float
    # Seconds until a request passes again; 0 when this one passed.
    retry_after: float

    def headers(self) -> list[tuple[str, str]]:
        """x-ratelimit-* response headers; reset is in whole seconds, rounded up."""
        return [
            ("x-ratelimit-limit", str(self.limit)),
            ("x-ratelimit-remaining", str(self.remaining)),
            ("x-ratelimit-reset", str(math.ceil(self.reset_after))),
        ]


class RateLimiter:
    """Takes one request from a caller's budget in the `rate_limits` table.

    The time is read from `clock` only once the statement is about to run: a request that waited
    for a connection or a lock must not be judged by the time it arrived, or the requests that went
    before it would push the budget beyond its window and refuse it wrongly.
    """

    def __init__(self, connections: ConnectionRunner, dialect: str, clock: Callable[[], datetime]):
        self._connections = connections
        self._dialect = dialect
        self._clock = clock
        self._table: sa.Table = RateLimitState.__table__  # type: ignore[assignment]
        # SQLite has one writer at a time: queue this instance's updates here rather than in
        # SQLite's busy handler, which polls with sleeps of up to 100 ms.
        self._one_writer = asyncio.Lock() if dialect == "sqlite" else None

    async def acquire(self, subject: str, limit: RateLimit) -> RateDecision:
        if limit.requests_per_minute <= 0:
            return RateDecision(False, 0, 0, _BLOCKED_RETRY_SECONDS, _BLOCKED_RETRY_SECONDS)
        # One statement decides and commits by itself (see the module's docstring): no transaction
        # around it is needed, so it goes through the ConnectionRunner (one thread hop on SQLite, one
        # round trip on PostgreSQL).
        async with self._one_writer or contextlib.nullcontext():
            return await self._connections.write(lambda connection: self._acquire(connection, subject, limit))

    def _acquire(self, connection: Connection, subject: str, limit: RateLimit) -> RateDecision:
        now = self._clock()
        _require_aware(now)
        now_us = (now - _EPOCH) // _MICROSECOND
        interval = -(-_MINUTE_US // limit.requests_per_minute)  # rounded up: never more than the rate
        window = limit.burst * interval
        tat = self._table.c.theoretical_arrival_us
        t = sa.literal(now_us, sa.BigInteger)
        start = sa.case((tat > t, tat), else_=t)
        statement = (
            _upsert(self._dialect, self._table)
            .values(subject=subject, theoretical_arrival_us=now_us + interval)
            .on_conflict_do_update(
                index_elements=[self._table.c.subject],
                set_={"theoretical_arrival_us": start + interval},
                where=start + interval <= t + window,
            )
            .returning(tat)
        )
        passed = connection.execute(statement).scalar()
        if passed is not None:
            return RateDecision(
                allowed=True,
                limit=limit.burst,
                remaining=(now_us + window - passed) // interval,
                reset_after=(passed - now_us) / 1e6,
                retry_after=0.0,
            )
        # Refused, and nothing was taken: read when the budget frees up, to tell the caller.
        current = connection.scalar(sa.select(tat).where(self._table.c.subject == subject))
        full_at = max(int(current or now_us), now_us)
        return RateDecision(
            allowed=False,
            limit=limit.burst,
            remaining=0,
            reset_after=(full_at - now_us) / 1e6,
            retry_after=max(0, full_at + interval - window - now_us) / 1e6,
        )


def rate_limited(subject: str, limit: RateLimit, decision: RateDecision) -> RateLimited:
    """The error for a refused request: what the limit is and when to come back."""
    return RateLimited(
        f"rate limit reached ({limit.describe()}); retry in {decision.retry_after:.3f}s",
        retry_after_seconds=decision.retry_after,
        violations=[QuotaViolation(subject, f"rate limit: {limit.describe()}")],
        metadata={"requests_per_minute": str(limit.requests_per_minute), "burst": str(limit.burst)},
    )


# Download quotas -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PeriodUsage:
    period: UsagePeriod
    # The first day of the period (UTC) and the moment the next one begins.
    start: date
    reset_time: datetime
    used: int
    limit: int | None  # None: unlimited

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used)


@dataclass(frozen=True)
class QuotaUsage:
    day: PeriodUsage
    month: PeriodUsage


@dataclass(frozen=True)
class _Period:
    period: UsagePeriod
    start: date
    reset_time: datetime
    limit: int | None


def _periods(key: ApiKey, now: datetime) -> tuple[_Period, _Period]:
    """The UTC day and month that `now` falls in (whatever its own timezone), with the key's quotas."""
    _require_aware(now)
    day = now.astimezone(UTC).date()
    month = day.replace(day=1)
    next_month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return (
        _Period(UsagePeriod.DAY, day, _midnight(day + timedelta(days=1)), key.daily_download_quota),
        _Period(UsagePeriod.MONTH, month, _midnight(next_month), key.monthly_download_quota),
    )


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _counter_key(key_id: str, period: _Period) -> sa.ColumnElement[bool]:
    return sa.and_(
        UsageCounter.api_key_id == key_id,
        UsageCounter.period == period.period.value,
        UsageCounter.period_start == period.start,
    )


async def reserve_downloads(session: AsyncSession, key: ApiKey, count: int, now: datetime) -> QuotaUsage:
    """Counts `count` new downloads of `key` against its daily and monthly quotas (UTC), in the
    caller's transaction: commit it with the downloads being created, and a rollback gives the
    units back.

    Raises QuotaExceeded, having counted nothing, when either quota would be crossed. Each counter
    moves by one upsert whose WHERE re-checks the quota against the row as it is when the statement
    runs; on PostgreSQL a racing transaction waits for the row lock and then sees the committed
    count, so two callers can never both take the last unit. The lock lasts until the caller's
    commit: reservations of one key are serialised, other keys are not affected.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    dialect = session.get_bind().dialect.name
    table: sa.Table = UsageCounter.__table__  # type: ignore[assignment]
    taken: list[tuple[_Period, int]] = []
    for period in _periods(key, now):
        if period.limit is not None and count > period.limit:
            used = None  # cannot fit even when unused; no need to touch the row
        else:
            statement = _upsert(dialect, table).values(
                api_key_id=key.id, period=period.period.value, period_start=period.start, downloads=count
            )
            statement = statement.on_conflict_do_update(
                index_elements=[table.c.api_key_id, table.c.period, table.c.period_start],
                set_={"downloads": table.c.downloads + count},
                where=None if period.limit is None else table.c.downloads + count <= period.limit,
            ).returning(table.c.downloads)
            used = (await session.execute(statement)).scalar()
        if used is None:
            for done, _ in taken:  # give back what the other period took in this call
                await session.execute(
                    sa.update(UsageCounter)
                    .where(_counter_key(key.id, done))
                    .values(downloads=UsageCounter.downloads - count)
                )
            raise await _exceeded(session, key, period, count, now)
        taken.append((period, int(used)))
    (day, day_used), (month, month_used) = taken
    return QuotaUsage(
        day=PeriodUsage(day.period, day.start, day.reset_time, day_used, day.limit),
        month=PeriodUsage(month.period, month.start, month.reset_time, month_used, month.limit),
    )


async def _exceeded(
    session: AsyncSession, key: ApiKey, period: _Period, count: int, now: datetime
) -> QuotaExceeded:
    assert period.limit is not None
    used = await session.scalar(sa.select(UsageCounter.downloads).where(_counter_key(key.id, period))) or 0
    word = "daily" if period.period is UsagePeriod.DAY else "monthly"
    return QuotaExceeded(
        f"the {word} download quota of this API key is used up ({used} of {period.limit}); "
        f"it resets at {period.reset_time.isoformat()}",
        period=period.period.value,
        limit=period.limit,
        used=used,
        requested=count,
        reset_time=period.reset_time,
        retry_after_seconds=(period.reset_time - now).total_seconds(),
        violations=[
            QuotaViolation(
                f"api-keys/{key.id}",
                f"{word} download quota: {period.limit} per UTC {period.period.value}",
            )
        ],
    )


async def download_usage(
    session: AsyncSession, keys: Sequence[ApiKey], now: datetime
) -> dict[str, QuotaUsage]:
    """The downloads each key has counted in the current UTC day and month, by key id (one query)."""
    if not keys:
        return {}
    periods = {key.id: _periods(key, now) for key in keys}
    day, month = next(iter(periods.values()))
    rows = await session.execute(
        sa.select(UsageCounter.api_key_id, UsageCounter.period, UsageCounter.downloads).where(
            UsageCounter.api_key_id.in_(list(periods)),
            sa.or_(
                sa.and_(UsageCounter.period == day.period.value, UsageCounter.period_start == day.start),
                sa.and_(UsageCounter.period == month.period.value, UsageCounter.period_start == month.start),
            ),
        )
    )
    counted = {(key_id, period): downloads for key_id, period, downloads in rows}

    def usage(key_id: str, p: _Period) -> PeriodUsage:
        used = counted.get((key_id, p.period.value), 0)
        return PeriodUsage(p.period, p.start, p.reset_time, used, p.limit)

    return {
        key_id: QuotaUsage(day=usage(key_id, day), month=usage(key_id, month))
        for key_id, (day, month) in periods.items()
    }


async def quota_usage(session: AsyncSession, key: ApiKey, now: datetime) -> QuotaUsage:
    """The downloads `key` has counted in the current UTC day and month."""
    return (await download_usage(session, [key], now))[key.id]
