"""API keys: the key material (a core.tokens token with the prefix "ww_", stored as its hash, its
first characters kept in clear so people can tell keys apart in a list) and their management."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.core import idempotency
from wallwhale.core.after_commit import after_commit
from wallwhale.core.limits import NO_LIMITS, Limits
from wallwhale.core.paging import Page
from wallwhale.core.scopes import PRIORITY_SCOPE, check_grantable
from wallwhale.core.text import display_text_violations
from wallwhale.core.tokens import is_token, new_token, token_hash
from wallwhale.db.models import ApiKey, User
from wallwhale.db.notify import Channel, announce
from wallwhale.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound

KEY_PREFIX = "ww_"
_VISIBLE_LENGTH = len(KEY_PREFIX) + 6

SCOPES = frozenset(
    {
        *("download:read", "download:write", "download:*", PRIORITY_SCOPE),
        *("admin:read", "admin:write", "admin:*"),
        *("watch:read", "watch:write", "watch:*"),
        *("webhook:read", "webhook:write", "webhook:*"),
    }
)


def generate_key() -> str:
    return new_token(KEY_PREFIX)


def hash_key(key: str) -> str:
    return token_hash(key)


def visible_prefix(key: str) -> str:
    return key[:_VISIBLE_LENGTH]


def looks_like_key(value: str) -> bool:
    return is_token(value, KEY_PREFIX)


# Managing keys -------------------------------------------------------------------------------

UPDATABLE = frozenset({"name", "scopes", "limits", "expire_time", "disabled"})


@dataclass(frozen=True)
class KeyInput:
    name: str = ""
    owner_user_id: str = ""
    scopes: tuple[str, ...] = ()
    limits: Limits = NO_LIMITS
    expire_time: datetime | None = None
    disabled: bool = False


def _violations(data: KeyInput, fields: set[str], now: datetime) -> list[FieldViolation]:
    found = []
    if "name" in fields and not 1 <= len(data.name.strip()) <= 128:
        found.append(FieldViolation("api_key.name", "must be 1 to 128 characters"))
    if "name" in fields:
        found += display_text_violations(data.name, "api_key.name")
    if "scopes" in fields:
        if not data.scopes:
            found.append(FieldViolation("api_key.scopes", "must name at least one scope"))
        for scope in sorted(set(data.scopes) - SCOPES):
            found.append(
                FieldViolation(
                    "api_key.scopes", f"unknown scope {scope!r}; known: {', '.join(sorted(SCOPES))}"
                )
            )
    if "limits" in fields:
        found += limit_violations(data.limits, "api_key.limits")
    if "expire_time" in fields and data.expire_time is not None and data.expire_time <= now:
        found.append(FieldViolation("api_key.expire_time", "must be in the future"))
    return found


def limit_violations(limits: Limits, prefix: str) -> list[FieldViolation]:
    """Negative limits (a key's or a user's), each named by its field."""
    return [
        FieldViolation(
            f"{prefix}.{'max_runtime' if name == 'max_runtime_seconds' else name}", "must not be negative"
        )
        for name, value in asdict(limits).items()
        if value is not None and value < 0
    ]


def check_within_owner(limits: Limits, owner: User, user_defaults: Limits) -> None:
    """Refuses a key's limits that are looser than its owner's (the owner's own over the server's
    defaults): INVALID_ARGUMENT naming each such field. Unset limits pass: the owner's bind them."""
    violations = limits.violations_beyond(Limits.of(owner).over(user_defaults), "api_key.limits")
    if violations:
        raise InvalidArgument(violations)


@dataclass(frozen=True)
class Created:
    row: ApiKey
    # The key itself, never stored; None when the request_id was seen before: the key the first call
    # made is answered, and its plaintext cannot be shown again.
    plaintext: str | None

    @property
    def repeated(self) -> bool:
        return self.plaintext is None


