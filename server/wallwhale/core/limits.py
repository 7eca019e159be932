"""Rate limits and download quotas, kept in the database so that every server instance shares them.

Rate limits (requests per minute with a burst, per API key, and per person when configured) follow
GCRA, the generic cell rate algorithm: a token bucket stored as one number per caller, the time at
which its budget is full again (the "theoretical arrival time", TAT). A request at time t with
interval T = 1 minute / rate and bucket size B passes when max(TAT, t) + T - t <= B * T, and then
moves TAT to max(TAT, t) + T. That test and the move are one INSERT .. ON CONFLICT DO UPDATE ..
WHERE .. RETURNING statement, so the database decides atomically for all instances, on SQLite and
PostgreSQL alike; only a refusal reads the row once more, to say when to come back.

Quotas count the downloads of an API key per UTC day and per UTC month in `usage_counters`, and
those of its owner over all their keys and sessions in `user_usage_counters`: one conditional upsert
per period and counter inside the caller's transaction (see reserve_downloads).

Limits bind people, not only keys: a user has limits of their own (the server's WALLWHALE_USER_*
defaults, or what an admin set for them), and a call made with a key must pass both the key's and
its owner's. Budgets and counters are separate rows, so the tighter of the two always decides, and
whatever a user does with any key or a login comes out of the same user budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.db.engine import ConnectionRunner
from wallwhale.db.models import ApiKey, RateLimitState, UsageCounter, UsagePeriod, User, UserUsageCounter
from wallwhale.errors import FieldViolation, QuotaExceeded, QuotaViolation, RateLimited

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


# Limits of a key or a user -------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What an API key or a user may do; None: no limit of that kind (for a user's own values: the
    server's default)."""

    requests_per_minute: int | None = None
    burst: int | None = None
    daily_download_quota: int | None = None
    monthly_download_quota: int | None = None
    max_concurrent_downloads: int | None = None
    max_runtime_seconds: int | None = None

    @classmethod
    def of(cls, row: ApiKey | User) -> Limits:
        """The limits stored on a key's or a user's row."""
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})

    def over(self, defaults: Limits) -> Limits:
        """These values where set, the defaults elsewhere (a user's own limits over the server's)."""
        return replace(defaults, **{name: value for name, value in asdict(self).items() if value is not None})

    @property
    def rate_limit(self) -> RateLimit | None:
        return RateLimit.of(self.requests_per_minute, self.burst)

    def violations_beyond(self, bound: Limits, prefix: str) -> list[FieldViolation]:
        """The limits set here that are looser than `bound`'s (a key's against its owner's). An unset
        limit is not looser: the bound applies to it at every call anyway."""
        found = []
        bound_burst = bound.rate_limit.burst if bound.rate_limit is not None else None
        for name, value in asdict(self).items():
            limit = bound_burst if name == "burst" else getattr(bound, name)
            if value is not None and limit is not None and value > limit:
                field = "max_runtime" if name == "max_runtime_seconds" else name
                found.append(
                    FieldViolation(f"{prefix}.{field}", f"must not exceed the owner's limit ({limit})")
                )
        return found


NO_LIMITS = Limits()


