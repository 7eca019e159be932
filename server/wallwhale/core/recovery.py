"""A way back for whoever runs the server: a new admin API key, a new password, straight on the database.

These run from `wallwhale admin ...` on the server's machine, without any credentials: access to the
configuration and the database is the authority. Each is audited with the actor "local operator".
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core import api_keys, users
from wallwhale.core.bootstrap import BOOTSTRAP_SCOPES
from wallwhale.db.models import AuditEvent, User, UserRole
from wallwhale.db.types import utcnow
from wallwhale.errors import FailedPrecondition, NotFound

ACTOR = "local operator"


@dataclass(frozen=True)
class IssuedKey:
    user_id: str
    email: str
    api_key: str
    api_key_id: str


@dataclass(frozen=True)
class NewPassword:
    user_id: str
    email: str
    password: str


async def issue_admin_key(sessions: async_sessionmaker[AsyncSession], email: str) -> IssuedKey:
    """A new admin API key for an existing, enabled admin (their other keys stay as they are)."""
    async with sessions.begin() as session:
        user = await _user(session, email)
        if user.role is not UserRole.ADMIN:
            raise FailedPrecondition(f"{user.email} is not an admin; an admin key is only issued to admins")
        if user.disabled:
            raise FailedPrecondition(f"{user.email} is disabled; enable the user first")
        created = await api_keys.create_api_key(
            session,
            api_keys.KeyInput(
                name="recovery admin key", owner_user_id=user.id, scopes=tuple(BOOTSTRAP_SCOPES)
            ),
            utcnow(),
            granter_scopes=BOOTSTRAP_SCOPES,  # the operator holds the database: everything
        )
        row, plaintext = created.row, created.plaintext
        assert plaintext is not None  # no request_id: a new key every time
        _audit(session, "system.issue_admin_key", user, {"api_key_id": row.id, "api_key_prefix": row.prefix})
    return IssuedKey(user.id, user.email, plaintext, row.id)


async def reset_password(sessions: async_sessionmaker[AsyncSession], email: str) -> NewPassword:
    """A generated password; every login session of the user ends (their API keys stay)."""
    password = secrets.token_urlsafe(18)
    async with sessions.begin() as session:
        user = await _user(session, email)
        # The same path as an admin's reset through the API: hash, end sessions, tell other instances.
        await users.update_user(session, user.id, users.UserInput(), set(), password=password)
        _audit(session, "system.reset_password", user, {"login_sessions": "revoked"})
    return NewPassword(user.id, user.email, password)


async def _user(session: AsyncSession, email: str) -> User:
    wanted = email.strip().lower()
    user = await session.scalar(select(User).where(func.lower(User.email) == wanted))
    if user is None:
        raise NotFound("user", wanted, f"no user with the e-mail {wanted!r}")
    return user


def _audit(session: AsyncSession, action: str, user: User, details: dict[str, str]) -> None:
    session.add(
        AuditEvent(
            actor_kind="system",
            actor_display=ACTOR,
            action=action,
            resource=f"users/{user.id}",
            outcome="success",
            status_code="OK",
            details=details,
        )
    )
