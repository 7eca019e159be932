"""QR logins of Steam accounts (AdminService.StartQrLogin).

DepotDownloader `-qr` shows a code; an admin scans it with the Steam app; DepotDownloader stores the
refresh token under the account name Steam returns, in the account's private HOME
(docs/depotdownloader-reference.md §5.2), where every later job of the account finds it with
`-username <name> -remember-password`.

    QrLogin   one login: the account's session lease (as a job's claim takes it, so the scheduler
              starts no job on the account meanwhile), one DepotDownloader run through the jobs'
              runner, the codes and the outcome for the caller, the account's state afterwards.

The outcome rests on DepotDownloader's own lines: `Success! Next time you can login with -username
<name> …` (row 11) names the account that scanned, and ` Done!` / `Got N licenses` (rows 9, 15) say
Steam logged it on. Row 11 is printed only when Steam sends new guard data; without it, a second
run as `-username <name> -remember-password` checks that the token is there under the right name
(a password prompt means it is not).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from wallwhale.core import queue, steam_accounts
from wallwhale.db.models import SteamAccount
from wallwhale.errors import FailedPrecondition
from wallwhale.log import get_logger
from wallwhale.steam.output import Line, Prompt, PromptKind
from wallwhale.steam.qr import QrMatrix, QrReader
from wallwhale.steam.runner import RunHooks, Runner, RunRequest, RunResult, StopReason
from wallwhale.steam.workshop import WALLPAPER_ENGINE_APP_ID
from wallwhale.worker.context import WorkerContext

_log = get_logger("wallwhale.qr_login")

# DepotDownloader logs in only inside a download: without -app it stops before connecting ("Error:
# -app not specified!"), and without -pubfile it would fetch the whole app. So the run names the app
# and an item with -manifest-only into a scratch -dir: the cheapest real work (one file-details call;
# for an id that is no item, "Unable to locate manifest ID", exit 0; never any content). Even that is
# not waited for: the token is saved before Steam logs the session on (Steam3Session.cs:513-535), so
# the process is stopped as soon as it has logged on.
_PROBE_ITEM = 1
_SUCCESS = re.compile(r"^Success! Next time you can login with -username (\S+) -remember-password")
_LOGGING_IN = re.compile(r"^Logging '(.*)' into Steam3\.\.\.")
_LICENSES = re.compile(r"^Got \d+ licenses for account!")
_POLL_FAILED = re.compile(r"Failed to poll status with result (\w+)")
_AUTH_FAILED = re.compile(r"Failed to authenticate with Steam: (.*)$")


@dataclass(frozen=True)
class QrCode:
    """A code to scan; it replaces the one before."""

    matrix: QrMatrix


@dataclass(frozen=True)
class QrSucceeded:
    account: SteamAccount


@dataclass(frozen=True)
class QrFailed:
    message: str


QrEvent = QrCode | QrSucceeded | QrFailed


class QrLogin(RunHooks):
    """One QR login. `begin()` takes the account or refuses; `run()` (a task of the dispatcher) runs
    DepotDownloader and ends with one QrSucceeded or QrFailed event, after the lease is released."""

    def __init__(self, context: WorkerContext, account_id: str):
        self.context = context
        self.account_id = account_id
        self.username = ""
        self.events: asyncio.Queue[QrEvent] = asyncio.Queue()
        self.done = asyncio.Event()
        self._login_id = 0
        self._runner: Runner | None = None
        self._stop_reason: StopReason | None = None
        self._reader = QrReader()
        self._codes = 0
        self._scanned_by: str | None = None
        self._logged_on = False
        self._auth_failure = ""

    def stop(self, reason: StopReason) -> None:
        """The caller went away (CANCELLED) or the server stops (SHUTDOWN): DepotDownloader is ended."""
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._runner is not None:
            self._runner.stop(reason)

    async def begin(self, in_use_here: bool) -> None:
        """Takes the account's session lease, unless a DepotDownloader of this instance (`in_use_here`)
        or of another holds it."""
        settings = self.context.settings
        async with self.context.sessions.begin() as session:
            account = await steam_accounts.get_account(session, self.account_id)
            if in_use_here or not await queue.take_account(
                session, account.id, settings.instance_id, self.context.clock(), settings.lease
            ):
                raise FailedPrecondition(
                    f"the Steam account {account.username!r} is in use by a download or another login; "
                    "start the QR login when it is free",
                    reason="STEAM_ACCOUNT_BUSY",
                )
            self.username, self._login_id = account.username, account.login_id

    async def run(self) -> None:
        event: QrEvent | None = QrFailed("the server failed during the QR login; see its log")
        try:
            result = await self._run(self._request(qr=True), self)
            event = await self._outcome(result)
        except Exception:
            _log.exception("QR login failed unexpectedly", account_id=self.account_id)
        finally:
            shutil.rmtree(self._scratch(), ignore_errors=True)
            with contextlib.suppress(Exception):  # if even this fails, the lease runs out by itself
                async with self.context.sessions.begin() as session:
                    await queue.release_account(session, self.account_id, self.context.settings.instance_id)
            # Only now: a caller told "succeeded" may start a job on the account at once.
            if event is not None:
                self.events.put_nowait(event)
            self.done.set()

    async def _run(self, request: RunRequest, hooks: RunHooks) -> RunResult:
        self._runner = Runner(request, hooks)
        if self._stop_reason is not None:
            self._runner.stop(self._stop_reason)
        return await self._runner.run()

    def _scratch(self) -> Path:
        return self.context.settings.homes / self.account_id / "qr-login"

    def _request(self, qr: bool) -> RunRequest:
        settings = self.context.settings
        limit = settings.qr_limit
        return RunRequest(
            executable=settings.executable,
            app_id=WALLPAPER_ENGINE_APP_ID,
            workshop_id=_PROBE_ITEM,
            username=self.username,
            login_id=self._login_id,
            directory=self._scratch(),
            sandbox=settings.sandbox,
            home=settings.homes / self.account_id,
            # The scan is a person's; no output meanwhile is normal.
            time_limit=limit if qr else settings.inactivity_limit,
            inactivity_limit=limit if qr else settings.inactivity_limit,
            guard_limit=limit,
            stop_grace=settings.stop_grace,
            qr=qr,
            manifest_only=True,
        )

    async def _outcome(self, result: RunResult) -> QrEvent | None:
        if result.stopped is StopReason.CANCELLED:
            return None  # nobody is listening
        if result.stopped is StopReason.SHUTDOWN:
            return QrFailed("the server is stopping; start the QR login again")
        scanned = self._scanned_by
        if scanned is not None and scanned.casefold() != self.username.casefold():
            return QrFailed(
                f"the code was scanned by the Steam account {scanned!r}, not {self.username!r}; "
                f"scan it in the Steam app signed in as {self.username!r}"
            )
        if self._logged_on:
            if scanned is None and not await self._verify():
                return QrFailed(
                    f"Steam logged in an account, but no remembered login for {self.username!r} was "
                    "found afterwards: the code was probably scanned by another account"
                )
            account = await self._remember()
            if account is None:
                return QrFailed("the Steam account was deleted during its QR login")
            return QrSucceeded(account)
        return QrFailed(self._why(result))

    def _why(self, result: RunResult) -> str:
        limit = self.context.settings.qr_limit
        if match := _POLL_FAILED.search(self._auth_failure):
            if match.group(1) == "Expired":
                return "the QR code expired before it was scanned (Steam: Expired); start again"
            return f"Steam ended the QR login: {match.group(1)}"
        if self._auth_failure:
            return f"Steam refused the QR login: {self._auth_failure[:200]}"
        if result.stopped in (StopReason.TIMEOUT, StopReason.STALLED):
            if self._scanned_by is not None:
                return f"Steam did not finish the login within {limit:g}s"
            return f"nobody scanned the QR code within {limit:g}s"
        if result.failure is not None and not self._codes:
            return result.failure.message
        if not self._codes:
            return f"DepotDownloader showed no QR code (exit code {result.exit_code})"
        return f"DepotDownloader ended without a login (exit code {result.exit_code})"

    async def _verify(self) -> bool:
        """Whether a run as `-username <name> -remember-password` logs on without a password prompt."""
        check = _Verification(self)
        await self._run(self._request(qr=False), check)
        return check.logged_on and not check.asked_password

    async def _remember(self) -> SteamAccount | None:
        async with self.context.sessions.begin() as session:
            return await steam_accounts.record_qr_login(session, self.account_id)

    # --- runner hooks ----------------------------------------------------------------------------

    async def line(self, line: Line) -> None:
        if (matrix := self._reader.feed(line.text)) is not None:
            self._codes += 1
            self.events.put_nowait(QrCode(matrix))
            return
        text = line.text.strip()
        if match := _SUCCESS.match(text):
            self._scanned_by = match.group(1)
            if self._scanned_by.casefold() != self.username.casefold():
                self.end_run()  # the wrong account: no need to let it log on
        elif (text == "Done!" and self._scanned_by is not None) or (self._codes and _LICENSES.match(text)):
            # A bare " Done!" also follows a reconnect ("Lost connection to Steam. Reconnecting")
            # while the code waits; only after row 11, or as row 15, does it mean logged on.
            self._logged_on = True
            self.end_run()
        elif match := _AUTH_FAILED.search(text):
            self._auth_failure = match.group(1)

    def end_run(self) -> None:
        """The login part is over (logged on, or the wrong account): DepotDownloader is stopped."""
        if self._runner is not None:
            self._runner.stop(StopReason.LOGGED_IN)


class _Verification(RunHooks):
    def __init__(self, login: QrLogin):
        self.login = login
        self.logging_in = False
        self.logged_on = False
        self.asked_password = False

    async def line(self, line: Line) -> None:
        text = line.text.strip()
        if _LOGGING_IN.match(text):
            self.logging_in = True
        elif self.logging_in and (text == "Done!" or _LICENSES.match(text)):
            self.logged_on = True
            self.login.end_run()

    async def answer(self, prompt: Prompt, previous_rejected: bool) -> str | None:
        # A password prompt: no token is stored under this name. No answer ends the run.
        if prompt.kind is PromptKind.PASSWORD:
            self.asked_password = True
        self.login.end_run()
        return None
