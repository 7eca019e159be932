"""Reading DepotDownloader's output: raw chunks in, lines, prompts and a verdict out.

Everything here follows docs/depotdownloader-reference.md (release 3.4.0; "row N" below is a row
of its §2.2 catalogue). The rules that shape this module:

* Prompts end without a newline, so the unfinished tail of each stream is checked for a prompt after
  every chunk; a line reader would wait forever.
* Exit code 0 does not mean success: an unknown item, a refused depot key and "0 depots" all exit 0.
  Success is exit 0, `Total downloaded … from N depots` with N >= 1 (or a web-file item), no failure
  marker, and files on disk (the last part is the caller's to check).
* Lines are for people too (the job's log): control and escape sequences are removed, and the
  caller's job directory is shown relative, so server paths never reach a client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

MAX_LINE_CHARS = 4096  # a longer "line" (garbage without newlines) is cut into pieces


class Stream(StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"


class PromptKind(StrEnum):
    PASSWORD = "PASSWORD"  # noqa: S105 - a prompt kind, not a secret
    AUTHENTICATOR_CODE = "AUTHENTICATOR_CODE"
    EMAIL_CODE = "EMAIL_CODE"
    # Approve in the Steam app: nothing to write to stdin.
    MOBILE_CONFIRMATION = "MOBILE_CONFIRMATION"


class Phase(StrEnum):
    """Values match wallwhale.v1.DownloadPhase without its prefix."""

    STARTING = "STARTING"
    CONNECTING = "CONNECTING"
    LOGGING_IN = "LOGGING_IN"
    FETCHING_MANIFEST = "FETCHING_MANIFEST"
    DOWNLOADING = "DOWNLOADING"
    VALIDATING = "VALIDATING"
    ARCHIVING = "ARCHIVING"
    DONE = "DONE"


@dataclass(frozen=True)
class Line:
    stream: Stream
    text: str


@dataclass(frozen=True)
class Prompt:
    kind: PromptKind
    # The e-mail hint of an e-mail code prompt, or the user name of the password prompt.
    hint: str = ""


# --- chunks -> lines and prompts ----------------------------------------------------------------

_ESCAPES = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

# Prompts are matched against the unfinished tail of a stream (they have no newline).
_PROMPTS: tuple[tuple[Stream, re.Pattern[str], PromptKind], ...] = (
    (Stream.STDOUT, re.compile(r'Enter account password for "(.*)": $'), PromptKind.PASSWORD),  # row 4
    (
        Stream.STDERR,
        re.compile(r"STEAM GUARD! Please enter your 2-factor auth code from your authenticator app: $"),
        PromptKind.AUTHENTICATOR_CODE,
    ),
    (
        Stream.STDERR,
        re.compile(r"STEAM GUARD! Please enter the auth code sent to the email at (.*): $"),
        PromptKind.EMAIL_CODE,
    ),
    # Legacy CM-logon prompts (pre-2.5 flow, kept by 3.4.0 as a fallback).
    (
        Stream.STDOUT,
        re.compile(r"Please enter your 2 factor auth code from your authenticator app: $"),
        PromptKind.AUTHENTICATOR_CODE,
    ),
    (
        Stream.STDOUT,
        re.compile(r"Please enter the authentication code sent to your email address: $"),
        PromptKind.EMAIL_CODE,
    ),
)


def clean(text: str) -> str:
    """A line fit for a log: escape sequences (OSC progress under a PTY) and control bytes removed."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


