"""Users: who may log in, with which role. Passwords are stored only as argon2 hashes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.core import idempotency, passwords
from wallwhale.core.after_commit import after_commit
from wallwhale.core.api_keys import limit_violations
from wallwhale.core.limits import NO_LIMITS, Limits
from wallwhale.core.paging import Page
from wallwhale.core.text import check_display_text, display_text_violations
from wallwhale.db.models import ApiKey, RefreshToken, User, UserRole
from wallwhale.db.notify import Channel, announce
from wallwhale.db.types import utcnow
from wallwhale.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound

_EMAIL_MAX = 320
UPDATABLE = frozenset({"display_name", "role", "disabled", "limits"})


@dataclass(frozen=True)
class UserInput:
    email: str = ""
    display_name: str = ""
    role: UserRole | None = None
    disabled: bool = False
    # The user's own limits; unset ones follow the server's defaults (WALLWHALE_USER_*).
    limits: Limits = NO_LIMITS


def _check_email(email: str, field: str) -> str:
    email = email.strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or len(email) > _EMAIL_MAX or any(c.isspace() for c in email):
        raise InvalidArgument.field(field, "must be an e-mail address")
    return email


def _check_password(password: str, field: str) -> None:
    if len(password) < passwords.MIN_PASSWORD_LENGTH:
        raise InvalidArgument.field(field, f"must be at least {passwords.MIN_PASSWORD_LENGTH} characters")


@dataclass(frozen=True)
class Created:
    user: User
    # The request_id was seen before: this is the user the first call made, nothing new was made.
    repeated: bool = False


async def create_user(
    session: AsyncSession,
    data: UserInput,
    password: str,
    now: datetime,
    request: idempotency.RequestKey = idempotency.NO_REQUEST_ID,
) -> Created:
    """Creates a user, or answers a repeated request_id with the user the first call made. The
    password stays out of the request's fingerprint: a repeat is checked against the stored hash."""
    fingerprint = idempotency.fingerprint(asdict(replace(data, email=data.email.strip().lower())))
    claim = await idempotency.claim(session, request, "CreateUser", fingerprint, now)
    if claim.earlier is not None:
        return Created(await _made_earlier(session, claim.earlier, password), repeated=True)
    violations = []
    try:
        email = _check_email(data.email, "user.email")
    except InvalidArgument as exc:
        violations += exc.violations
    if len(password) < passwords.MIN_PASSWORD_LENGTH:
        violations.append(
            FieldViolation("password", f"must be at least {passwords.MIN_PASSWORD_LENGTH} characters")
        )
    if len(data.display_name) > 128:
        violations.append(FieldViolation("user.display_name", "must be at most 128 characters"))
    violations += display_text_violations(data.display_name, "user.display_name")
    violations += limit_violations(data.limits, "user.limits")
    if violations:
        raise InvalidArgument(violations)
    if await session.scalar(select(User.id).where(User.email == email)):
        raise AlreadyExists(f"a user with the e-mail {email!r} exists already")
    user = User(
        email=email,
        display_name=data.display_name,
        role=data.role or UserRole.USER,
        disabled=data.disabled,
        password_hash=passwords.hash_password(password),
        **asdict(data.limits),
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:  # a concurrent create won the race for the e-mail
        raise AlreadyExists(f"a user with the e-mail {email!r} exists already") from None
    claim.settle(user.id)
    return Created(user)


async def _made_earlier(session: AsyncSession, user_id: str, password: str) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise idempotency.gone("user", user_id)
    if not passwords.verify_password(user.password_hash, password):
        raise idempotency.refused()  # another password (or the user's was changed since)
    return user


async def get_user(session: AsyncSession, user_id: str) -> User:
    user = await session.get(User, user_id) if user_id else None
    if user is None:
        raise NotFound("user", user_id)
    return user


async def list_users(
    session: AsyncSession, page: Page, email_contains: str = "", role: UserRole | None = None
) -> tuple[list[User], int]:
    query = select(User)
    if email_contains:
        query = query.where(User.email.contains(email_contains.strip().lower(), autoescape=True))
    if role is not None:
        query = query.where(User.role == role)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = await session.scalars(
        query.order_by(User.create_time, User.id).offset(page.offset).limit(page.size)
    )
    return list(rows), total


async def update_user(
    session: AsyncSession, user_id: str, data: UserInput, fields: set[str], password: str = ""
) -> User:
    unknown = fields - UPDATABLE
    if unknown:
        raise InvalidArgument.field("update_mask", f"cannot change {', '.join(sorted(unknown))}")
    if password:
        _check_password(password, "password")
    user = await get_user(session, user_id)
    demoting = "role" in fields and data.role is UserRole.USER
    disabling = "disabled" in fields and data.disabled
    if (demoting or disabling) and await _is_last_active_admin(session, user):
        field = "user.role" if demoting else "user.disabled"
        raise InvalidArgument.field(field, "the last active admin cannot be demoted or disabled")
    if "display_name" in fields:
        if len(data.display_name) > 128:
            raise InvalidArgument.field("user.display_name", "must be at most 128 characters")
        check_display_text(data.display_name, "user.display_name")
        user.display_name = data.display_name
    if "role" in fields:
        if data.role is None:
            raise InvalidArgument.field("user.role", "must be USER_ROLE_ADMIN or USER_ROLE_USER")
        user.role = data.role
    if "disabled" in fields:
        user.disabled = data.disabled
    if "limits" in fields:
        # Tighter than some of the user's keys is fine: every call takes the tighter of the two.
        if violations := limit_violations(data.limits, "user.limits"):
            raise InvalidArgument(violations)
        for name, value in asdict(data.limits).items():
            setattr(user, name, value)
    if password:
        user.password_hash = passwords.hash_password(password)
    if password or ("disabled" in fields and data.disabled):
        # Every session ends (kept, marked revoked), and access tokens issued until now are refused.
        now = utcnow()
        user.credentials_changed_time = now
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user.id, RefreshToken.revoke_time.is_(None))
            .values(revoke_time=now)
        )
    await session.flush()
    await announce(session, Channel.CREDENTIALS)  # cached principals are forgotten everywhere
    after_commit(session).forget_principals()
    return user


async def delete_user(session: AsyncSession, user_id: str, acting_user_id: str) -> None:
    user = await get_user(session, user_id)
    if user.id == acting_user_id:
        raise InvalidArgument.field("id", "you cannot delete yourself")
    if await _is_last_active_admin(session, user):
        raise InvalidArgument.field("id", "the last active admin cannot be deleted")
    await session.execute(delete(ApiKey).where(ApiKey.owner_user_id == user.id))
    await session.delete(user)
    await announce(session, Channel.CREDENTIALS)  # cached principals are forgotten everywhere
    after_commit(session).forget_principals()


async def _is_last_active_admin(session: AsyncSession, user: User) -> bool:
    """True when `user` is an enabled admin and no other is: removing it would lock everyone out.

    The other admins' rows are locked (PostgreSQL; SQLite writers are serialised anyway), so two
    admins demoting each other at once cannot both succeed.
    """
    if user.role is not UserRole.ADMIN or user.disabled:
        return False
    others = await session.scalars(
        select(User.id)
        .where(User.role == UserRole.ADMIN, User.disabled.is_(False), User.id != user.id)
        .with_for_update()
    )
    return not others.first()
