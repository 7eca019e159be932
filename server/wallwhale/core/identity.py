"""Who is calling: API keys checked against their stored hash, and what their scopes grant.

Every check reads the database, so a revoked, disabled or expired key stops working at its next
call on every instance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core import api_keys
from wallwhale.core.errors import PermissionDenied, Unauthenticated
from wallwhale.core.limits import RateLimit
from wallwhale.db.models import ApiKey, UserRole


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
    # An API key's own rate limit (None: not limited); people get the server's setting instead.
    rate_limit: RateLimit | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is UserRole.ADMIN and grants(self.scopes, "admin:read")


def role_scopes(role: UserRole) -> frozenset[str]:
    """What a logged-in person may do: admins everything, users their own downloads."""
    if role is UserRole.ADMIN:
        return frozenset({"admin:*", "download:*"})
    return frozenset({"download:*"})


def grants(granted: Iterable[str], required: str) -> bool:
    """True when `granted` holds `required` itself or the wildcard of its family ("download:*")."""
    if not required:
        return True
    family = required.split(":", 1)[0]
    return any(scope in (required, f"{family}:*") for scope in granted)


def require_scope(principal: Principal, scope: str) -> None:
    if not grants(principal.scopes, scope):
        raise PermissionDenied(f"this call needs the scope {scope!r}", reason="SCOPE_MISSING")


async def authenticate_api_key(
    sessions: async_sessionmaker[AsyncSession], presented: str, now: datetime
) -> Principal:
    # The same answer for a malformed key and an unknown one: nothing to learn by probing.
    unknown = Unauthenticated("the API key is not valid", reason="CREDENTIALS_INVALID")
    if not api_keys.looks_like_key(presented):
        raise unknown
    async with sessions() as session:
        key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == api_keys.hash_key(presented)))
    if key is None:
        raise unknown
    if key.revoke_time is not None:
        raise Unauthenticated("the API key was revoked", reason="API_KEY_REVOKED")
    if key.disabled:
        raise Unauthenticated("the API key is disabled", reason="API_KEY_DISABLED")
    if key.expire_time is not None and key.expire_time <= now:
        raise Unauthenticated("the API key has expired", reason="API_KEY_EXPIRED")
    if key.owner.disabled:
        raise Unauthenticated("the API key's user is disabled", reason="USER_DISABLED")
    return Principal(
        kind="api_key",
        user_id=key.owner_user_id,
        role=key.owner.role,
        scopes=frozenset(key.scopes),
        api_key_id=key.id,
        display=f"{key.prefix} ({key.name})",
        rate_limit=RateLimit.of(key.requests_per_minute, key.burst),
    )
