"""The job queue in the database: claiming, leases, and taking back the jobs of dead instances.

A worker claims a QUEUED job that is due, whose API key and user are under their concurrency limits,
and for which a Steam account is free: of the highest priority, and within it fairly between
callers: the oldest job of the caller (its API key, or its user for jobs queued with a login) with
the fewest running jobs, so one caller's hundreds of queued jobs do not hold back another's one. It
writes its lease on the job and on the account in the same transaction. On PostgreSQL candidate jobs
and accounts are locked with FOR UPDATE SKIP LOCKED, so instances sharing the database never claim
the same job or account, and the key and user rows are locked while their running jobs are
counted. SQLite has one writer at a time, which gives the same guarantee for the single instance
it is meant for.

A lease that is not renewed expires: the job goes back to the queue (or fails after its last attempt)
and its account becomes free again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from wallwhale.core.downloads import PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_NORMAL, transition
from wallwhale.core.events import StoredEvent
from wallwhale.core.states import ACTIVE_STATES
from wallwhale.core.steam_accounts import ADD_ACCOUNT_HINT
from wallwhale.db.models import ApiKey, Download, DownloadState, SteamAccount, SteamAccountStatus, User
from wallwhale.steam.output import Phase, Reason

_CANDIDATES = 16
_PRIORITY_LEVELS = (
    Download.priority == PRIORITY_HIGH,
    Download.priority == PRIORITY_NORMAL,
    Download.priority == PRIORITY_LOW,
    Download.priority.not_in((PRIORITY_HIGH, PRIORITY_NORMAL, PRIORITY_LOW)),
)
# The first key of PostgreSQL advisory locks taken per item while claiming (the second is the item).
_ITEM_LOCK_SPACE = 431960


@dataclass(frozen=True)
class Claim:
    download_id: str
    workshop_id: int
    app_id: int
    attempt: int
    max_attempts: int
    max_runtime_seconds: int | None
    account_id: str
    account_username: str
    login_id: int
    events: list[StoredEvent]
    # The trace the job continues (the call that queued it), and since when it waited for this claim.
    trace_parent: str | None = None
    queued_since: datetime | None = None


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim | None
    # Jobs that were failed because no account could ever run them, and their events.
    events: list[StoredEvent]


async def claim_next(
    session: AsyncSession,
    instance_id: str,
    now: datetime,
    lease: timedelta,
    in_use: frozenset[str] = frozenset(),
    user_max_concurrent: int | None = None,
) -> ClaimResult:
    """Claims the next job. `in_use`: accounts this instance runs DepotDownloader with right now; they
    are never taken, even if their lease ran out while the event loop was held up.
    `user_max_concurrent`: running jobs per user where an admin set none of the user's own."""
    # Jobs of keys and users at their concurrency limit are left out here, so that they cannot fill
    # the candidate list and hold up everyone behind them; _has_room re-checks under row locks.
    running = aliased(Download)
    key_limit = (
        select(ApiKey.max_concurrent_downloads).where(ApiKey.id == Download.api_key_id).scalar_subquery()
    )
    key_running = (
        select(func.count())
        .select_from(running)
        .where(running.api_key_id == Download.api_key_id, running.state.in_(ACTIVE_STATES))
        .scalar_subquery()
    )
    # One job per item at a time: its runs share the item's DepotDownloader folder.
    same_item = aliased(Download)
    item_running = (
        select(same_item.id)
        .where(
            same_item.app_id == Download.app_id,
            same_item.workshop_id == Download.workshop_id,
            same_item.state.in_(ACTIVE_STATES),
        )
        .exists()
    )
    user_limit = _user_limit(user_max_concurrent)
    same_user = aliased(Download)
    user_running = (
        select(func.count())
        .select_from(same_user)
        .where(same_user.owner_user_id == Download.owner_user_id, same_user.state.in_(ACTIVE_STATES))
        .scalar_subquery()
    )
    conditions = (
        Download.state == DownloadState.QUEUED,
        Download.cancel_requested.is_(False),
        or_(Download.next_attempt_time.is_(None), Download.next_attempt_time <= now),
        or_(Download.api_key_id.is_(None), key_limit.is_(None), key_running < key_limit),
        or_(Download.owner_user_id.is_(None), user_limit.is_(None), user_running < user_limit),
        ~item_running,
    )
    # Highest priority first: one pass per priority level (ORDER BY priority DESC over all levels
    # would need a DESC index). Within a level, fairly: the callers in order of their running jobs
    # (none first), each group's jobs oldest first. Every query reads its level's rows of the
    # (state, priority, create_time) index in order and stops at its LIMIT; the group's test comes
    # first, so the rows of other callers cost a comparison, not the subqueries. Priorities are
    # validated when jobs are created; the last level catches any other value.
    groups = await _callers_by_running_jobs(session)
    # With several groups, the levels without queued jobs (most, most of the time) are found in one
    # look first, rather than by one empty query per group.
    levels = await _queued_levels(session) if len(groups) > 1 else _PRIORITY_LEVELS
    candidates: list[Download] = []
    for level in levels:
        for group in groups:
            found = await session.scalars(
                select(Download)
                .where(level, group, *conditions)
                .order_by(Download.create_time, Download.id)
                .limit(_CANDIDATES - len(candidates))
                .with_for_update(skip_locked=True)
            )
            candidates += found
            if len(candidates) >= _CANDIDATES:
                break
        if len(candidates) >= _CANDIDATES:
            break
    failed: list[StoredEvent] = []
    items_seen: set[tuple[int, int]] = set()
    for download in candidates:
        item = (download.app_id, download.workshop_id)
        if item in items_seen or not await _item_is_free(session, download):
            continue  # another job of the item runs (or is being claimed elsewhere): it waits
        items_seen.add(item)
        if not await _has_room(session, download, user_max_concurrent):
            continue  # over its key's or user's max_concurrent: it waits, it does not fail
        accounts = await _usable_accounts(session, download)
        if not accounts:
            failed += await transition(
                session,
                download,
                DownloadState.FAILED,
                now,
                note="no Steam account can run this download",
                failure_reason=Reason.NO_ACCOUNT_AVAILABLE,
                failure_message=_no_account_message(download),
                failure_retryable=True,
            )
            continue
        accounts = [account for account in accounts if account.id not in in_use]
        account = await _take_free_account(session, accounts, download.app_id, instance_id, now, lease)
        if account is None:
            continue  # every account that could run it is busy or cooling down: it waits
        queued_since = download.update_time  # its last change: when it was queued (or queued again)
        stored = await transition(
            session,
            download,
            DownloadState.RUNNING,
            now,
            note=f"attempt {download.attempt + 1} of {download.max_attempts} as {account.username}",
            attempt=download.attempt + 1,
            lease_owner=instance_id,
            lease_expire_time=now + lease,
            steam_account_id=account.id,
            start_time=download.start_time or now,
            phase=Phase.STARTING,
            percent=0.0,
            current_file="",
            next_attempt_time=None,
            failure_reason=None,
            failure_message=None,
            failure_retryable=False,
        )
        claim = Claim(
            download_id=download.id,
            workshop_id=download.workshop_id,
            app_id=download.app_id,
            attempt=download.attempt,
            max_attempts=download.max_attempts,
            max_runtime_seconds=download.max_runtime_seconds,
            account_id=account.id,
            account_username=account.username,
            login_id=account.login_id,
            events=stored,
            trace_parent=download.trace_parent,
            queued_since=queued_since,
        )
        return ClaimResult(claim, failed)
    return ClaimResult(None, failed)


