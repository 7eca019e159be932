"""wallwhale-cli: WallWhale at a terminal, through the Python client.

    wallwhale-cli download URL... [--out DIR]      progress bars, then a summary table
    wallwhale-cli jobs list|show|cancel|retry|watch
    wallwhale-cli keys create|list|revoke
    wallwhale-cli accounts add|list|guard-code|qr
    wallwhale-cli status
    wallwhale-cli direct URL --username U            no server: a local DepotDownloader

Where the server is and who you are: flags, else WALLWHALE_ADDRESS / WALLWHALE_API_KEY (or
WALLWHALE_EMAIL / WALLWHALE_PASSWORD), else the config file (--config, WALLWHALE_CLIENT_CONFIG, or
~/.config/wallwhale/client.toml), e.g.

    address = "wallwhale.example.com:443"
    api_key = "ww_..."
    tls = true

--json prints machine-readable output (one JSON document; NDJSON for `jobs watch`).
Exit codes: 0 success; 2 a user error (bad arguments or input, unknown id, bad credentials, missing
permission, wrong state); 1 anything else (server or network trouble, a download that failed).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as ProgressBars
from rich.table import Table
from rich.text import Text

from wallwhale_client import direct as direct_mode
from wallwhale_client._version import __version__
from wallwhale_client.aio import AsyncClient, BatchProgress, Progress, Tls
from wallwhale_client.errors import (
    AlreadyExists,
    DownloadFailed,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unimplemented,
    WallWhaleError,
)
from wallwhale_client.v1 import admin_pb2, download_pb2

EXIT_OK = 0
EXIT_FAILURE = 1  # the server, the network, or a download failed
EXIT_USAGE = 2  # the user has something to change (argparse also exits 2)
USER_ERRORS = (
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unauthenticated,
    PermissionDenied,
)
DEFAULT_ADDRESS = "127.0.0.1:50051"
CONFIG_KEYS = {"address", "api_key", "email", "password", "tls", "ca_cert", "timeout"}


class UsageError(Exception):
    """A mistake in how the command was called (exit 2)."""


def exit_code(error: BaseException) -> int:
    if isinstance(error, (UsageError, *USER_ERRORS)):
        return EXIT_USAGE
    # A job (or a direct run) that found no such item: the user's URL is wrong.
    if isinstance(error, WallWhaleError) and error.code is None and error.reason == "ITEM_NOT_FOUND":
        return EXIT_USAGE
    return EXIT_FAILURE


# -- settings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    address: str
    api_key: str | None
    email: str | None
    password: str | None
    tls: bool
    ca_cert: Path | None
    timeout: float


def _config_file(args: argparse.Namespace, environ: dict[str, str]) -> Path | None:
    if args.config:
        return Path(args.config)
    if environ.get("WALLWHALE_CLIENT_CONFIG"):
        return Path(environ["WALLWHALE_CLIENT_CONFIG"])
    default = Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "wallwhale" / "client.toml"
    return default if default.exists() else None


def load_settings(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    """Flags over environment over the config file."""
    values: dict[str, Any] = {}
    path = _config_file(args, environ)
    if path is not None:
        try:
            values = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise UsageError(f"config file {path}: {error}") from None
        if unknown := set(values) - CONFIG_KEYS:
            raise UsageError(f"config file {path}: unknown keys {sorted(unknown)}")
    for key in CONFIG_KEYS:
        if value := environ.get(f"WALLWHALE_{key.upper()}"):  # set but empty counts as unset
            values[key] = value
        if (flag := getattr(args, key, None)) is not None:
            values[key] = flag
    tls = values.get("tls", False)
    try:
        return Settings(
            address=str(values.get("address") or DEFAULT_ADDRESS),
            api_key=values.get("api_key") or None,
            email=values.get("email") or None,
            password=values.get("password") or None,
            tls=tls if isinstance(tls, bool) else str(tls).lower() in ("1", "true", "yes"),
            ca_cert=Path(values["ca_cert"]) if values.get("ca_cert") else None,
            timeout=float(values.get("timeout", 30.0)),
        )
    except ValueError as error:
        raise UsageError(f"bad setting: {error}") from None


def make_client(settings: Settings) -> AsyncClient:
    if settings.email and not settings.password:
        raise UsageError("an e-mail needs a password (--password, WALLWHALE_PASSWORD or the config file)")
    tls: Tls | bool = settings.tls
    if settings.ca_cert is not None:
        tls = Tls(root_certificates=settings.ca_cert.read_bytes())
    return AsyncClient(
        settings.address,
        api_key=None if settings.email else settings.api_key,
        email=settings.email,
        password=settings.password if settings.email else None,
        tls=tls,
        timeout=settings.timeout,
    )


# -- output ----------------------------------------------------------------------------------------


class Output:
    """Where results go: rich tables for people, JSON for scripts."""

    def __init__(self, as_json: bool, stdout: TextIO, stderr: TextIO):
        self.json = as_json
        self.out = Console(file=stdout, highlight=False, soft_wrap=True)
        self.err = Console(file=stderr, highlight=False)

    def data(self, value: Any) -> None:
        self.out.out(json.dumps(value, indent=2 if self.out.is_terminal else None))

    def line(self, text: str) -> None:
        self.out.print(text, markup=False)

    def table(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = Table(title=title, show_lines=False)
        for column in columns:
            # Ids are copied into the next command: never cut or wrapped, even on a narrow terminal.
            whole = column in ("ID", "Download")
            table.add_column(column, no_wrap=whole, min_width=26 if whole else None, overflow="fold")
        for row in rows:
            table.add_row(*(Text(str(cell)) for cell in row))  # Text: brackets in values are not markup
        self.out.print(table)


def as_dict(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping, as REST clients get it (lowerCamelCase, enums by name)."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def state_name(state: download_pb2.DownloadState.ValueType) -> str:
    return download_pb2.DownloadState.Name(state).removeprefix("DOWNLOAD_STATE_")


def size_text(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


def when(message: Message, field: str) -> str:
    return (
        getattr(message, field).ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if message.HasField(field) else ""
    )


# -- download --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    item: str
    download_id: str = ""
    state: str = ""
    path: Path | None = None
    size: int = 0
    seconds: float = 0.0
    error: WallWhaleError | None = None


class ProgressView:
    """One bar per item on a terminal; elsewhere (a log, a pipe) one line per change of state."""

    def __init__(self, output: Output):
        self.console = output.err
        self.live = not output.json and self.console.is_terminal
        self.quiet = output.json
        self.bars = ProgressBars(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[state]}"),
            TextColumn("{task.fields[amount]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.live,
        )
        self._last: dict[TaskID, str] = {}
        self._names: dict[TaskID, str] = {}

    def add(self, item: str) -> TaskID:
        task = self.bars.add_task(item, total=100, state="CREATING", amount="")
        self._names[task] = item
        return task

    def update(self, task: TaskID, update: Progress) -> None:
        download = update.download
        stage = update.state
        p = download.progress
        if update.archive_bytes:
            stage = "FETCHING" if update.fetched_bytes < update.archive_bytes else "SAVED"
            percent, done, total = (
                100 * update.fetched_bytes / update.archive_bytes,
                update.fetched_bytes,
                update.archive_bytes,
            )
        else:
            percent, done, total = p.percent, p.bytes_downloaded, p.bytes_total
        amount = f"{size_text(done)} of {size_text(total)}" if total else ""
        self.bars.update(task, completed=percent, state=stage, amount=amount)
        if not self.live and not self.quiet and self._last.get(task) != stage:
            self._last[task] = stage
            self.console.print(f"{self._names[task]} {download.id} {stage} {percent:.0f}%", markup=False)

    def fail(self, task: TaskID, error: WallWhaleError) -> None:
        self.bars.update(task, state=f"[red]{escape(error.reason or 'FAILED')}[/red]")
        if not self.live and not self.quiet:
            self.console.print(f"{self._names[task]} FAILED {error}", markup=False)


async def download_one(
    client: AsyncClient, item: str, out: Path, view: ProgressView, options: argparse.Namespace
) -> Outcome:
    task = view.add(item)
    outcome = Outcome(item)
    started = time.monotonic()

    def report(update: Progress) -> None:
        outcome.download_id, outcome.state = update.download.id, update.state
        view.update(task, update)

    try:
        outcome.path = await client.download(
            item, out, progress=report, app_id=options.app, skip_cache=options.skip_cache
        )
        outcome.size = outcome.path.stat().st_size
    except WallWhaleError as error:
        outcome.error = error
        outcome.state = (
            "FAILED" if not isinstance(error, DownloadFailed) else state_name(error.download.state)
        )
        view.fail(task, error)
    outcome.seconds = time.monotonic() - started
    return outcome


async def cmd_download(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    view = ProgressView(output)
    with view.bars:
        outcomes = await asyncio.gather(
            *(download_one(client, item, args.out, view, args) for item in args.items)
        )
    if output.json:
        output.data(
            [
                {
                    "item": o.item,
                    "downloadId": o.download_id,
                    "state": o.state,
                    "path": str(o.path.resolve()) if o.path else None,
                    "sizeBytes": o.size,
                    "seconds": round(o.seconds, 3),
                    "error": error_dict(o.error) if o.error else None,
                }
                for o in outcomes
            ]
        )
    else:
        output.table(
            "Downloads",
            ["Item", "Download", "State", "File", "Size", "Time"],
            [
                [
                    o.item,
                    o.download_id,
                    o.state if o.error is None else f"{o.state}: {o.error.reason or o.error.message}",
                    str(o.path or ""),
                    size_text(o.size) if o.path else "",
                    f"{o.seconds:.1f}s",
                ]
                for o in outcomes
            ],
        )
    codes = [exit_code(o.error) for o in outcomes if o.error is not None]
    return max(codes, default=EXIT_OK)


async def cmd_batch(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    """Several items (or a collection) in one batch, saved as one zip with a folder per item."""
    shown = {"final": -1}

    def report(progress: BatchProgress) -> None:
        if output.json or progress.final_count == shown["final"]:
            return
        shown["final"] = progress.final_count
        output.err.print(
            f"batch {progress.batch.id}: {progress.final_count} of {progress.batch.total_count} final",
            markup=False,
        )

    saved = await client.download_batch(
        args.items, args.out, progress=report, app_id=args.app, skip_cache=args.skip_cache
    )
    batch = saved.batch
    state = download_pb2.BatchState.Name(batch.state).removeprefix("BATCH_STATE_")
    if output.json:
        output.data(
            {
                "batchId": batch.id,
                "state": state,
                "path": str(saved.path.resolve()),
                "sizeBytes": saved.info.size,
                "total": batch.total_count,
                "succeeded": batch.succeeded_count,
                "failed": batch.failed_count,
                "cancelled": batch.cancelled_count,
                "missing": [str(item) for item in saved.info.missing],
            }
        )
    else:
        output.table(
            "Batch",
            ["ID", "State", "Succeeded", "Failed", "Cancelled", "File", "Size"],
            [
                [
                    batch.id,
                    state,
                    f"{batch.succeeded_count}/{batch.total_count}",
                    batch.failed_count,
                    batch.cancelled_count,
                    str(saved.path),
                    size_text(saved.info.size),
                ]
            ],
        )
    # Partly succeeded: the zip is there, but not everything asked for is in it.
    return EXIT_OK if batch.state == download_pb2.BATCH_STATE_SUCCEEDED else EXIT_FAILURE


# -- jobs ------------------------------------------------------------------------------------------


def job_row(download: download_pb2.Download) -> list[Any]:
    archive = size_text(download.archive.size_bytes) if download.HasField("archive") else ""
    reason = download.failure.reason
    failure = download_pb2.FailureReason.Name(reason).removeprefix("FAILURE_REASON_") if reason else ""
    return [
        download.id,
        download.workshop_id,
        state_name(download.state) + (f" ({failure})" if failure else ""),
        f"{download.progress.percent:.0f}%",
        when(download, "create_time"),
        archive,
    ]


JOB_COLUMNS = ["ID", "Item", "State", "Progress", "Created", "Archive"]


def parse_states(names: Sequence[str]) -> list[download_pb2.DownloadState.ValueType]:
    states = []
    for name in names:
        try:
            states.append(download_pb2.DownloadState.Value("DOWNLOAD_STATE_" + name.upper()))
        except ValueError:
            known = [n.removeprefix("DOWNLOAD_STATE_").lower() for n in download_pb2.DownloadState.keys()[1:]]
            raise UsageError(f"unknown state {name!r}; one of {', '.join(known)}") from None
    return states


async def cmd_jobs(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    if args.action == "list":
        jobs = await client.list_downloads(states=parse_states(args.state), limit=args.limit)
        if output.json:
            output.data([as_dict(job) for job in jobs])
        else:
            output.table(None, JOB_COLUMNS, [job_row(job) for job in jobs])
        return EXIT_OK
    if args.action == "watch":
        return await watch(client, args, output)
    action: Callable[[str], Awaitable[download_pb2.Download]] = {
        "show": client.get_download,
        "cancel": client.cancel_download,
        "retry": client.retry_download,
    }[args.action]
    job = await action(args.id)
    if output.json:
        output.data(as_dict(job))
    else:
        output.table(None, JOB_COLUMNS, [job_row(job)])
        if job.HasField("failure") and job.failure.message:
            output.line(f"failure: {job.failure.message}")
        if job.HasField("steam_guard"):
            output.line(f"waiting for Steam Guard on account {job.steam_guard.steam_account_id}")
    return EXIT_OK


async def watch(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    final: download_pb2.Download | None = None
    async for event in client.watch_download(args.id, after_sequence=args.after, exclude_logs=args.no_logs):
        kind = event.WhichOneof("event")
        if kind == "heartbeat":
            continue
        if kind == "finished":
            final = event.finished.download
        if output.json:
            output.out.out(json.dumps(as_dict(event)))  # NDJSON: one event a line, as it comes
            continue
        if kind == "state_changed":
            output.line(f"{event.sequence:>5} state {state_name(event.state_changed.download.state)}")
        elif kind == "progress":
            p = event.progress
            phase = download_pb2.DownloadPhase.Name(p.phase).removeprefix("DOWNLOAD_PHASE_").lower()
            output.line(f"{event.sequence:>5} {phase} {p.percent:.0f}% {size_text(p.bytes_downloaded)}")
        elif kind == "log_line":
            output.line(f"{event.sequence:>5} | {event.log_line.line}")
        elif final is not None:
            output.line(f"finished: {state_name(final.state)}")
    succeeded = final is not None and final.state == download_pb2.DOWNLOAD_STATE_SUCCEEDED
    return EXIT_OK if succeeded else EXIT_FAILURE


# -- keys and accounts -----------------------------------------------------------------------------


async def cmd_keys(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    if args.action == "create":
        limits = admin_pb2.ApiKeyLimits(
            requests_per_minute=args.requests_per_minute,
            burst=args.burst,
            daily_download_quota=args.daily_quota,
            monthly_download_quota=args.monthly_quota,
        )
        created = await client.create_api_key(args.name, args.scope, limits=limits)
        if created.repeated_request:
            # A retry met the key that the first attempt made, whose answer (with the key) was lost.
            output.err.print(
                f"the key {created.api_key.id} was made by an earlier attempt whose answer was lost; the "
                f"key itself cannot be shown again: revoke it (keys revoke {created.api_key.id}) and create "
                "another",
                markup=False,
            )
            return EXIT_FAILURE
        if output.json:
            output.data({"apiKey": as_dict(created.api_key), "plaintextKey": created.plaintext_key})
        else:
            output.line(f"created {created.api_key.id} ({created.api_key.name}); the key, shown only now:")
            output.out.out(created.plaintext_key)
        return EXIT_OK
    if args.action == "list":
        keys = await client.list_api_keys(include_revoked=args.all)
        if output.json:
            output.data([as_dict(key) for key in keys])
        else:
            rows = [
                [
                    key.id,
                    key.name,
                    key.prefix,
                    " ".join(key.scopes),
                    "revoked" if key.HasField("revoke_time") else ("disabled" if key.disabled else "active"),
                    when(key, "last_used_time"),
                ]
                for key in keys
            ]
            output.table(None, ["ID", "Name", "Prefix", "Scopes", "State", "Last used"], rows)
        return EXIT_OK
    revoked = await client.revoke_api_key(args.id)
    if output.json:
        output.data(as_dict(revoked))
    else:
        output.line(f"revoked {revoked.id} ({revoked.name})")
    return EXIT_OK


def account_status(account: admin_pb2.SteamAccount) -> str:
    status = admin_pb2.SteamAccountStatus.Name(account.status).removeprefix("STEAM_ACCOUNT_STATUS_")
    return f"{status} ({account.status_reason})" if account.status_reason else status


def read_password(args: argparse.Namespace, stdin: TextIO) -> str:
    if args.password_stdin:
        return stdin.readline().rstrip("\r\n")
    if stdin.isatty():
        return getpass.getpass(f"Steam password for {args.username} (empty for QR login only): ")
    return ""


async def cmd_accounts(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    if args.action == "add":
        account = await client.create_steam_account(
            args.username, read_password(args, sys.stdin), owned_app_ids=args.app
        )
        if output.json:
            output.data(as_dict(account))
        else:
            output.line(f"added {account.id} ({account.username})")
        return EXIT_OK
    if args.action == "list":
        accounts = await client.list_steam_accounts()
        if output.json:
            output.data([as_dict(account) for account in accounts])
        else:
            rows = [
                [
                    a.id,
                    a.username,
                    account_status(a),
                    "yes" if a.has_remembered_login else "no",
                    a.downloads_run,
                ]
                for a in accounts
            ]
            output.table(None, ["ID", "Username", "Status", "Remembered login", "Downloads"], rows)
        return EXIT_OK
    if args.action == "guard-code":
        account = await client.submit_steam_guard_code(args.id, args.code)
        if output.json:
            output.data(as_dict(account))
        else:
            output.line(f"{account.username}: {account_status(account)}")
        return EXIT_OK
    return await qr_login(client, args, output)


def qr_lines(rows: Sequence[str], border: int = 2) -> list[str]:
    """A QR code ('#' dark) for a dark terminal: light modules are drawn, dark ones left blank; two
    characters per module keep it square, and a light border lets phones find it."""
    light, dark = "██", "  "
    width = len(rows[0]) if rows else 0
    edge = [light * (width + 2 * border)] * border
    side = light * border
    return [*edge, *(side + "".join(dark if c == "#" else light for c in row) + side for row in rows), *edge]


async def qr_login(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    try:
        async for event in client.start_qr_login(args.id):
            kind = event.WhichOneof("event")
            if output.json and kind != "heartbeat":
                output.out.out(json.dumps(as_dict(event)))
            elif kind == "qr_code":
                output.line("Scan with the Steam app:\n" + "\n".join(qr_lines(event.qr_code.rows)))
            elif kind == "succeeded":
                output.line(f"logged in: {event.succeeded.username}")
            elif kind == "failed":
                output.line(f"QR login failed: {event.failed}")
                return EXIT_FAILURE
    except Unimplemented as error:
        raise WallWhaleError(
            "this server does not offer QR login yet; add the account with a password and answer "
            "Steam Guard with `accounts guard-code`",
            code=error.code,
            reason=error.reason,
            request_id=error.request_id,
        ) from None
    return EXIT_OK


async def cmd_status(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
    status = await client.get_status()
    if output.json:
        output.data(as_dict(status))
        return EXIT_OK
    database = "ok" if status.database.ok else f"failing: {status.database.error}"
    downloader = (
        status.downloader.version if status.downloader.available else f"missing: {status.downloader.error}"
    )
    q = status.queue
    rows = [
        ["Server", f"{status.version} ({status.instance_id}), up {timedelta(seconds=status.uptime.seconds)}"],
        ["Database", f"{status.database.backend} {database}"],
        ["DepotDownloader", downloader],
        [
            "Storage",
            f"{size_text(status.storage.free_bytes)} free, "
            f"archives {size_text(status.storage.archive_bytes)}",
        ],
        [
            "Queue",
            f"{q.queued} queued, {q.running} running, {q.waiting_for_steam_guard} waiting for Steam Guard",
        ],
        ["This instance", f"{q.running_here} of {q.concurrency_limit} running"],
        ["Steam accounts", f"{status.active_steam_accounts} active"],
    ]
    output.table(f"WallWhale at {client.address}", ["", ""], rows)
    return EXIT_OK


# -- direct mode -----------------------------------------------------------------------------------


class DirectScreen:
    """Direct mode's one item: a bar on a terminal, a line per phase elsewhere, nothing with --json."""

    def __init__(self, view: ProgressView, item: str):
        self.view = view
        self.task = view.bars.add_task(item, total=100, state="STARTING", amount="")
        self.item = item
        self.last = ""

    def phase(self, name: str, percent: float) -> None:
        self.view.bars.update(self.task, completed=percent, state=name)
        if not self.view.live and not self.view.quiet and name != self.last:
            self.view.console.print(f"{self.item} {name} {percent:.0f}%", markup=False)
        self.last = name

    def say(self, text: str) -> None:
        if not self.view.quiet:
            self.view.console.print(text, markup=False)


