"""Rate limits per caller (core.limits), after authentication and before the method runs.

An API key's call counts against the key's own limit and against its user's, a person's (access
token) against the user's: a user's limit (their own, or the server's WALLWHALE_USER_* default) is
one budget over all their keys and sessions. Anonymous calls (Login, Refresh, Logout) count
against a budget per client address, which the calls refused by authentication share (see
address_refusal): nobody slows the others by sending many calls without valid credentials.
Health and reflection are not counted. Every counted call gets x-ratelimit-limit, -remaining and
-reset in its response headers, whether it passes or not.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

from wallwhale.core.audit import AuditWriter
from wallwhale.core.identity import Principal
from wallwhale.core.limits import RateDecision, RateLimit, RateLimiter, rate_limited
from wallwhale.errors import RateLimited, Unavailable
from wallwhale.log import get_logger
from wallwhale.rpc import errors
from wallwhale.rpc.audit import deny
from wallwhale.rpc.authentication import PUBLIC_SERVICES
from wallwhale.rpc.calls import CallInterceptor, current_call

_log = get_logger("wallwhale.rpc")


def address_subject(address: str) -> str:
    return f"addresses/{address[:48]}"


async def address_refusal(limiter: RateLimiter, limit: RateLimit | None, address: str) -> RateLimited | None:
    """Takes one call from the client address's budget; the error to answer instead when it is
    empty (None: go on). A store that fails lets the call go on to its own refusal."""
    if limit is None or not address:
        return None
    subject = address_subject(address)
    try:
        decision = await limiter.acquire(subject, limit)
    except Exception as exc:
        _log.warning("rate limit store failed", error=str(exc).splitlines()[0][:200] if str(exc) else "")
        return None
    return None if decision.allowed else rate_limited(subject, limit, decision)


class RateLimitInterceptor(CallInterceptor):
    def __init__(
        self,
        limiter: RateLimiter,
        audit: AuditWriter,
        address_limit: RateLimit | None = None,
    ):
        self._limiter = limiter
        self._audit = audit
        self._address_limit = address_limit

    def _budgets(self, principal: Principal | None, address: str) -> list[tuple[str, RateLimit]]:
        if principal is None:
            limit = self._address_limit
            return [(address_subject(address), limit)] if address and limit is not None else []
        return principal.rate_budgets()

    @contextlib.asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, request: Any, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        call = current_call()
        public = call.principal is None and call.method.startswith(PUBLIC_SERVICES)
        budgets = [] if public else self._budgets(call.principal, call.client_address)
        if not budgets:
            yield
            return
        # Each budget in turn (a key's, then its user's); the first without room refuses the call,
        # and the headers describe the budget that decided: the refusing one, else the emptiest.
        shown: RateDecision | None = None
        for subject, limit in budgets:
            decision: RateDecision | None = None
            try:
                decision = await self._limiter.acquire(subject, limit)
            except Exception as exc:
                # Without its store the limiter cannot tell; refusing is safer than letting floods through.
                _log.warning(
                    "rate limit store failed", error=str(exc).splitlines()[0][:200] if str(exc) else ""
                )
            if decision is None:
                await errors.abort(context, Unavailable("the rate limiter is unavailable; try again shortly"))
            if shown is None or not decision.allowed or decision.remaining < shown.remaining:
                shown = decision
            if not decision.allowed:
                for name, value in decision.headers():
                    call.add_header(name, value)
                await deny(self._audit, context, request, rate_limited(subject, limit, decision))
        assert shown is not None
        for name, value in shown.headers():
            call.add_header(name, value)
        yield
