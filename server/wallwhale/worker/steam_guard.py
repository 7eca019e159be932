"""Steam Guard answers from admins, for a DepotDownloader that waits at a code prompt.

The code goes to the instance running the job: straight into its waiting prompt (GuardCodes) when
that is this instance, otherwise sealed with the keyring (which every instance shares) in a
PostgreSQL notification, so it is never stored and never readable in the database's logs.
"""

from __future__ import annotations

import asyncio
import base64
import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.core.secretbox import Keyring, Sealed
from wallwhale.db.models import Download, DownloadState, GuardKind
from wallwhale.errors import FailedPrecondition, InvalidArgument

_CODE = re.compile(r"^[A-Za-z0-9]{5,8}$")
CODE_KINDS = frozenset({GuardKind.AUTHENTICATOR_CODE, GuardKind.EMAIL_CODE})


def check_code(code: str) -> str:
    code = code.strip()
    if not _CODE.match(code):
        raise InvalidArgument.field(
            "code", "must be the 5 to 8 letters or digits from the authenticator or e-mail"
        )
    return code


async def waiting_download(session: AsyncSession, account_id: str) -> Download:
    """The job whose DepotDownloader waits for a code of this account, or FAILED_PRECONDITION."""
    waiting = await session.scalar(
        select(Download).where(
            Download.steam_account_id == account_id, Download.state == DownloadState.WAITING_FOR_STEAM_GUARD
        )
    )
    if waiting is None:
        raise FailedPrecondition(
            "no login of this account waits for a Steam Guard code", reason="NO_STEAM_GUARD_PENDING"
        )
    if waiting.guard_kind not in CODE_KINDS:
        raise FailedPrecondition(
            "this login waits for an approval in the Steam mobile app, not for a code",
            reason="NO_STEAM_GUARD_PENDING",
        )
    return waiting


def seal(keyring: Keyring, account_id: str, code: str) -> str:
    sealed = keyring.seal(code, bound_to=f"steam-guard:{account_id}")
    return f"{account_id}:{sealed.key_id}:{base64.b64encode(sealed.ciphertext).decode()}"


def unseal(keyring: Keyring, payload: str) -> tuple[str, str]:
    account_id, key_id, ciphertext = payload.split(":", 2)
    code = keyring.open(Sealed(base64.b64decode(ciphertext), key_id), bound_to=f"steam-guard:{account_id}")
    return account_id, code


class GuardCodes:
    """Steam Guard codes waiting to be written to a DepotDownloader of this instance, by account."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Queue[str]] = {}

    def open(self, account_id: str) -> None:
        """Accept codes for this account from now on: before the job is shown as waiting, so a code
        sent the moment it is visible (or between a rejected code and the next prompt) is kept."""
        self._waiting.setdefault(account_id, asyncio.Queue(1))

    def close(self, account_id: str) -> None:
        self._waiting.pop(account_id, None)

    async def wait(self, account_id: str, limit: float) -> str | None:
        box = self._waiting.setdefault(account_id, asyncio.Queue(1))
        try:
            return await asyncio.wait_for(box.get(), limit)
        except TimeoutError:
            return None

    def submit(self, account_id: str, code: str) -> bool:
        box = self._waiting.get(account_id)
        if box is None or box.full():
            return False
        box.put_nowait(code)
        return True