def tighter(first: int | None, second: int | None) -> int | None:
    """The smaller of two limits, None meaning none."""
    if first is None or second is None:
        return second if first is None else first
    return min(first, second)


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

    async def peek(self, subject: str, limit: RateLimit) -> RateDecision:
        """Whether a request would pass now, taking nothing (a plain read)."""
        if limit.requests_per_minute <= 0:
            return RateDecision(False, 0, 0, _BLOCKED_RETRY_SECONDS, _BLOCKED_RETRY_SECONDS)
        return await self._connections.read(lambda connection: self._peek(connection, subject, limit))

    def _peek(self, connection: Connection, subject: str, limit: RateLimit) -> RateDecision:
        now = self._clock()
        _require_aware(now)
        now_us = (now - _EPOCH) // _MICROSECOND
        interval = -(-_MINUTE_US // limit.requests_per_minute)
        window = limit.burst * interval
        tat = self._table.c.theoretical_arrival_us
        current = connection.scalar(sa.select(tat).where(self._table.c.subject == subject))
        full_at = max(int(current or now_us), now_us)
        allowed = full_at + interval <= now_us + window
        return RateDecision(
            allowed=allowed,
            limit=limit.burst,
            remaining=max(0, (now_us + window - full_at) // interval),
            reset_after=(full_at - now_us) / 1e6,
            retry_after=0.0 if allowed else max(0, full_at + interval - window - now_us) / 1e6,
        )

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
class Meter:
    """The download counters of one API key (`usage_counters`) or one user (`user_usage_counters`,
    over all their keys and sessions), with the quotas that bound them."""

    table: sa.Table
    owner_id: str
    subject: str  # "api-keys/<id>" or "users/<id>", as QuotaFailure names it
    whose: str  # for messages: "this API key", "your user"
    daily: int | None
    monthly: int | None

    @classmethod
    def of_key(cls, key: ApiKey) -> Meter:
        table: sa.Table = UsageCounter.__table__  # type: ignore[assignment]
        return cls(
            table,
            key.id,
            f"api-keys/{key.id}",
            "this API key",
            key.daily_download_quota,
            key.monthly_download_quota,
        )

    @classmethod
    def of_user(cls, user_id: str, limits: Limits) -> Meter:
        """`limits`: the user's effective limits (their own over the server's defaults)."""
        table: sa.Table = UserUsageCounter.__table__  # type: ignore[assignment]
        return cls(
            table,
            user_id,
            f"users/{user_id}",
            "your user",
            limits.daily_download_quota,
            limits.monthly_download_quota,
        )

    @property
    def owner(self) -> sa.Column[str]:
        return self.table.c[self.table.primary_key.columns.keys()[0]]


@dataclass(frozen=True)
class _Period:
    period: UsagePeriod
    start: date
    reset_time: datetime
    limit: int | None


def _periods(meter: Meter, now: datetime) -> tuple[_Period, _Period]:
    """The UTC day and month that `now` falls in (whatever its own timezone), with the meter's quotas."""
    _require_aware(now)
    day = now.astimezone(UTC).date()
    month = day.replace(day=1)
    next_month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return (
        _Period(UsagePeriod.DAY, day, _midnight(day + timedelta(days=1)), meter.daily),
        _Period(UsagePeriod.MONTH, month, _midnight(next_month), meter.monthly),
    )


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _counter_key(meter: Meter, period: _Period) -> sa.ColumnElement[bool]:
    return sa.and_(
        meter.owner == meter.owner_id,
        meter.table.c.period == period.period.value,
        meter.table.c.period_start == period.start,
    )


async def reserve_for_caller(
    session: AsyncSession, user_id: str, user_limits: Limits, key: ApiKey | None, count: int, now: datetime
) -> None:
    """Counts `count` new downloads of a caller: against its API key's quotas (if it used one) and
    against its user's, over all their keys and sessions. The key's counters first, then the user's,
    always in this order, so that two transactions never wait for each other's rows in a cycle."""
    if key is not None:
        await reserve_downloads(session, Meter.of_key(key), count, now)
    await reserve_downloads(session, Meter.of_user(user_id, user_limits), count, now)


async def reserve_downloads(session: AsyncSession, meter: Meter, count: int, now: datetime) -> QuotaUsage:
    """Counts `count` new downloads on `meter` against its daily and monthly quotas (UTC), in the
    caller's transaction: commit it with the downloads being created, and a rollback gives the
    units back.

    Raises QuotaExceeded, having counted nothing, when either quota would be crossed. Each counter
    moves by one upsert whose WHERE re-checks the quota against the row as it is when the statement
    runs; on PostgreSQL a racing transaction waits for the row lock and then sees the committed
    count, so two callers can never both take the last unit. The lock lasts until the caller's
    commit: reservations of one key (or user) are serialised, others are not affected.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    dialect = session.get_bind().dialect.name
    table = meter.table
    taken: list[tuple[_Period, int]] = []
    for period in _periods(meter, now):
        if period.limit is not None and count > period.limit:
            used = None  # cannot fit even when unused; no need to touch the row
        else:
            statement = _upsert(dialect, table).values(
                {
                    meter.owner.name: meter.owner_id,
                    "period": period.period.value,
                    "period_start": period.start,
                    "downloads": count,
                }
            )
            statement = statement.on_conflict_do_update(
                index_elements=[meter.owner, table.c.period, table.c.period_start],
                set_={"downloads": table.c.downloads + count},
                where=None if period.limit is None else table.c.downloads + count <= period.limit,
            ).returning(table.c.downloads)
            used = (await session.execute(statement)).scalar()
        if used is None:
            for done, _ in taken:  # give back what the other period took in this call
                await session.execute(
                    sa.update(table)
                    .where(_counter_key(meter, done))
                    .values(downloads=table.c.downloads - count)
                )
            raise await _exceeded(session, meter, period, count, now)
        taken.append((period, int(used)))
    (day, day_used), (month, month_used) = taken
    return QuotaUsage(
        day=PeriodUsage(day.period, day.start, day.reset_time, day_used, day.limit),
        month=PeriodUsage(month.period, month.start, month.reset_time, month_used, month.limit),
    )


async def _exceeded(
    session: AsyncSession, meter: Meter, period: _Period, count: int, now: datetime
) -> QuotaExceeded:
    assert period.limit is not None
    used = await session.scalar(sa.select(meter.table.c.downloads).where(_counter_key(meter, period))) or 0
    word = "daily" if period.period is UsagePeriod.DAY else "monthly"
    return QuotaExceeded(
        f"the {word} download quota of {meter.whose} is used up ({used} of {period.limit}); "
        f"it resets at {period.reset_time.isoformat()}",
        period=period.period.value,
        limit=period.limit,
        used=used,
        requested=count,
        reset_time=period.reset_time,
        retry_after_seconds=(period.reset_time - now).total_seconds(),
        violations=[
            QuotaViolation(
                meter.subject, f"{word} download quota: {period.limit} per UTC {period.period.value}"
            )
        ],
    )


async def download_usage(
    session: AsyncSession, meters: Sequence[Meter], now: datetime
) -> dict[str, QuotaUsage]:
    """The downloads each meter (all of one kind) has counted in the current UTC day and month, by
    owner id (one query)."""
    if not meters:
        return {}
    periods = {meter.owner_id: _periods(meter, now) for meter in meters}
    day, month = next(iter(periods.values()))
    table, owner = meters[0].table, meters[0].owner
    rows = await session.execute(
        sa.select(owner, table.c.period, table.c.downloads).where(
            owner.in_(list(periods)),
            sa.or_(
                sa.and_(table.c.period == day.period.value, table.c.period_start == day.start),
                sa.and_(table.c.period == month.period.value, table.c.period_start == month.start),
            ),
        )
    )
    counted = {(owner_id, period): downloads for owner_id, period, downloads in rows}

    def usage(owner_id: str, p: _Period) -> PeriodUsage:
        used = counted.get((owner_id, p.period.value), 0)
        return PeriodUsage(p.period, p.start, p.reset_time, used, p.limit)

    return {
        owner_id: QuotaUsage(day=usage(owner_id, day), month=usage(owner_id, month))
        for owner_id, (day, month) in periods.items()
    }


async def quota_usage(session: AsyncSession, meter: Meter, now: datetime) -> QuotaUsage:
    """The downloads `meter` has counted in the current UTC day and month."""
    return (await download_usage(session, [meter], now))[meter.owner_id]
