"""Runs DepotDownloader for one workshop item, as docs/depotdownloader-reference.md prescribes.

* argv is a list (no shell) with validated numbers; the password never goes on it: it is written to
  stdin when the prompt appears, and only then (a pre-written answer would be read as a Steam Guard code).
* Each Steam account has a private HOME, where DepotDownloader keeps its remembered login; the child
  gets a minimal environment and the job's own directory as its cwd and -dir.
* Both pipes are drained as raw chunks; prompts have no newline.
* Limits: an overall time limit, an inactivity limit (the chunk and manifest loops retry forever), a
  limit on chunk errors, and a limit on how long a Steam Guard prompt may wait for a person.
* Stopping sends SIGTERM to the process group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from wallwhale.log import get_logger
from wallwhale.steam import output
from wallwhale.steam.depotdownloader import minimal_environment, resolve
from wallwhale.steam.output import Failure, Line, Phase, Progress, Prompt, PromptKind, Reason
from wallwhale.steam.sandbox import UNCONFINED, Sandbox

_MOBILE_CONFIRMATION = "STEAM GUARD! Use the Steam Mobile App to confirm your sign in"
_READ_SIZE = 64 * 1024
# Clients see this; the configured path (a server detail) is in the status service for admins.
_NOT_FOUND = "DepotDownloader was not found where the server is configured to run it (see GetStatus)"
_log = get_logger("wallwhale.runner")


@functools.cache
def _death_pact() -> tuple[str, ...]:
    """A prefix that makes the child die with the server (Linux PR_SET_PDEATHSIG via util-linux's
    setpriv), so a killed server leaves no DepotDownloader racing the instance that takes the job
    over (same -dir, same account session). Setting it ourselves between fork and exec (preexec_fn)
    is not safe in a threaded process. Where setpriv is missing, children are started as they are."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    try:
        subprocess.run(
            [setpriv, "--pdeathsig", "KILL", "--", "true"], check=True, capture_output=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return (setpriv, "--pdeathsig", "KILL", "--")


class StopReason(StrEnum):
    CANCELLED = "CANCELLED"  # a caller cancelled the job
    LEASE_LOST = "LEASE_LOST"  # another instance owns the job now
    SHUTDOWN = "SHUTDOWN"  # this server is stopping; the job goes back to the queue
    TIMEOUT = "TIMEOUT"
    STALLED = "STALLED"
    STEAM_GUARD_TIMEOUT = "STEAM_GUARD_TIMEOUT"
    LOGGED_IN = "LOGGED_IN"  # a login-only run (QR) has what it came for: the remembered login


_STOP_FAILURES = {
    StopReason.TIMEOUT: Reason.TIMEOUT,
    StopReason.STALLED: Reason.STALLED,
    StopReason.STEAM_GUARD_TIMEOUT: Reason.STEAM_GUARD_TIMEOUT,
}


@dataclass(frozen=True)
class RunRequest:
    executable: Path
    app_id: int
    workshop_id: int
    username: str
    login_id: int
    directory: Path
    home: Path
    time_limit: float
    inactivity_limit: float
    guard_limit: float
    stop_grace: float
    chunk_error_limit: int = 50
    # Log in by QR code (-qr, no -username) instead of as `username` with its remembered login.
    qr: bool = False
    # Fetch the item's file list only (docs/depotdownloader-reference.md §1.2), no content.
    manifest_only: bool = False
    # Where the run may write: its directory and home only (steam.sandbox).
    sandbox: Sandbox = UNCONFINED

    def argv(self) -> list[str]:
        # Values are validated numbers and a username the admin API checked; -dir is ours, absolute.
        # -remember-password with -qr asks Steam for a long-lived token
        # (docs/depotdownloader-reference.md §5.2).
        login = ["-qr"] if self.qr else ["-username", self.username]
        return [
            str(self.executable),
            "-app",
            str(self.app_id),
            "-pubfile",
            str(self.workshop_id),
            *login,
            "-remember-password",
            *(["-manifest-only"] if self.manifest_only else []),
            "-dir",
            str(self.directory),
            "-loginid",
            str(self.login_id),
        ]

    def environment(self) -> dict[str, str]:
        return minimal_environment(self.home)


class RunHooks:
    """What the runner tells its job, and asks it. Subclassed by the worker (worker.job, worker.qr_login)."""

    async def line(self, line: Line) -> None:
        """A cleaned line of output (secrets removed, job directory shown relative)."""

    async def changes(self, changes: list[Phase | Progress]) -> None:
        """Phase changes and progress."""

    async def answer(self, prompt: Prompt, previous_rejected: bool) -> str | None:
        """The answer to a prompt (a password or a Steam Guard code), or None for none.

        For a mobile confirmation the return value is ignored; the call says that a person must act.
        """
        return None

    async def resumed(self) -> None:
        """DepotDownloader went on after a prompt (the code or the confirmation was accepted)."""


@dataclass
class RunResult:
    exit_code: int | None
    failure: Failure | None
    transcript: output.Transcript
    stopped: StopReason | None = None
    duration: float = 0.0


@dataclass
class _Run:
    request: RunRequest
    hooks: RunHooks
    process: asyncio.subprocess.Process
    transcript: output.Transcript
    reader: output.OutputReader = field(default_factory=output.OutputReader)
    secrets: set[str] = field(default_factory=set)
    last_output: float = field(default_factory=time.monotonic)
    waiting_since: float | None = None
    stop_reason: StopReason | None = None
    override: Failure | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    prompt_tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Runner:
    """One DepotDownloader process. `run()` returns when it has exited; `stop()` ends it early."""

    def __init__(self, request: RunRequest, hooks: RunHooks):
        self.request = request
        self.hooks = hooks
        self._stop = asyncio.Event()
        self._stop_reason: StopReason | None = None
        self.pid: int | None = None

    def stop(self, reason: StopReason) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop.set()

    async def run(self) -> RunResult:
        started = time.monotonic()
        transcript = output.Transcript(chunk_error_limit=self.request.chunk_error_limit)
        executable = resolve(self.request.executable)
        if executable is None:
            return RunResult(None, _unavailable(_NOT_FOUND), transcript)
        for private in (self.request.home, self.request.home / "tmp"):
            private.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.request.directory.mkdir(parents=True, exist_ok=True)
        if self._stop.is_set():
            return RunResult(None, None, transcript, self._stop_reason)
        try:
            argv = self.request.sandbox.wrap(
                [str(executable), *self.request.argv()[1:]], self.request.directory, self.request.home
            )
            process = await asyncio.create_subprocess_exec(
                *_death_pact(),
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.request.directory,
                env=self.request.environment(),
                start_new_session=True,  # its own process group, so a stop reaches its children too
            )
        except OSError as exc:
            return RunResult(
                None, _unavailable(f"DepotDownloader cannot be started: {exc.strerror or exc}"), transcript
            )
        self.pid = process.pid
        run = _Run(self.request, self.hooks, process, transcript)
        readers = [
            asyncio.create_task(self._drain(run, process.stdout, output.Stream.STDOUT)),
            asyncio.create_task(self._drain(run, process.stderr, output.Stream.STDERR)),
        ]
        watchdog = asyncio.create_task(self._watch(run, started))
        try:
            exit_code = await process.wait()
            await asyncio.gather(*readers)
        finally:
            watchdog.cancel()
            for task in (*readers, *run.prompt_tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(watchdog, *readers, *run.prompt_tasks, return_exceptions=True)
            if process.returncode is None:  # we were cancelled ourselves: leave nothing behind
                await _terminate(process, self.request.stop_grace)
        for line in run.reader.finish():
            await self._line(run, line)
        failure = run.override or (None if run.stop_reason else output.verdict(transcript, exit_code))
        if run.stop_reason in _STOP_FAILURES and run.override is None:
            failure = Failure(_STOP_FAILURES[run.stop_reason], _stop_message(run.stop_reason, self.request))
        return RunResult(exit_code, failure, transcript, run.stop_reason, time.monotonic() - started)

    async def _drain(self, run: _Run, pipe: asyncio.StreamReader | None, stream: output.Stream) -> None:
        assert pipe is not None
        while chunk := await pipe.read(_READ_SIZE):
            run.last_output = time.monotonic()
            async with run.lock:  # one chunk at a time, so lines keep their order and the transcript agrees
                for item in run.reader.feed(stream, chunk):
                    try:
                        if isinstance(item, Prompt):
                            self._prompt(run, item)
                        else:
                            await self._line(run, item)
                    except Exception:
                        # A hook's failure (e.g. the database) must not stop the draining: a pipe
                        # nobody reads fills up and blocks DepotDownloader.
                        _log.exception("handling DepotDownloader output failed")

    async def _line(self, run: _Run, line: Line) -> None:
        text = output.clean(line.text)
        for secret in run.secrets:
            text = text.replace(secret, "***")
        text = text.replace(str(run.request.directory) + os.sep, "")
        line = Line(line.stream, text)
        changes = run.transcript.observe(line)
        # After a prompt, output means the login went on, unless it says the code was wrong (the
        # prompt comes again) or the login failed.
        if (
            run.waiting_since is not None
            and text.strip()
            and not text.startswith("STEAM GUARD!")
            and not run.transcript.code_rejected
            and run.transcript.failure is None
        ):
            run.waiting_since = None
            await run.hooks.resumed()
        await run.hooks.line(line)
        if changes:
            await run.hooks.changes(changes)
        if text.startswith(_MOBILE_CONFIRMATION):
            self._prompt(run, Prompt(PromptKind.MOBILE_CONFIRMATION))
        if run.transcript.too_many_chunk_errors and run.stop_reason is None:
            run.override = Failure(
                Reason.STALLED,
                f"Steam's content servers failed {run.transcript.chunk_errors} times; download stopped",
            )
            self._end(run, StopReason.STALLED)

    def _prompt(self, run: _Run, prompt: Prompt) -> None:
        previous_rejected = run.transcript.code_rejected
        run.transcript.code_rejected = False
        if prompt.kind is not PromptKind.PASSWORD:
            run.waiting_since = time.monotonic()
        task = asyncio.create_task(self._answer(run, prompt, previous_rejected))
        run.prompt_tasks.add(task)
        task.add_done_callback(run.prompt_tasks.discard)

    async def _answer(self, run: _Run, prompt: Prompt, previous_rejected: bool) -> None:
        answer = await run.hooks.answer(prompt, previous_rejected)
        if prompt.kind is PromptKind.MOBILE_CONFIRMATION:
            return
        stdin = run.process.stdin
        if stdin is None or stdin.is_closing():
            return
        if not answer:
            # EOF aborts the login (docs/depotdownloader-reference.md §3): DepotDownloader reports it
            # and exits.
            if prompt.kind is PromptKind.PASSWORD:
                run.override = Failure(
                    Reason.INVALID_CREDENTIALS,
                    "the account has no stored password and no remembered login; set its password",
                    output.AccountEffect.BAD_PASSWORD,
                )
            stdin.close()
            return
        run.secrets.add(answer)
        with contextlib.suppress(ConnectionError):
            stdin.write(answer.encode() + b"\n")
            await stdin.drain()
        if prompt.kind is not PromptKind.PASSWORD:
            run.last_output = time.monotonic()

    async def _watch(self, run: _Run, started: float) -> None:
        request = self.request
        tick = max(0.05, min(1.0, request.inactivity_limit / 4, request.guard_limit / 4))
        stop_wait = asyncio.create_task(self._stop.wait())
        try:
            while True:
                await asyncio.wait({stop_wait}, timeout=tick)
                now = time.monotonic()
                if self._stop.is_set():
                    assert self._stop_reason is not None
                    reason = self._stop_reason
                elif now - started > request.time_limit:
                    reason = StopReason.TIMEOUT
                elif run.waiting_since is not None:
                    if now - run.waiting_since <= request.guard_limit:
                        continue
                    reason = StopReason.STEAM_GUARD_TIMEOUT
                elif now - run.last_output > request.inactivity_limit:
                    reason = StopReason.STALLED
                else:
                    continue
                self._end(run, reason)
                return
        finally:
            stop_wait.cancel()

    def _end(self, run: _Run, reason: StopReason) -> None:
        if run.stop_reason is None:
            run.stop_reason = reason
            task = asyncio.create_task(_terminate(run.process, self.request.stop_grace))
            run.prompt_tasks.add(task)  # kept referenced; never cancelled before it has signalled
            task.add_done_callback(run.prompt_tasks.discard)


async def _terminate(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM to the whole process group, SIGKILL if it is still there after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), grace)
            break
        except TimeoutError:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group (the leader is gone)


def _unavailable(message: str) -> Failure:
    return Failure(Reason.DOWNLOADER_UNAVAILABLE, message)


def _stop_message(reason: StopReason, request: RunRequest) -> str:
    if reason is StopReason.TIMEOUT:
        return f"the download took longer than its limit of {request.time_limit:g}s"
    if reason is StopReason.STALLED:
        return f"DepotDownloader made no progress for {request.inactivity_limit:g}s"
    return f"nobody answered the Steam Guard challenge within {request.guard_limit:g}s"