async def cmd_direct(args: argparse.Namespace, output: Output) -> int:
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else None
    view = ProgressView(output)
    try:
        with view.bars:
            result = await direct_mode.download_direct(args, password, DirectScreen(view, args.item))
    except ValueError as error:
        raise UsageError(str(error)) from None
    if output.json:
        output.data(result)
    else:
        output.table(
            "Downloaded",
            ["Item", "Directory", "Files", "Size", "Time"],
            [
                [
                    result["workshopId"],
                    result["directory"],
                    result["files"],
                    size_text(result["bytes"]),
                    f"{result['seconds']:.1f}s",
                ]
            ],
        )
    return EXIT_OK


# -- the parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wallwhale-cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--address", help=f"host:port of the server or Envoy (default {DEFAULT_ADDRESS})")
    parser.add_argument("--api-key", dest="api_key", help="an API key (ww_...)")
    parser.add_argument("--email", help="log in as this person (with --password or WALLWHALE_PASSWORD)")
    parser.add_argument("--password", help=argparse.SUPPRESS)  # visible in `ps`: prefer the environment
    parser.add_argument("--tls", action="store_true", default=None, help="connect with TLS")
    parser.add_argument("--ca-cert", dest="ca_cert", help="PEM file of the CA to trust (implies --tls)")
    parser.add_argument("--timeout", type=float, help="seconds for each call (default 30)")
    parser.add_argument("--config", help="TOML file with address, api_key, tls, ... (see above)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    download = commands.add_parser("download", help="download Workshop items into a directory")
    download.add_argument("items", nargs="+", metavar="URL", help="Workshop URL or id")
    download.add_argument("--out", type=Path, default=Path("."), help="directory for the zips (default .)")
    download.add_argument("--app", type=int, help="the items' Steam app id (default: asked from Steam)")
    download.add_argument("--skip-cache", action="store_true", help="download again even if cached")

    batch = commands.add_parser(
        "batch", help="several items or a Workshop collection into one zip (a folder per item)"
    )
    batch.add_argument("items", nargs="+", metavar="URL", help="Workshop URL or id (collections expand)")
    batch.add_argument("--out", type=Path, default=Path("."), help="directory for the zip (default .)")
    batch.add_argument("--app", type=int, help="the items' Steam app id (default: asked from Steam)")
    batch.add_argument("--skip-cache", action="store_true", help="download again even if cached")

    jobs = commands.add_parser("jobs", help="downloads on the server").add_subparsers(
        dest="action", required=True
    )
    listing = jobs.add_parser("list", help="newest first")
    listing.add_argument("--state", action="append", default=[], help="only this state (repeatable)")
    listing.add_argument("--limit", type=int, default=50)
    for name, text in (("show", "one download"), ("cancel", "stop it"), ("retry", "queue it again")):
        jobs.add_parser(name, help=text).add_argument("id")
    watching = jobs.add_parser("watch", help="follow its events until it is final")
    watching.add_argument("id")
    watching.add_argument("--after", type=int, default=0, help="only events after this sequence number")
    watching.add_argument("--no-logs", action="store_true", help="leave out DepotDownloader's lines")

    keys = commands.add_parser("keys", help="API keys (admin)").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="the key is shown once")
    create.add_argument("name")
    create.add_argument("--scope", action="append", required=True, help="e.g. download:* (repeatable)")
    create.add_argument("--requests-per-minute", type=int)
    create.add_argument("--burst", type=int)
    create.add_argument("--daily-quota", type=int)
    create.add_argument("--monthly-quota", type=int)
    keys.add_parser("list").add_argument("--all", action="store_true", help="with revoked keys")
    keys.add_parser("revoke").add_argument("id")

    accounts = commands.add_parser("accounts", help="Steam accounts (admin)")
    account_actions = accounts.add_subparsers(dest="action", required=True)
    add = account_actions.add_parser("add", help="the password is asked for (or read with --password-stdin)")
    add.add_argument("username")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--app", type=int, action="append", default=[], help="an app the account owns")
    account_actions.add_parser("list")
    guard = account_actions.add_parser("guard-code", help="answer a Steam Guard prompt")
    guard.add_argument("id")
    guard.add_argument("code")
    account_actions.add_parser("qr", help="log in by QR code, drawn here").add_argument("id")

    commands.add_parser("status", help="the server and its dependencies")

    direct = commands.add_parser(
        "direct",
        help="one item with a local DepotDownloader, no server",
        description=direct_mode.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    direct.add_argument("item", metavar="URL", help="Workshop URL or id")
    direct.add_argument("--depotdownloader", default="DepotDownloader", help="its path (default: on PATH)")
    direct.add_argument("--username", required=True, help="the Steam account to log in with")
    direct.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    direct.add_argument("--out", type=Path, default=Path("."), help="files go to OUT/<workshop id>/")
    direct.add_argument("--app", type=int, default=direct_mode.WALLPAPER_ENGINE, help="the item's app id")
    direct.add_argument("--home", type=Path, help="DepotDownloader's HOME (keeps the remembered login)")
    direct.add_argument("--time-limit", type=float, default=3600.0, help="seconds (default 3600)")
    direct.add_argument("-v", "--verbose", action="store_true", help="show DepotDownloader's output")
    return parser


COMMANDS: dict[str, Callable[[AsyncClient, argparse.Namespace, Output], Awaitable[int]]] = {
    "download": cmd_download,
    "batch": cmd_batch,
    "jobs": cmd_jobs,
    "keys": cmd_keys,
    "accounts": cmd_accounts,
    "status": cmd_status,
}


def error_dict(error: WallWhaleError) -> dict[str, Any]:
    return {
        "code": error.code.name if error.code is not None else None,
        "reason": error.reason,
        "message": error.message,
        "requestId": error.request_id or None,
    }


async def run(args: argparse.Namespace, output: Output) -> int:
    if args.command == "direct":
        return await cmd_direct(args, output)
    async with make_client(load_settings(args, dict(os.environ))) as client:
        return await COMMANDS[args.command](client, args, output)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = Output(args.json, sys.stdout, sys.stderr)
    try:
        return asyncio.run(run(args, output))
    except (UsageError, WallWhaleError) as error:
        if output.json:
            output.data(
                {"error": error_dict(error) if isinstance(error, WallWhaleError) else {"message": str(error)}}
            )
        request = (
            f" (request id {error.request_id})"
            if isinstance(error, WallWhaleError) and error.request_id
            else ""
        )
        output.err.print(f"[red]error:[/red] {escape(str(error))}{request}")
        return exit_code(error)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
