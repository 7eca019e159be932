"""Steam accounts of the pool. Passwords are sealed with the keyring and never leave this module
in clear except towards DepotDownloader's password prompt."""

from __future__ import annotations

import hmac
import re
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.core import idempotency, paging
from wallwhale.core.errors import AlreadyExists, InvalidArgument, NotFound
from wallwhale.core.paging import Page
from wallwhale.core.secretbox import Keyring, Sealed
from wallwhale.db.models import SteamAccount, SteamAccountStatus
from wallwhale.ids import new_id

_USERNAME = re.compile(r"^[A-Za-z0-9_]{2,64}$")
# DepotDownloader's default -loginid is 0x534B32; ours start elsewhere and are distinct per account.
_FIRST_LOGIN_ID = 0x57570000
UPDATABLE = frozenset({"display_name", "disabled", "owned_app_ids"})


@dataclass(frozen=True)
class AccountInput:
    username: str = ""
    display_name: str = ""
    disabled: bool = False
    owned_app_ids: tuple[int, ...] = ()


def _seal(account: SteamAccount, password: str, keyring: Keyring) -> None:
    sealed = keyring.seal(password, bound_to=account.id)
    account.encrypted_password, account.encryption_key_id = sealed.ciphertext, sealed.key_id


def password_of(account: SteamAccount, keyring: Keyring) -> str | None:
    if account.encrypted_password is None or account.encryption_key_id is None:
        return None
    return keyring.open(Sealed(account.encrypted_password, account.encryption_key_id), bound_to=account.id)


@dataclass(frozen=True)
class Created:
    account: SteamAccount
    # The request_id was seen before: this is the account the first call made, nothing new was made.
    repeated: bool = False


async def create_account(
    session: AsyncSession,
    data: AccountInput,
    password: str,
    keyring: Keyring,
    now: datetime,
    request: idempotency.RequestKey = idempotency.NO_REQUEST_ID,
) -> Created:
    """Adds an account, or answers a repeated request_id with the account the first call made. The
    password stays out of the request's fingerprint: a repeat is checked against the sealed one."""
    fingerprint = idempotency.fingerprint(asdict(data))
    claim = await idempotency.claim(session, request, "CreateSteamAccount", fingerprint, now)
    if claim.earlier is not None:
        return Created(await _made_earlier(session, claim.earlier, password, keyring), repeated=True)
    if not _USERNAME.match(data.username):
        raise InvalidArgument.field(
            "steam_account.username", "must be 2 to 64 letters, digits or underscores"
        )
    if len(password) > 256:
        raise InvalidArgument.field("password", "must be at most 256 characters")
    if await session.scalar(
        select(SteamAccount.id).where(func.lower(SteamAccount.username) == data.username.lower())
    ):
        raise AlreadyExists(f"the Steam account {data.username!r} exists already")
    highest = await session.scalar(select(func.max(SteamAccount.login_id)))
    account = SteamAccount(
        id=new_id(),
        username=data.username,
        display_name=data.display_name,
        disabled=data.disabled,
        owned_app_ids=sorted(set(data.owned_app_ids)),
        login_id=max(highest or 0, _FIRST_LOGIN_ID - 1) + 1,
        status=SteamAccountStatus.ACTIVE,
    )
    if password:
        _seal(account, password, keyring)
    session.add(account)
    await session.flush()
    claim.settle(account.id)
    return Created(account)


async def _made_earlier(
    session: AsyncSession, account_id: str, password: str, keyring: Keyring
) -> SteamAccount:
    account = await session.get(SteamAccount, account_id)
    if account is None:
        raise idempotency.gone("steam account", account_id)
    if not hmac.compare_digest((password_of(account, keyring) or "").encode(), password.encode()):
        raise idempotency.refused()  # another password (or the account's was changed since)
    return account


async def get_account(session: AsyncSession, account_id: str) -> SteamAccount:
    account = await session.get(SteamAccount, account_id) if account_id else None
    if account is None:
        raise NotFound("steam account", account_id)
    return account


async def list_accounts(
    session: AsyncSession, page: Page, statuses: tuple[SteamAccountStatus, ...] = ()
) -> tuple[list[SteamAccount], int]:
    query = select(SteamAccount)
    if statuses:
        # As shown: an account an admin disabled is DISABLED whatever its own health says.
        shown = [
            SteamAccount.disabled.is_(True) | (SteamAccount.status == status)
            if status is SteamAccountStatus.DISABLED
            else (SteamAccount.status == status) & SteamAccount.disabled.is_(False)
            for status in statuses
        ]
        query = query.where(or_(*shown))
    return await paging.fetch(session, query, page, SteamAccount.create_time, SteamAccount.id)


async def update_account(
    session: AsyncSession,
    account_id: str,
    data: AccountInput,
    fields: set[str],
    password: str,
    keyring: Keyring,
) -> SteamAccount:
    unknown = fields - UPDATABLE
    if unknown:
        raise InvalidArgument.field("update_mask", f"cannot change {', '.join(sorted(unknown))}")
    account = await get_account(session, account_id)
    if "display_name" in fields:
        account.display_name = data.display_name
    if "disabled" in fields:
        account.disabled = data.disabled
    if "owned_app_ids" in fields:
        account.owned_app_ids = sorted(set(data.owned_app_ids))
    if password:
        _seal(account, password, keyring)
        account.has_remembered_login = False  # a new password means a new login
    await session.flush()
    return account


async def delete_account(session: AsyncSession, account_id: str) -> None:
    await session.delete(await get_account(session, account_id))


async def rotate_passwords(session: AsyncSession, keyring: Keyring) -> int:
    """Re-seals every password not under the current key; returns how many were re-sealed."""
    stale = await session.scalars(
        select(SteamAccount).where(
            SteamAccount.encrypted_password.is_not(None), SteamAccount.encryption_key_id != keyring.current_id
        )
    )
    count = 0
    for account in stale:
        password = password_of(account, keyring)
        if password is not None:
            _seal(account, password, keyring)
            count += 1
    await session.flush()
    return count
