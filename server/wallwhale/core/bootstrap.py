"""The first admin of an empty installation: a user and an API key, shown once, stored hashed."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core import api_keys, passwords
from wallwhale.core.scopes import PRIORITY_SCOPE
from wallwhale.db.models import ApiKey, AuditEvent, User, UserRole
from wallwhale.errors import AlreadyExists, InvalidArgument

BOOTSTRAP_SCOPES = ["admin:*", "download:*", "watch:*", "webhook:*", PRIORITY_SCOPE]


@dataclass(frozen=True)
class BootstrapResult:
    user_id: str
    email: str
    password: str
    api_key: str
    api_key_id: str


async def bootstrap_admin(
    sessions: async_sessionmaker[AsyncSession], email: str, password: str | None = None
) -> BootstrapResult:
    """Creates the first admin user and an admin API key; refuses once any user exists."""
    email = email.strip().lower()
    if "@" not in email:
        raise InvalidArgument.field("email", "must be an e-mail address")
    if password is not None and len(password) < passwords.MIN_PASSWORD_LENGTH:
        raise InvalidArgument.field(
            "password", f"must be at least {passwords.MIN_PASSWORD_LENGTH} characters"
        )
    password = password or secrets.token_urlsafe(18)
    key = api_keys.generate_key()
    async with sessions.begin() as session:
        # Checked inside the transaction that inserts, so two racing bootstraps cannot both win
        # on PostgreSQL (the unique email stops the second) and SQLite serialises writers.
        if await session.scalar(select(func.count()).select_from(User)):
            raise AlreadyExists("the database already has users; bootstrap runs only on an empty one")
        user = User(
            email=email,
            display_name="Administrator",
            role=UserRole.ADMIN,
            password_hash=passwords.hash_password(password),
        )
        session.add(user)
        await session.flush()
        api_key = ApiKey(
            name="bootstrap admin key",
            owner_user_id=user.id,
            prefix=api_keys.visible_prefix(key),
            key_hash=api_keys.hash_key(key),
            scopes=list(BOOTSTRAP_SCOPES),
        )
        session.add(api_key)
        await session.flush()
        session.add(
            AuditEvent(
                actor_kind="system",
                actor_display="wallwhale bootstrap",
                action="system.bootstrap",
                resource=f"users/{user.id}",
                outcome="success",
                status_code="OK",
                details={"api_key_id": api_key.id, "api_key_prefix": api_key.prefix},
            )
        )
    return BootstrapResult(user.id, email, password, key, api_key.id)


async def has_users(session: AsyncSession) -> bool:
    return bool(await session.scalar(select(func.count()).select_from(User)))