class OutputReader:
    """Turns raw chunks of both streams into complete lines and prompts, in arrival order."""

    def __init__(self) -> None:
        self._pending: dict[Stream, bytes] = {Stream.STDOUT: b"", Stream.STDERR: b""}

    def feed(self, stream: Stream, data: bytes) -> list[Line | Prompt]:
        buffer = self._pending[stream] + data.replace(b"\r\n", b"\n")
        pieces = re.split(rb"[\n\r]", buffer)
        tail = pieces.pop()
        found: list[Line | Prompt] = [Line(stream, _decode(piece)) for piece in pieces]
        text = _decode(tail)
        for prompt_stream, pattern, kind in _PROMPTS:
            if prompt_stream is stream and (match := pattern.search(text)):
                found.append(Line(stream, text))
                found.append(Prompt(kind, match.group(1) if match.groups() else ""))
                tail = b""
                break
        else:
            while len(tail) > MAX_LINE_CHARS:
                found.append(Line(stream, _decode(tail[:MAX_LINE_CHARS])))
                tail = tail[MAX_LINE_CHARS:]
        self._pending[stream] = tail
        return found

    def finish(self) -> list[Line]:
        """The unfinished last line of each stream, at exit."""
        lines = [Line(stream, _decode(rest)) for stream, rest in self._pending.items() if rest]
        self._pending = {stream: b"" for stream in self._pending}
        return lines


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


# --- lines -> progress, phase and failure markers -----------------------------------------------


class Reason(StrEnum):
    """Values match wallwhale.v1.FailureReason without its prefix."""

    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    STEAM_RATE_LIMITED = "STEAM_RATE_LIMITED"
    APP_NOT_OWNED = "APP_NOT_OWNED"
    ITEM_NOT_FOUND = "ITEM_NOT_FOUND"
    NO_CONTENT = "NO_CONTENT"
    ACCESS_DENIED = "ACCESS_DENIED"
    STEAM_UNAVAILABLE = "STEAM_UNAVAILABLE"
    STEAM_GUARD_TIMEOUT = "STEAM_GUARD_TIMEOUT"
    TIMEOUT = "TIMEOUT"
    STALLED = "STALLED"
    PROCESS_CRASHED = "PROCESS_CRASHED"
    DOWNLOADER_UNAVAILABLE = "DOWNLOADER_UNAVAILABLE"
    NO_FILES = "NO_FILES"
    STORAGE_ERROR = "STORAGE_ERROR"
    UNSUPPORTED_ITEM = "UNSUPPORTED_ITEM"
    NO_ACCOUNT_AVAILABLE = "NO_ACCOUNT_AVAILABLE"
    ATTEMPTS_EXHAUSTED = "ATTEMPTS_EXHAUSTED"
    INTERNAL = "INTERNAL"


# Failures that may pass by themselves: retried automatically, with back-off.
TRANSIENT = frozenset(
    {Reason.STEAM_RATE_LIMITED, Reason.STEAM_UNAVAILABLE, Reason.PROCESS_CRASHED, Reason.STALLED}
)
# Failures no retry can fix (the item itself); everything else may pass once an admin acts.
HOPELESS = frozenset({Reason.ITEM_NOT_FOUND, Reason.UNSUPPORTED_ITEM})


class AccountEffect(StrEnum):
    """What a failure says about the Steam account that ran the job."""

    BAD_PASSWORD = "BAD_PASSWORD"  # noqa: S105 - disable it
    THROTTLED = "THROTTLED"  # cool it down for hours
    NOT_OWNED = "NOT_OWNED"  # it lacks the app
    # The remembered login is gone: log in with the password next time.
    TOKEN_REJECTED = "TOKEN_REJECTED"  # noqa: S105


@dataclass(frozen=True)
class Failure:
    reason: Reason
    message: str
    account_effect: AccountEffect | None = None

    @property
    def transient(self) -> bool:
        return self.reason in TRANSIENT

    @property
    def retryable(self) -> bool:
        return self.reason not in HOPELESS


@dataclass(frozen=True)
class Progress:
    percent: float
    path: str