async def _item_is_free(session: AsyncSession, download: Download) -> bool:
    """Whether no other job of the item is active. On PostgreSQL two instances could each claim a job
    of the same item, neither seeing the other's uncommitted claim: a transaction lock per item lets
    one through, and the check after it sees any claim committed meanwhile."""
    if session.get_bind().dialect.name == "postgresql":
        lock = func.pg_try_advisory_xact_lock(_ITEM_LOCK_SPACE, download.workshop_id % 2**31)
        if not await session.scalar(select(lock)):
            return False
    active = await session.scalar(
        select(func.count())
        .select_from(Download)
        .where(
            Download.app_id == download.app_id,
            Download.workshop_id == download.workshop_id,
            Download.state.in_(ACTIVE_STATES),
            Download.id != download.id,
        )
    )
    return not active


_CALLER = func.coalesce(Download.api_key_id, Download.owner_user_id)


async def _queued_levels(session: AsyncSession) -> list[ColumnElement[bool]]:
    """The priority levels that have queued jobs: one statement, an index probe per level."""
    looks = [
        select(Download.id).where(Download.state == DownloadState.QUEUED, level).exists()
        for level in _PRIORITY_LEVELS
    ]
    found = (await session.execute(select(*looks))).one()
    return [level for level, queued in zip(_PRIORITY_LEVELS, found, strict=True) if queued]


