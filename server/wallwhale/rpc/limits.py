"""Rate limits per caller (core.limits), after authentication and before the method runs.

Only authenticated calls count: an API key against its own limit, a person (access token) against
the server's per-user setting. Anonymous calls (Login, Refresh, Logout), health and reflection have
no principal and pass untouched. Every counted call gets x-ratelimit-limit, -remaining and -reset
in its response headers, whether it passes or not.
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
from wallwhale.errors import Unavailable
from wallwhale.log import get_logger
from wallwhale.rpc import errors
from wallwhale.rpc.audit import deny
from wallwhale.rpc.calls import CallInterceptor, current_call

_log = get_logger("wallwhale.rpc")


class RateLimitInterceptor(CallInterceptor):
    def __init__(self, limiter: RateLimiter, audit: AuditWriter, user_limit: RateLimit | None = None):
        self._limiter = limiter
        self._audit = audit
        self._user_limit = user_limit

    def _limit_of(self, principal: Principal) -> tuple[str, RateLimit | None]:
        if principal.api_key_id:
            return f"api-keys/{principal.api_key_id}", principal.rate_limit
        return f"users/{principal.user_id}", self._user_limit

    @contextlib.asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, request: Any, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        call = current_call()
        subject, limit = self._limit_of(call.principal) if call.principal else ("", None)
        if limit is None:
            yield
            return
        decision: RateDecision | None = None
        try:
            decision = await self._limiter.acquire(subject, limit)
        except Exception as exc:
            # Without its store the limiter cannot tell; refusing is safer than letting floods through.
            _log.warning("rate limit store failed", error=str(exc).splitlines()[0][:200] if str(exc) else "")
        if decision is None:
            await errors.abort(context, Unavailable("the rate limiter is unavailable; try again shortly"))
        for name, value in decision.headers():
            call.add_header(name, value)
        if not decision.allowed:
            await deny(self._audit, context, request, rate_limited(subject, limit, decision))
        yield
