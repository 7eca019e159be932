"""`jobs list|show|cancel|retry|watch`: the downloads on the server."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from wallwhale_client.aio import AsyncClient
from wallwhale_client.cli.exits import EXIT_FAILURE, EXIT_OK, UsageError
from wallwhale_client.cli.output import Output, as_dict, size_text, state_name, when
from wallwhale_client.v1 import download_pb2


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


async def run(client: AsyncClient, args: argparse.Namespace, output: Output) -> int:
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