async def _callers_by_running_jobs(session: AsyncSession) -> list[ColumnElement[bool]]:
    """Conditions that split the queue by caller (the job's API key, or its user for jobs queued
    with a login), in the order they are served: callers with no running job (and jobs of no
    caller), then those with one, two, ... Read from the active jobs only, which are few."""
    rows = await session.execute(
        select(_CALLER, func.count()).where(Download.state.in_(ACTIVE_STATES)).group_by(_CALLER)
    )
    by_count: dict[int, list[str]] = {}
    for caller, jobs in rows:
        if caller is not None:
            by_count.setdefault(int(jobs), []).append(caller)
    if not by_count:
        return [sa.true()]
    busy = [caller for callers in by_count.values() for caller in callers]
    idle = or_(_CALLER.is_(None), _CALLER.not_in(busy))
    return [idle, *(_CALLER.in_(by_count[count]) for count in sorted(by_count))]


def _user_limit(default: int | None) -> ColumnElement[int | None]:
    """The job's user's max_concurrent_downloads, else the server's default (NULL: none)."""
    own = select(User.max_concurrent_downloads).where(User.id == Download.owner_user_id).scalar_subquery()
    return own if default is None else func.coalesce(own, default)


async def _has_room(session: AsyncSession, download: Download, user_default: int | None) -> bool:
    return await _key_has_room(session, download) and await _user_has_room(session, download, user_default)


async def _user_has_room(session: AsyncSession, download: Download, default: int | None) -> bool:
    """Whether the job's user runs fewer jobs than their limit, over all their keys and sessions.
    As for keys, the user's row is locked while counting (only when a limit applies)."""
    if download.owner_user_id is None:
        return True
    own = await session.scalar(select(User.max_concurrent_downloads).where(User.id == download.owner_user_id))
    limit = own if own is not None else default
    if limit is None:
        return True
    locked = await session.scalar(
        select(User.id).where(User.id == download.owner_user_id).with_for_update(skip_locked=True)
    )
    if locked is None:
        return False
    running = await session.scalar(
        select(func.count())
        .select_from(Download)
        .where(Download.owner_user_id == download.owner_user_id, Download.state.in_(ACTIVE_STATES))
    )
    return int(running or 0) < limit


async def _key_has_room(session: AsyncSession, download: Download) -> bool:
    if download.api_key_id is None:
        return True
    # Locking the key row serialises the count-and-claim of its jobs across instances; a key locked
    # by another claimer counts as full for now (waiting for it could deadlock two claimers).
    key = (
        await session.execute(
            select(ApiKey.id, ApiKey.max_concurrent_downloads)
            .where(ApiKey.id == download.api_key_id)
            .with_for_update(skip_locked=True)
        )
    ).first()
    if key is None:
        return False
    limit: int | None = key.max_concurrent_downloads
    if limit is None:
        return True
    running = await session.scalar(
        select(func.count())
        .select_from(Download)
        .where(Download.api_key_id == download.api_key_id, Download.state.in_(ACTIVE_STATES))
    )
    return int(running or 0) < limit