_PROGRESS = re.compile(r"^\s*(\d{1,3}\.\d{2}|NaN)% (.+)$")  # row 35
_TOTAL = re.compile(r"Total downloaded: (\d+) bytes \((\d+) bytes uncompressed\) from (\d+) depots")  # 38
_AUTH_FAILED = re.compile(r"Failed to authenticate with Steam: (.*)$")
_AUTH_RESULT = re.compile(r"with result (\w+)")
_TOKEN_REJECTED = re.compile(r"Access token was rejected \((\w+)\)")
_CM_LOGON = re.compile(r"Unable to login to Steam3: (\w+)")
_APP_NOT_OWNED = re.compile(r"App (\d+) \((.*)\) is not available from this account\.")
_DEPOT_NOT_OWNED = re.compile(r"Depot (\d+) is not available from this account\.")
_MANIFEST = re.compile(r"^Manifest (\d{1,20}) \(")
_NO_MANIFEST_ID = re.compile(r"Unable to locate manifest ID for published file (\d+)")
_UNSUPPORTED = re.compile(r"Published file (\d+) has unsupported file type (\w+)")
_DEPOT_KEY = re.compile(r"Got depot key for (\d+) result: (\w+)")
_MANIFEST_REFUSED = re.compile(
    r"No manifest request code was returned|Encountered (?:401|403|404) for depot manifest"
)
_CHUNK_REFUSED = re.compile(r"Encountered 40[13] for chunk|Failed to find any server with chunk")
_CHUNK_TROUBLE = re.compile(
    r"Connection timeout downloading chunk|Encountered (?:unexpected )?error downloading chunk"
)
_STORAGE = re.compile(
    r"Failed to allocate file|Failed to resize file|Error: Unable to create install directories"
)
# ENOSPC / EDQUOT as .NET words them: in "Failed to allocate file", or in an unhandled IOException
# when a chunk write runs out of space (the file was pre-allocated sparse).
_DISK_FULL = re.compile(r"No space left on device|Disk quota exceeded")
_UNHANDLED = re.compile(r"Download failed to due to an unhandled exception: (.*)$")
_WEB_FILE = re.compile(r"^Downloading (?!depot )(.+)$")  # row 40: single-file items, no percentages
_NOT_COMPLETE = re.compile(r"App \d+ was not completely downloaded\.")
_CANNOT_CONNECT = re.compile(r"Could not connect to Steam after \d+ tries|Timeout connecting to Steam3")

_THROTTLE_RESULTS = {"RateLimitExceeded", "AccountLoginDeniedThrottle"}
_PASSWORD_RESULTS = {"InvalidPassword", "AccountNotFound", "InvalidName"}

_PHASES: tuple[tuple[re.Pattern[str], Phase], ...] = (
    (re.compile(r"^Connecting to Steam3"), Phase.CONNECTING),  # row 5
    (re.compile(r"^Logging .*into Steam3|^Logging in with QR code"), Phase.LOGGING_IN),  # rows 8-10
    (
        re.compile(r"^Got AppInfo for|^Processing depot|^Downloading depot \d+ manifest|^Manifest \d+ \("),
        Phase.FETCHING_MANIFEST,
    ),  # rows 17, 24, 27, 31
    (re.compile(r"^Downloading depot \d+$|^Pre-allocating "), Phase.DOWNLOADING),  # rows 32-33
    (re.compile(r"^Validating "), Phase.VALIDATING),  # row 34
)


