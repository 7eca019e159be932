"""Authentication and scope checks, before any other work of the call.

Methods of our services follow their `(wallwhale.v1.access)` rule; health and reflection are the
only methods outside that table and need no credentials. Credentials: `x-api-key: <key>`, or
`authorization: Bearer <key or access token>`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import grpc
from grpc import aio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core.api_keys import KEY_PREFIX
from wallwhale.core.audit import AuditWriter
from wallwhale.core.identity import Principal, PrincipalCache, authenticate_api_key, require_scope
from wallwhale.core.key_usage import KeyUsage
from wallwhale.core.limits import NO_LIMITS, Limits
from wallwhale.core.login_sessions import LoginSessions
from wallwhale.errors import PermissionDenied, Unauthenticated, WallWhaleError
from wallwhale.network import IpRules
from wallwhale.rpc.access import Rule
from wallwhale.rpc.audit import deny
from wallwhale.rpc.calls import CallInterceptor, current_call

# Health and reflection: Kubernetes probes and tools must reach them without credentials.
PUBLIC_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class NetworkRulesInterceptor(CallInterceptor):
    """Works out the client's address (trusting x-forwarded-for only from trusted proxies) and
    applies the IP allow/deny lists, before credentials are even looked at."""

    def __init__(self, rules: IpRules, audit: AuditWriter):
        self._rules = rules
        self._audit = audit

    @contextlib.asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, request: Any, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        call = current_call()
        call.client_address = self._rules.client_address(
            call.client_address,
            call.metadata.get("x-forwarded-for", ""),
            from_proxy_socket=call.peer.startswith("unix:"),
        )
        if (
            self._rules.active
            and not call.method.startswith(PUBLIC_SERVICES)
            and not self._rules.allows(call.client_address)
        ):
            denied = PermissionDenied(
                f"requests from {call.client_address} are not allowed", reason="IP_NOT_ALLOWED"
            )
            await deny(self._audit, context, request, denied)
        yield


class AuthenticationInterceptor(CallInterceptor):
    def __init__(
        self,
        rules: dict[str, Rule],
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime],
        audit: AuditWriter,
        logins: LoginSessions,
        principals: PrincipalCache | None = None,
        refusals: Callable[[str], Awaitable[WallWhaleError | None]] | None = None,
        usage: KeyUsage | None = None,
        user_defaults: Limits = NO_LIMITS,
    ):
        self._user_defaults = user_defaults
        # `refusals(address)`: counts a refused call against its address; the error to answer
        # instead once the address has used up its budget (rpc.limits.address_refusal).
        self._refusals = refusals
        self._usage = usage
        self._rules = rules
        self._sessions = sessions
        self._clock = clock
        self._audit = audit
        self._logins = logins
        self._principals = principals

    @contextlib.asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, request: Any, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        call = current_call()
        rule = self._rules.get(call.method)
        if rule is None and call.method.startswith(PUBLIC_SERVICES):
            yield
            return
        try:
            if rule is None:  # a method added to the server without a rule: fail closed
                raise Unauthenticated("this method is not open to callers", reason="CREDENTIALS_INVALID")
            call.principal = await self._principal(call.metadata, rule)
            if call.principal is not None:
                if call.principal.api_key_id and self._usage is not None:
                    self._usage.count(call.principal.api_key_id, self._clock())
                require_scope(call.principal, rule.scope)
        except WallWhaleError as denied:
            limited = await self._refusals(call.client_address) if self._refusals is not None else None
            await deny(self._audit, context, request, limited or denied)
        yield

    async def _principal(self, metadata: dict[str, str], rule: Rule) -> Principal | None:
        presented = metadata.get("x-api-key", "")
        authorization = metadata.get("authorization", "")
        if not presented and authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization must be 'Bearer <token>'", reason="CREDENTIALS_INVALID")
            presented = token.strip()
            if not presented.startswith(KEY_PREFIX):
                return await self._logins.authenticate(presented)
        if not presented:
            if rule.allow_anonymous:
                return None
            raise Unauthenticated(
                "credentials are missing: send an API key in the x-api-key header",
                reason="CREDENTIALS_MISSING",
            )
        return await authenticate_api_key(
            self._sessions, presented, self._clock(), self._principals, self._user_defaults
        )