async def _usable_accounts(session: AsyncSession, download: Download) -> list[SteamAccount]:
    """Accounts that could run the job some time: enabled, not known to lack its app."""
    query = select(SteamAccount).where(
        SteamAccount.disabled.is_(False), SteamAccount.status != SteamAccountStatus.DISABLED
    )
    if download.requested_steam_account_id:
        query = query.where(SteamAccount.id == download.requested_steam_account_id)
    accounts = await session.scalars(query)
    return [account for account in accounts if download.app_id not in (account.not_owned_app_ids or [])]


async def _take_free_account(
    session: AsyncSession,
    accounts: list[SteamAccount],
    app_id: int,
    instance_id: str,
    now: datetime,
    lease: timedelta,
) -> SteamAccount | None:
    def ready(account: SteamAccount) -> bool:
        cooled = account.cooldown_end_time is None or account.cooldown_end_time <= now
        free = account.session_owner is None or (account.session_expire_time or now) <= now
        return cooled and free

    def preference(account: SteamAccount) -> tuple[bool, datetime]:
        # Accounts known to own the app first, then the least recently used (spreads the logins).
        return (
            app_id not in (account.owned_app_ids or []),
            account.last_used_time or datetime.min.replace(tzinfo=now.tzinfo),
        )

    for account in sorted(filter(ready, accounts), key=preference):
        locked = await session.scalar(
            select(SteamAccount)
            .where(
                SteamAccount.id == account.id,
                or_(SteamAccount.session_owner.is_(None), SteamAccount.session_expire_time <= now),
            )
            .with_for_update(skip_locked=True)
        )
        if locked is None:
            continue
        locked.session_owner = instance_id
        locked.session_expire_time = now + lease
        locked.last_used_time = now
        locked.downloads_run += 1
        if locked.status is SteamAccountStatus.COOLING_DOWN:
            locked.status, locked.status_reason, locked.cooldown_end_time = (
                SteamAccountStatus.ACTIVE,
                "",
                None,
            )
        return locked
    return None


def _no_account_message(download: Download) -> str:
    if download.requested_steam_account_id:
        return "the requested Steam account is disabled, removed, or known not to own the item's app"
    return (
        f"no enabled Steam account that may own app {download.app_id}; add or enable one, then retry"
        f" ({ADD_ACCOUNT_HINT})"
    )


@dataclass(frozen=True)
class Renewal:
    lost: set[str]  # jobs this instance no longer holds: stop them without touching their rows
    cancel: set[str]  # jobs someone asked to cancel


async def renew(
    session: AsyncSession,
    instance_id: str,
    attempts: dict[str, int],
    account_ids: set[str],
    now: datetime,
    lease: timedelta,
) -> Renewal:
    """Extends the leases of the jobs this instance runs (`attempts`: job id -> the claimed attempt)
    and of the Steam accounts its DepotDownloader sessions use (jobs' and QR logins')."""
    job_ids = set(attempts)
    if job_ids:
        await session.execute(
            update(Download)
            .where(
                Download.id.in_(job_ids),
                Download.lease_owner == instance_id,
                Download.state.in_(ACTIVE_STATES),
            )
            .values(lease_expire_time=now + lease)
            .execution_options(synchronize_session=False)
        )
    if account_ids:
        await session.execute(
            update(SteamAccount)
            .where(SteamAccount.id.in_(account_ids), SteamAccount.session_owner == instance_id)
            .values(session_expire_time=now + lease)
            .execution_options(synchronize_session=False)
        )
    if not job_ids:
        return Renewal(set(), set())
    rows = (
        await session.execute(
            select(
                Download.id, Download.lease_owner, Download.state, Download.attempt, Download.cancel_requested
            ).where(Download.id.in_(job_ids))
        )
    ).all()
    held = {
        row.id
        for row in rows
        if row.lease_owner == instance_id and row.state in ACTIVE_STATES and row.attempt == attempts[row.id]
    }
    return Renewal(
        lost=job_ids - held, cancel={row.id for row in rows if row.id in held and row.cancel_requested}
    )


