"""Steam accounts of the pool: their management and their health. Passwords are sealed with the
keyring and never leave this module in clear except towards DepotDownloader's password prompt."""

from __future__ import annotations

import hmac
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.core import idempotency, paging
from wallwhale.core.paging import Page
from wallwhale.core.secretbox import Keyring, Sealed
from wallwhale.db.models import Download, SteamAccount, SteamAccountStatus
from wallwhale.errors import AlreadyExists, InvalidArgument, NotFound
from wallwhale.ids import new_id
from wallwhale.steam.output import AccountEffect, Failure

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


# Health: what the worker learns about an account from its DepotDownloader runs -------------------


async def record_failure(
    session: AsyncSession,
    account_id: str,
    failure: Failure,
    app_id: int,
    now: datetime,
    throttle_cooldown: timedelta,
) -> None:
    """Records what a failed run says about the account: a bad password disables it, throttling
    cools it down, a missing license is remembered per app, a rejected token is forgotten."""
    account = await session.get(SteamAccount, account_id, with_for_update=True)
    if account is None:
        return
    account.downloads_failed += 1
    effect = failure.account_effect
    if effect is AccountEffect.BAD_PASSWORD:
        account.status, account.status_reason = SteamAccountStatus.DISABLED, failure.message[:256]
    elif effect is AccountEffect.THROTTLED:
        account.status, account.status_reason = SteamAccountStatus.COOLING_DOWN, failure.message[:256]
        account.cooldown_end_time = now + throttle_cooldown
    elif effect is AccountEffect.NOT_OWNED:
        account.not_owned_app_ids = sorted({*(account.not_owned_app_ids or []), app_id})
        account.owned_app_ids = [app for app in account.owned_app_ids or [] if app != app_id]
    elif effect is AccountEffect.TOKEN_REJECTED:
        account.has_remembered_login = False


async def another_could_run(session: AsyncSession, account_id: str, app_id: int, download_id: str) -> bool:
    """Whether an account besides this one could run the job (never for a job that asked for one)."""
    if await session.get(SteamAccount, account_id) is None:
        return False
    download = await session.get(Download, download_id)
    if download is not None and download.requested_steam_account_id:
        return False
    others = await session.scalars(
        select(SteamAccount).where(
            SteamAccount.id != account_id,
            SteamAccount.disabled.is_(False),
            SteamAccount.status != SteamAccountStatus.DISABLED,
        )
    )
    return any(app_id not in (other.not_owned_app_ids or []) for other in others)


async def record_success(session: AsyncSession, account_id: str, app_id: int) -> None:
    """A run succeeded: the account's login is remembered, and it owns the app."""
    account = await session.get(SteamAccount, account_id, with_for_update=True)
    if account is not None:
        account.has_remembered_login = True
        if app_id not in (account.owned_app_ids or []):
            account.owned_app_ids = sorted({*(account.owned_app_ids or []), app_id})


async def record_qr_login(session: AsyncSession, account_id: str) -> SteamAccount | None:
    """A QR login succeeded: the login is remembered, and Steam took it just now, so the account is
    no longer disabled for a bad password or cooling down. None when the account was deleted."""
    account = await session.get(SteamAccount, account_id, with_for_update=True)
    if account is None:
        return None
    account.has_remembered_login = True
    account.status, account.status_reason, account.cooldown_end_time = SteamAccountStatus.ACTIVE, "", None
    return account


async def set_status(session: AsyncSession, account_id: str, status: SteamAccountStatus, reason: str) -> None:
    """The account's own health (waiting for Steam Guard, active again); an account the pool
    disabled (a bad password) stays disabled."""
    account = await session.get(SteamAccount, account_id, with_for_update=True)
    if account is not None and account.status is not SteamAccountStatus.DISABLED:
        account.status, account.status_reason = status, reason


async def password_for(session: AsyncSession, account_id: str, keyring: Keyring) -> str | None:
    """The account's password for DepotDownloader's prompt (None: none stored, or no such account)."""
    account = await session.get(SteamAccount, account_id)
    return password_of(account, keyring) if account is not None else None