async def create_api_key(
    session: AsyncSession,
    data: KeyInput,
    now: datetime,
    granter_scopes: Iterable[str],
    request: idempotency.RequestKey = idempotency.NO_REQUEST_ID,
    user_defaults: Limits = NO_LIMITS,
) -> Created:
    """Creates a key, or answers a repeated request_id with the key the first call made.
    `granter_scopes`: the caller's own, which the key's scopes may not exceed (nor its owner's role)."""
    fingerprint = idempotency.fingerprint(asdict(data))
    claim = await idempotency.claim(session, request, "CreateApiKey", fingerprint, now)
    if claim.earlier is not None:
        row = await session.get(ApiKey, claim.earlier)
        if row is None:
            raise idempotency.gone("api key", claim.earlier)
        return Created(row, None)
    violations = _violations(data, {"name", "scopes", "limits", "expire_time"}, now)
    if violations:
        raise InvalidArgument(violations)
    owner = await session.get(User, data.owner_user_id)
    if owner is None:
        raise InvalidArgument.field("api_key.owner_user_id", "no such user")
    check_grantable(data.scopes, owner.role, granter_scopes)
    check_within_owner(data.limits, owner, user_defaults)
    key = generate_key()
    row = ApiKey(
        name=data.name.strip(),
        owner_user_id=data.owner_user_id,
        prefix=visible_prefix(key),
        key_hash=hash_key(key),
        scopes=sorted(set(data.scopes)),
        expire_time=data.expire_time,
        disabled=data.disabled,
        **asdict(data.limits),
    )
    session.add(row)
    await session.flush()
    claim.settle(row.id)
    return Created(row, key)


async def get_api_key(session: AsyncSession, key_id: str) -> ApiKey:
    row = await session.get(ApiKey, key_id) if key_id else None
    if row is None:
        raise NotFound("api key", key_id)
    return row


async def list_api_keys(
    session: AsyncSession, page: Page, owner_user_id: str = "", include_revoked: bool = False
) -> tuple[list[ApiKey], int]:
    query = select(ApiKey)
    if owner_user_id:
        query = query.where(ApiKey.owner_user_id == owner_user_id)
    if not include_revoked:
        query = query.where(ApiKey.revoke_time.is_(None))
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = await session.scalars(
        query.order_by(ApiKey.create_time, ApiKey.id).offset(page.offset).limit(page.size)
    )
    return list(rows), total


async def update_api_key(
    session: AsyncSession,
    key_id: str,
    data: KeyInput,
    fields: set[str],
    now: datetime,
    granter_scopes: Iterable[str],
    user_defaults: Limits = NO_LIMITS,
) -> ApiKey:
    unknown = fields - UPDATABLE
    if unknown:
        raise InvalidArgument.field("update_mask", f"cannot change {', '.join(sorted(unknown))}")
    violations = _violations(data, fields, now)
    if violations:
        raise InvalidArgument(violations)
    row = await get_api_key(session, key_id)
    if row.revoke_time is not None:
        raise FailedPrecondition("a revoked key cannot be changed")
    if "name" in fields:
        row.name = data.name.strip()
    if "scopes" in fields:
        check_grantable(data.scopes, row.owner.role, granter_scopes)
        row.scopes = sorted(set(data.scopes))
    if "limits" in fields:
        check_within_owner(data.limits, row.owner, user_defaults)
        for name, value in asdict(data.limits).items():
            setattr(row, name, value)
    if "expire_time" in fields:
        row.expire_time = data.expire_time
    if "disabled" in fields:
        row.disabled = data.disabled
    await session.flush()
    await announce(session, Channel.CREDENTIALS)  # cached principals are forgotten everywhere
    after_commit(session).forget_principals()
    return row


async def revoke_api_key(session: AsyncSession, key_id: str, now: datetime) -> ApiKey:
    row = await get_api_key(session, key_id)
    if row.revoke_time is None:
        row.revoke_time = now
        await session.flush()
        await announce(session, Channel.CREDENTIALS)  # cached principals are forgotten everywhere
        after_commit(session).forget_principals()
    return row
