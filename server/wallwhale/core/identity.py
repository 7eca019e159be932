"""Who is calling: API keys checked against their stored hash, and what their scopes grant.

A key that passed its check is remembered for a few seconds (PrincipalCache), so that a busy
caller does not cost a database read per call. Whoever changes a key or a user announces it
(Channel.CREDENTIALS, PostgreSQL NOTIFY on commit) and every instance forgets what it remembered;
the time limit only bounds what a lost notice could leave behind. Refusals are never remembered:
a revoked, disabled or unknown key is read again at every call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core import api_keys
from wallwhale.core.limits import NO_LIMITS, Limits, RateLimit
from wallwhale.core.scopes import capped_by_role, grants
from wallwhale.db.models import ApiKey, User, UserRole
from wallwhale.errors import PermissionDenied, Unauthenticated


@dataclass(frozen=True)
class Principal:
    kind: str  # "user" (a person's access token) or "api_key"
    user_id: str
    role: UserRole
    scopes: frozenset[str]
    api_key_id: str = ""
    display: str = ""
    # The login session (refresh-token family) of a person's access token.
    session_id: str = ""
    # An API key's own rate limit (None: not limited).
    rate_limit: RateLimit | None = None
    # The user's limits (their own over the server's defaults), which bind every key and session
    # of theirs: a key's own limits apply on top, never instead.
    user_limits: Limits = NO_LIMITS

    @property
    def is_admin(self) -> bool:
        return self.role is UserRole.ADMIN and grants(self.scopes, "admin:read")

    def rate_budgets(self) -> list[tuple[str, RateLimit]]:
        """The budgets one call takes from: the key's own, and its user's (shared by all their keys
        and sessions). Both must have room, so the tighter one decides."""
        budgets = []
        if self.api_key_id and self.rate_limit is not None:
            budgets.append((f"api-keys/{self.api_key_id}", self.rate_limit))
        if (user_limit := self.user_limits.rate_limit) is not None:
            budgets.append((f"users/{self.user_id}", user_limit))
        return budgets

    @property
    def request_scope(self) -> str:
        """Whose request_ids these are: a key's own, else the person's, so the two never collide."""
        return self.api_key_id or self.user_id


async def caller_records(session: AsyncSession, principal: Principal) -> tuple[User | None, ApiKey | None]:
    """The caller's user and API key as stored now (either may have gone since the call began)."""
    user = await session.get(User, principal.user_id)
    key = await session.get(ApiKey, principal.api_key_id) if principal.api_key_id else None
    return user, key


def require_scope(principal: Principal, scope: str) -> None:
    if not grants(principal.scopes, scope):
        raise PermissionDenied(f"this call needs the scope {scope!r}", reason="SCOPE_MISSING")


@dataclass(frozen=True)
class _Remembered:
    principal: Principal
    expire_time: datetime | None  # the key's own expiry, checked at every use
    stored_at: float  # monotonic seconds


class PrincipalCache:
    """API-key principals that passed their check, by the key's hash, for `ttl_seconds` at most.

    `usable` says whether changes made elsewhere would be heard now (on PostgreSQL: the listener is
    connected); when it says no, nothing is served from or kept in the cache. A look-up that began
    before a `clear()` does not store its answer, which may predate the change.
    """

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int = 10_000,
        usable: Callable[[], bool] = lambda: True,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._ttl = ttl_seconds
        self._max = max_entries
        self._usable = usable
        self._monotonic = monotonic
        self._entries: dict[str, _Remembered] = {}
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_hash: str) -> _Remembered | None:
        if self._ttl <= 0 or not self._entries:
            return None
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        if not self._usable() or self._monotonic() - entry.stored_at >= self._ttl:
            del self._entries[key_hash]
            return None
        return entry

    def store(
        self, key_hash: str, principal: Principal, expire_time: datetime | None, generation: int
    ) -> None:
        if self._ttl <= 0 or generation != self.generation or not self._usable():
            return
        self._entries.pop(key_hash, None)
        while len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]  # the oldest stored
        self._entries[key_hash] = _Remembered(principal, expire_time, self._monotonic())

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


async def authenticate_api_key(
    sessions: async_sessionmaker[AsyncSession],
    presented: str,
    now: datetime,
    cache: PrincipalCache | None = None,
    user_defaults: Limits = NO_LIMITS,
) -> Principal:
    # The same answer for a malformed key and an unknown one: nothing to learn by probing.
    unknown = Unauthenticated("the API key is not valid", reason="CREDENTIALS_INVALID")
    if not api_keys.looks_like_key(presented):
        raise unknown
    key_hash = api_keys.hash_key(presented)
    remembered = cache.get(key_hash) if cache is not None else None
    if remembered is not None:
        _check_expiry(remembered.expire_time, now)
        return remembered.principal
    generation = cache.generation if cache is not None else 0
    async with sessions() as session:
        key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
    if key is None:
        raise unknown
    if key.revoke_time is not None:
        raise Unauthenticated("the API key was revoked", reason="API_KEY_REVOKED")
    if key.disabled:
        raise Unauthenticated("the API key is disabled", reason="API_KEY_DISABLED")
    _check_expiry(key.expire_time, now)
    if key.owner.disabled:
        raise Unauthenticated("the API key's user is disabled", reason="USER_DISABLED")
    principal = Principal(
        kind="api_key",
        user_id=key.owner_user_id,
        role=key.owner.role,
        # Capped by the owner's role now: a demoted admin's admin:* key loses admin:*.
        scopes=capped_by_role(key.scopes, key.owner.role),
        api_key_id=key.id,
        display=f"{key.prefix} ({key.name})",
        rate_limit=RateLimit.of(key.requests_per_minute, key.burst),
        user_limits=Limits.of(key.owner).over(user_defaults),
    )
    if cache is not None:
        cache.store(key_hash, principal, key.expire_time, generation)
    return principal


def _check_expiry(expire_time: datetime | None, now: datetime) -> None:
    if expire_time is not None and expire_time <= now:
        raise Unauthenticated("the API key has expired", reason="API_KEY_EXPIRED")