@dataclass
class Transcript:
    """What a run has said so far: phase, best progress, and every marker that decides its outcome."""

    chunk_error_limit: int = 50
    phase: Phase = Phase.STARTING
    percent: float = 0.0
    current_file: str = ""
    depots: int | None = None
    bytes_downloaded: int = 0
    web_file: bool = False
    chunk_errors: int = 0
    crashed: bool = False
    code_rejected: bool = False
    failure: Failure | None = None
    prepared_files: list[str] = field(default_factory=list)
    # Files the run reported complete (a progress line each, also for files already valid): the
    # item as this run knows it. Leftovers of an interrupted run of an older version are not in it.
    completed_files: set[str] = field(default_factory=set)
    # `Manifest <id> (<date>)`: the manifest this run downloads, which is the item's content handle.
    manifest_id: int | None = None

    def observe(self, line: Line) -> list[Phase | Progress]:
        """Records a line; returns the phase change and/or progress it reports (for the job's events)."""
        text = line.text.rstrip()
        changes: list[Phase | Progress] = []
        if match := _PROGRESS.match(text):
            # Parallel workers print out of order and "NaN" appears for empty depots: keep the maximum.
            value = 100.0 if match.group(1) == "NaN" else min(float(match.group(1)), 100.0)
            self.current_file = match.group(2)
            self.completed_files.add(match.group(2))
            if self.phase is not Phase.DOWNLOADING:
                self.phase = Phase.DOWNLOADING
                changes.append(Phase.DOWNLOADING)
            if value >= self.percent:
                self.percent = value
            changes.append(Progress(self.percent, self.current_file))
            return changes
        for pattern, phase in _PHASES:
            if pattern.search(text) and phase is not self.phase:
                self.phase = phase
                changes.append(phase)
                break
        if text.startswith("Pre-allocating "):
            self.prepared_files.append(text.removeprefix("Pre-allocating "))
        elif match := _MANIFEST.match(text):
            self.manifest_id = int(match.group(1))
        if text.startswith("The previous 2-factor auth code you have provided is incorrect"):
            self.code_rejected = True
        self._markers(text)
        return changes

    def _markers(self, text: str) -> None:
        if match := _TOTAL.search(text):
            self.bytes_downloaded = int(match.group(1))
            self.depots = int(match.group(3))
        elif match := _AUTH_FAILED.search(text):
            self._fail(*_login_failure(match.group(1)))
        elif match := _TOKEN_REJECTED.search(text):
            self._fail(
                Reason.STEAM_UNAVAILABLE,
                f"Steam rejected the remembered login ({match.group(1)}); the next attempt logs in "
                "with the password",
                AccountEffect.TOKEN_REJECTED,
            )
        elif match := _CM_LOGON.search(text):
            result = match.group(1)
            if result in _THROTTLE_RESULTS:
                self._fail(
                    Reason.STEAM_RATE_LIMITED, f"Steam refused the login: {result}", AccountEffect.THROTTLED
                )
            else:
                self._fail(Reason.STEAM_UNAVAILABLE, f"Steam refused the login: {result}")
        elif _CANNOT_CONNECT.search(text):
            self._fail(Reason.STEAM_UNAVAILABLE, "Steam could not be reached")
        elif match := _APP_NOT_OWNED.search(text):
            name = f" ({match.group(2)})" if match.group(2) else ""
            self._fail(
                Reason.APP_NOT_OWNED,
                f"the Steam account does not own app {match.group(1)}{name}",
                AccountEffect.NOT_OWNED,
            )
        elif match := _DEPOT_NOT_OWNED.search(text):
            self._fail(
                Reason.APP_NOT_OWNED,
                f"depot {match.group(1)} is not available from the Steam account",
                AccountEffect.NOT_OWNED,
            )
        elif match := _NO_MANIFEST_ID.search(text):
            self._fail(
                Reason.ITEM_NOT_FOUND,
                f"Workshop item {match.group(1)} does not exist, is private or was removed",
            )
        elif match := _UNSUPPORTED.search(text):
            self._fail(
                Reason.UNSUPPORTED_ITEM,
                f"Workshop item {match.group(1)} has the unsupported type {match.group(2)}",
            )
        elif (match := _DEPOT_KEY.search(text)) and match.group(2) != "OK":
            self._fail(
                Reason.ACCESS_DENIED, f"Steam refused the depot key for {match.group(1)}: {match.group(2)}"
            )
        elif "No valid depot key for" in text:
            self._fail(Reason.ACCESS_DENIED, "Steam gave no valid depot key")
        elif _MANIFEST_REFUSED.search(text):
            self._fail(Reason.ACCESS_DENIED, "Steam refused the item's manifest")
        elif _CHUNK_REFUSED.search(text):
            self._fail(Reason.ACCESS_DENIED, "Steam's content servers refused the item's files")
        elif _CHUNK_TROUBLE.search(text):
            self.chunk_errors += 1
        elif _DISK_FULL.search(text):
            self._fail(Reason.STORAGE_ERROR, "the disk is full: DepotDownloader could not write the files")
        elif _STORAGE.search(text):
            self._fail(
                Reason.STORAGE_ERROR, "DepotDownloader could not write the files (disk full or not writable)"
            )
        elif match := _UNHANDLED.search(text):
            detail = match.group(1)
            if "while retrieving file details" in detail:
                # The details call itself failed: the item is hidden from this account, or gone.
                self._fail(Reason.ITEM_NOT_FOUND, f"Steam would not describe the item: {detail[:200]}")
            else:
                self._fail(Reason.PROCESS_CRASHED, f"DepotDownloader failed: {detail[:300]}")
        elif text.startswith("Unhandled exception."):
            self.crashed = True
            self._fail(Reason.PROCESS_CRASHED, f"DepotDownloader crashed: {text[:300]}")
        elif _NOT_COMPLETE.search(text):
            self._fail(Reason.STEAM_UNAVAILABLE, "the download was interrupted before it was complete")
        elif match := _WEB_FILE.match(text):
            self.web_file = True

    def _fail(self, reason: Reason, message: str, effect: AccountEffect | None = None) -> None:
        # The first specific marker wins: later lines ("Unable to get steam3 credentials.") only echo it.
        if self.failure is None:
            self.failure = Failure(reason, message, effect)

    @property
    def too_many_chunk_errors(self) -> bool:
        # The chunk loop retries forever (docs/depotdownloader-reference.md §4.5); past the limit the
        # run is stopped.
        return self.chunk_errors >= self.chunk_error_limit


