"""What happens to a job after a failed attempt: queued again (now or later), or failed for good.

Pure functions: the worker gathers the facts (the failure, the attempt, the limits, whether another
Steam account could take over) and writes what these decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from wallwhale.steam.output import AccountEffect, Failure, Reason

# Effects after which another account may succeed where this one cannot.
_ANOTHER_ACCOUNT_HELPS = frozenset({AccountEffect.BAD_PASSWORD, AccountEffect.NOT_OWNED})


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off between automatic attempts."""

    base_seconds: float
    max_seconds: float

    def delay(self, attempt: int) -> float:
        """Seconds before the next attempt after `attempt` attempts: doubling per attempt, up to the cap."""
        return min(self.max_seconds, self.base_seconds * 2.0 ** (attempt - 1))


@dataclass(frozen=True)
class Requeue:
    """Back to the queue: claimable at `at` (None: at once), with `note` in the job's log. A transient
    `failure` is kept on the job while it waits, so callers see why."""

    note: str
    at: datetime | None = None
    failure: Failure | None = None


@dataclass(frozen=True)
class AnotherAccount:
    """Back to the queue at once: the claim picks an account that has not failed this way."""

    note: str


@dataclass(frozen=True)
class Fail:
    """Failed for good (until a person retries it)."""

    reason: Reason
    message: str
    retryable: bool
    note: str


Decision = Requeue | AnotherAccount | Fail


def after_failure(
    failure: Failure,
    attempt: int,
    max_attempts: int,
    backoff: Backoff,
    now: datetime,
    *,
    another_account_could_run: bool,
    jitter: float = 1.0,
) -> Decision:
    """The decision after attempt number `attempt` failed with `failure`. `jitter` scales the wait
    (the caller draws it, e.g. 0.9 to 1.1, so that failed jobs do not come back in step)."""
    attempts_left = attempt < max_attempts
    if failure.account_effect is AccountEffect.TOKEN_REJECTED and attempts_left:
        # The token is gone (docs/depotdownloader-reference.md §5.2); one more run logs in with the
        # password.
        return Requeue(note=failure.message)
    if failure.account_effect in _ANOTHER_ACCOUNT_HELPS and another_account_could_run and attempts_left:
        return AnotherAccount(note=f"{failure.message}; trying another account")
    if failure.transient and attempts_left:
        delay = backoff.delay(attempt) * jitter
        return Requeue(
            note=f"{failure.message}; retrying in {delay:.0f}s",
            at=now + timedelta(seconds=delay),
            failure=failure,
        )
    message = failure.message
    if failure.transient:
        message = f"{message} (after {attempt} attempts)"
    return Fail(failure.reason, message, failure.retryable, note=message)


def after_server_error(
    note: str, attempt: int, max_attempts: int, backoff: Backoff, now: datetime
) -> Decision:
    """The decision after the server itself failed during attempt number `attempt` (often the database)."""
    if attempt >= max_attempts:
        return Fail(
            Reason.INTERNAL,
            "the server failed during the last attempt; see its log",
            retryable=True,
            note=note,
        )
    return Requeue(note=note, at=now + timedelta(seconds=backoff.delay(attempt)))


def another_account_may_help(failure: Failure) -> bool:
    """Whether asking if another account could run the job is worth a query."""
    return failure.account_effect in _ANOTHER_ACCOUNT_HELPS
