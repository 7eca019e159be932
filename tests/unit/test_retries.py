"""The decision after a failed attempt (core.retries), without a server or a subprocess."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from wallwhale.core import retries
from wallwhale.core.retries import AnotherAccount, Backoff, Fail, Requeue
from wallwhale.steam.output import AccountEffect, Failure, Reason

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BACKOFF = Backoff(base_seconds=15, max_seconds=900)


def decide(
    failure: Failure, attempt: int, max_attempts: int = 3, *, others: bool = False
) -> retries.Decision:
    return retries.after_failure(
        failure, attempt, max_attempts, BACKOFF, NOW, another_account_could_run=others
    )


def test_backoff_doubles_per_attempt_up_to_the_cap() -> None:
    assert [BACKOFF.delay(attempt) for attempt in (1, 2, 3, 4)] == [15, 30, 60, 120]
    assert BACKOFF.delay(20) == 900


def test_a_transient_failure_waits_its_backoff_and_keeps_the_failure_on_the_job() -> None:
    failure = Failure(Reason.STEAM_UNAVAILABLE, "Steam is away")
    decision = decide(failure, attempt=2)
    assert decision == Requeue(
        note="Steam is away; retrying in 30s", at=NOW + timedelta(seconds=30), failure=failure
    )
    jittered = retries.after_failure(failure, 2, 3, BACKOFF, NOW, another_account_could_run=False, jitter=1.1)
    assert isinstance(jittered, Requeue)
    assert jittered.at == NOW + timedelta(seconds=33)


def test_a_transient_failure_of_the_last_attempt_fails_and_says_how_many_were_made() -> None:
    decision = decide(Failure(Reason.STALLED, "no output"), attempt=3)
    assert decision == Fail(
        Reason.STALLED,
        "no output (after 3 attempts)",
        retryable=True,
        note="no output (after 3 attempts)",
    )


def test_a_permanent_failure_fails_at_once_and_hopeless_ones_are_not_retryable() -> None:
    assert decide(Failure(Reason.ITEM_NOT_FOUND, "gone"), attempt=1) == Fail(
        Reason.ITEM_NOT_FOUND, "gone", retryable=False, note="gone"
    )
    assert decide(Failure(Reason.ACCESS_DENIED, "denied"), attempt=1) == Fail(
        Reason.ACCESS_DENIED, "denied", retryable=True, note="denied"
    )


def test_a_rejected_token_is_retried_at_once_with_the_password() -> None:
    failure = Failure(Reason.INVALID_CREDENTIALS, "token gone", AccountEffect.TOKEN_REJECTED)
    assert decide(failure, attempt=1) == Requeue(note="token gone")
    assert isinstance(decide(failure, attempt=3), Fail)  # no attempt left


@pytest.mark.parametrize("effect", [AccountEffect.BAD_PASSWORD, AccountEffect.NOT_OWNED])
def test_another_account_takes_over_only_when_one_could_and_attempts_are_left(effect: AccountEffect) -> None:
    failure = Failure(Reason.APP_NOT_OWNED, "no license", effect)
    assert retries.another_account_may_help(failure)
    assert decide(failure, attempt=1, others=True) == AnotherAccount(
        note="no license; trying another account"
    )
    assert isinstance(decide(failure, attempt=1, others=False), Fail)
    assert isinstance(decide(failure, attempt=3, others=True), Fail)


def test_throttling_does_not_ask_for_another_account() -> None:
    failure = Failure(Reason.STEAM_RATE_LIMITED, "slow down", AccountEffect.THROTTLED)
    assert not retries.another_account_may_help(failure)
    decision = decide(failure, attempt=1, others=True)
    assert isinstance(decision, Requeue)
    assert decision.at == NOW + timedelta(seconds=15)


def test_a_server_error_requeues_after_the_backoff_and_fails_on_the_last_attempt() -> None:
    assert retries.after_server_error("interrupted", 1, 3, BACKOFF, NOW) == Requeue(
        note="interrupted", at=NOW + timedelta(seconds=15)
    )
    assert retries.after_server_error("interrupted", 3, 3, BACKOFF, NOW) == Fail(
        Reason.INTERNAL,
        "the server failed during the last attempt; see its log",
        retryable=True,
        note="interrupted",
    )