async def requeue_expired(session: AsyncSession, now: datetime, instance_id: str) -> list[StoredEvent]:
    """Takes back the jobs whose instance stopped renewing: requeued, cancelled or failed.

    Never this instance's own: it knows whether they still run (a clock step must not make it run
    a job twice).
    """
    expired = await session.scalars(
        select(Download)
        .where(
            Download.state.in_(ACTIVE_STATES),
            Download.lease_expire_time < now,
            Download.lease_owner.is_distinct_from(instance_id),
        )
        .with_for_update(skip_locked=True)
    )
    stored: list[StoredEvent] = []
    for download in list(expired):
        dead_instance = download.lease_owner
        released = {"lease_owner": None, "lease_expire_time": None}
        if download.cancel_requested:
            stored += await transition(
                session,
                download,
                DownloadState.CANCELLED,
                now,
                note="cancelled",
                cancel_requested=False,
                **released,
            )
        elif download.attempt >= download.max_attempts:
            stored += await transition(
                session,
                download,
                DownloadState.FAILED,
                now,
                note="the server running it stopped during the last attempt",
                failure_reason=Reason.PROCESS_CRASHED,
                failure_retryable=True,
                failure_message=f"the server running the download stopped during attempt {download.attempt}",
                **released,
            )
        else:
            stored += await transition(
                session,
                download,
                DownloadState.QUEUED,
                now,
                note="the server running it stopped; queued again",
                next_attempt_time=None,
                **released,
            )
        await release_account(session, download.steam_account_id, dead_instance)
    return stored


async def take_account(
    session: AsyncSession, account_id: str, instance_id: str, now: datetime, lease: timedelta
) -> bool:
    """Leases the account's DepotDownloader session outside the queue (a QR login), as a claim does;
    False when a job or another login holds it. One conditional UPDATE: on PostgreSQL it waits for a
    claimer's row lock and then re-reads the row, so the two never both win."""
    result = await session.execute(
        update(SteamAccount)
        .where(
            SteamAccount.id == account_id,
            or_(SteamAccount.session_owner.is_(None), SteamAccount.session_expire_time <= now),
        )
        .values(session_owner=instance_id, session_expire_time=now + lease, last_used_time=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def release_account(session: AsyncSession, account_id: str | None, instance_id: str | None) -> None:
    """Frees the account's DepotDownloader session if `instance_id` still holds it."""
    if account_id is None or instance_id is None:
        return
    await session.execute(
        update(SteamAccount)
        .where(SteamAccount.id == account_id, SteamAccount.session_owner == instance_id)
        .values(session_owner=None, session_expire_time=None)
        .execution_options(synchronize_session=False)
    )


async def held_job(
    session: AsyncSession, download_id: str, instance_id: str, attempt: int
) -> Download | None:
    """The job, locked, while `instance_id` holds its lease for claimed attempt number `attempt`;
    None when it does not (any more). The attempt makes the lease a per-claim token: a job taken
    back and claimed again (even by the same instance) is not the old run's any more."""
    download = await session.scalar(select(Download).where(Download.id == download_id).with_for_update())
    if download is None or download.lease_owner != instance_id or download.attempt != attempt:
        return None
    return download


def lease_held(instance_id: str, attempt: int) -> tuple[ColumnElement[bool], ...]:
    """held_job's condition as a WHERE clause, for a write that checks it in the same statement."""
    return (Download.lease_owner == instance_id, Download.attempt == attempt)


def released() -> dict[str, None]:
    """The columns that end a lease."""
    return {"lease_owner": None, "lease_expire_time": None}
