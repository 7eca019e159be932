"""Failed logins are throttled per account and per client address (issue: password guessing).

Each failure takes one request from two GCRA budgets in the shared `rate_limits` table (core.limits),
so every instance sees the same counts: one for the e-mail (whether or not such a user exists) and
one for the client's address. While either budget is empty every login for that e-mail or from that
address is refused before its password is looked at, right password or not: RESOURCE_EXHAUSTED with
RetryInfo and the same message whichever budget ran out, so the refusal says nothing about the
account. A successful login takes nothing.
"""

from __future__ import annotations

import hashlib

from wallwhale.core.limits import RateLimit, RateLimiter
from wallwhale.errors import RateLimited


class LoginThrottle:
    def __init__(self, limiter: RateLimiter, per_account: RateLimit | None, per_address: RateLimit | None):
        self._limiter = limiter
        self._limits = [(per_account, _account_subject), (per_address, _address_subject)]

    def _subjects(self, email: str, address: str) -> list[tuple[str, RateLimit]]:
        values = {_account_subject: email, _address_subject: address}
        return [
            (subject(values[subject]), limit)
            for limit, subject in self._limits
            if limit is not None and values[subject]
        ]

    async def check(self, email: str, address: str) -> None:
        """Raises RateLimited while the account's or the address's failure budget is empty."""
        waits = [
            decision.retry_after
            for subject, limit in self._subjects(email, address)
            if not (decision := await self._limiter.peek(subject, limit)).allowed
        ]
        if waits:
            retry = max(waits)
            raise RateLimited(f"too many failed logins; try again in {retry:.0f}s", retry_after_seconds=retry)

    async def failed(self, email: str, address: str) -> None:
        for subject, limit in self._subjects(email, address):
            await self._limiter.acquire(subject, limit)


def _account_subject(email: str) -> str:
    # A hash: the table is shared with other limits and needs no e-mail addresses in clear.
    return "login-account/" + hashlib.sha256(email.encode()).hexdigest()[:40]


def _address_subject(address: str) -> str:
    return "login-address/" + address[:48]
