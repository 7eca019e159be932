"""When to try a failed call again, and after how long: pure rules shared by every call and stream."""

from __future__ import annotations

import random
from dataclasses import dataclass

from wallwhale_client.errors import (
    Cancelled,
    InternalError,
    ResourceExhausted,
    Unavailable,
    WallWhaleError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries UNAVAILABLE with exponential back-off (and jitter), and RESOURCE_EXHAUSTED after the
    server's RetryInfo delay. Other errors are raised at once: retrying cannot change their outcome."""

    # Tries in all for one call (1: never retry); for streams, consecutive breaks without progress.
    attempts: int = 5
    initial_backoff: float = 0.25
    max_backoff: float = 8.0
    multiplier: float = 2.0
    # A RetryInfo delay longer than this (a daily quota resets at midnight) is not waited for.
    max_retry_after: float = 60.0

    def delay(self, error: WallWhaleError, attempt: int, *, stream: bool = False) -> float | None:
        """Seconds to wait after failed try number `attempt` (from 1), or None to give up.

        With `stream`, a stream cut by the network (CANCELLED or INTERNAL without a WallWhale reason:
        the transport's, not the server's) counts as UNAVAILABLE: the caller resumes where it was."""
        if attempt >= self.attempts:
            return None
        if isinstance(error, ResourceExhausted):
            if error.retry_after is None or error.retry_after > self.max_retry_after:
                return None
            return error.retry_after
        broken = stream and isinstance(error, Cancelled | InternalError) and not error.reason
        if not (isinstance(error, Unavailable) or broken):
            return None
        backoff = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        if error.retry_after is not None:
            backoff = max(backoff, min(error.retry_after, self.max_retry_after))
        # Jitter keeps many clients cut off at once from coming back at once; not for secrecy.
        return backoff * random.uniform(0.8, 1.2)  # noqa: S311


NO_RETRY = RetryPolicy(attempts=1)