def _login_failure(detail: str) -> tuple[Reason, str, AccountEffect | None]:
    result_match = _AUTH_RESULT.search(detail)
    result = result_match.group(1) if result_match else ""
    if result in _PASSWORD_RESULTS:
        return (
            Reason.INVALID_CREDENTIALS,
            f"Steam rejected the account's password ({result})",
            AccountEffect.BAD_PASSWORD,
        )
    if result in _THROTTLE_RESULTS:
        return (
            Reason.STEAM_RATE_LIMITED,
            f"Steam throttles logins of this account ({result})",
            AccountEffect.THROTTLED,
        )
    if "No code was provided" in detail:
        return Reason.STEAM_GUARD_TIMEOUT, "no Steam Guard code was provided in time", None
    if "Failed to poll status" in detail:
        return Reason.STEAM_GUARD_TIMEOUT, f"the Steam Guard confirmation was not given ({result})", None
    return Reason.STEAM_UNAVAILABLE, f"Steam login failed: {detail[:200]}", None


def verdict(transcript: Transcript, exit_code: int | None) -> Failure | None:
    """The failure a finished run ended with, or None when DepotDownloader reports success.

    Whether the files are really on disk is checked by the caller.
    """
    if transcript.failure is not None:
        return transcript.failure
    if exit_code in (-6, 134, 3762504530) or transcript.crashed:
        return Failure(Reason.PROCESS_CRASHED, f"DepotDownloader crashed (exit code {exit_code})")
    if exit_code in (-9, -15, 143, -2, 130):
        return Failure(Reason.PROCESS_CRASHED, f"DepotDownloader was killed (exit code {exit_code})")
    if exit_code != 0:
        return Failure(Reason.STEAM_UNAVAILABLE, f"DepotDownloader exited with code {exit_code}")
    if transcript.web_file:
        return None
    if transcript.depots is None:
        return Failure(Reason.NO_CONTENT, "DepotDownloader ended without reporting a download")
    if transcript.depots < 1:
        return Failure(Reason.NO_CONTENT, "DepotDownloader downloaded no depot (from 0 depots)")
    return None
